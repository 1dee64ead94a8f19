"""ledger_book_open(team): Book.open's locking read and lots read in one round trip (PostgreSQL).

Two statements are still needed, because the lots must be read with a snapshot taken after the
team's lock is granted (a join in the locking statement would read them as of before the wait).
A VOLATILE PL/pgSQL function takes a fresh snapshot for each statement it runs (READ COMMITTED),
so calling it costs one round trip and keeps that order. One row per live lot, each carrying the
balance row's columns; one row with NULL lot columns when there is no live lot; no row when the
team has no balance row yet (Book.open creates it). On SQLite Book.open runs the two statements.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION ledger_book_open(p_team bigint)
RETURNS TABLE (
    balance_nano bigint, overdraft_nano bigint, version bigint, low_threshold_nano bigint,
    has_budgets boolean, recharge_threshold_nano bigint,
    lot_id bigint, source varchar, amount_nano bigint, remaining_nano bigint,
    priority smallint, expires_at timestamptz, created_at timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    b record;
BEGIN
    SELECT t.balance_nano, t.overdraft_nano, t.version, t.low_threshold_nano, t.has_budgets,
           t.recharge_threshold_nano
      INTO b FROM ledger_teambalance AS t WHERE t.team_id = p_team FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- a second statement: its snapshot is taken now, after the lock was granted
    RETURN QUERY
        SELECT b.balance_nano, b.overdraft_nano, b.version, b.low_threshold_nano,
               b.has_budgets, b.recharge_threshold_nano, l.id, l.source, l.amount_nano,
               l.remaining_nano, l.priority, l.expires_at, l.created_at
          FROM (SELECT 1) AS one
          LEFT JOIN ledger_creditlot AS l ON l.team_id = p_team AND l.remaining_nano > 0;
END
$$;
"""
DROP = "DROP FUNCTION IF EXISTS ledger_book_open(bigint);"


def _run(sql: str):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("ledger", "0006_ledger_hash_chain")]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
