"""Database-level guards shared by the apps: append-only tables.

Used from migrations: ``AppendOnly("ledger_ledgerentry")`` installs triggers that make
UPDATE and DELETE fail on PostgreSQL (as IntegrityError, via ERRCODE restrict_violation) and
on SQLite (RAISE(ABORT)). PostgreSQL's TRUNCATE (used by test flushes) is not a row event.

``AppendOnly(table, fill_once=["chain_hash"])`` allows exactly one kind of UPDATE: setting
those columns from NULL to a value while every other column keeps its value (the ledger's hash
chain is filled in after the insert, off the hot path). On PostgreSQL the other columns are
compared as a whole row (``to_jsonb(NEW) - 'chain_hash'``), so a column added later is covered;
on SQLite they are listed, so a migration adding a column to such a table runs the operation
again (tests/ledger/test_append_only.py tries every column on both backends).
"""

from __future__ import annotations

from django.db import migrations


def _pg_sql(table: str, fill_once: tuple[str, ...] = ()) -> list[str]:
    fn = f"{table}_append_only"
    allow = ""
    if fill_once:
        filled = " AND ".join(f"OLD.{c} IS NULL AND NEW.{c} IS NOT NULL" for c in fill_once)
        others = "".join(f" - '{c}'" for c in fill_once)
        allow = f"""
            IF TG_OP = 'UPDATE' AND {filled}
               AND (to_jsonb(NEW){others}) = (to_jsonb(OLD){others}) THEN
                RETURN NEW;
            END IF;"""
    return [
        f"""
        CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger AS $$
        BEGIN{allow}
            RAISE EXCEPTION '% on {table} is not allowed: the table is append-only', TG_OP
                USING ERRCODE = 'restrict_violation';
        END;
        $$ LANGUAGE plpgsql;
        """,
        f"DROP TRIGGER IF EXISTS {fn}_trg ON {table};",
        f"""
        CREATE TRIGGER {fn}_trg BEFORE UPDATE OR DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION {fn}();
        """,
    ]


def _sqlite_sql(
    table: str, fill_once: tuple[str, ...] = (), columns: tuple[str, ...] | list[str] = ()
) -> list[str]:
    when = ""
    if fill_once:
        kept = [f'NEW."{c}" IS OLD."{c}"' for c in columns if c not in fill_once]
        filled = [f'OLD."{c}" IS NULL AND NEW."{c}" IS NOT NULL' for c in fill_once]
        when = f" WHEN NOT ({' AND '.join(filled + kept)})"
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update;",
        f"""
        CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}{when}
        BEGIN SELECT RAISE(ABORT, 'UPDATE on {table} is not allowed: the table is append-only');
        END;
        """,
        f"DROP TRIGGER IF EXISTS {table}_no_delete;",
        f"""
        CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, 'DELETE on {table} is not allowed: the table is append-only');
        END;
        """,
    ]


def _drop_sql(vendor: str, table: str) -> list[str]:
    if vendor == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_append_only_trg ON {table};",
            f"DROP FUNCTION IF EXISTS {table}_append_only();",
        ]
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update;",
        f"DROP TRIGGER IF EXISTS {table}_no_delete;",
    ]


class AppendOnly(migrations.RunPython):
    """A migration operation installing the append-only triggers for one table.

    With `fill_once`, those columns may be set once, from NULL, and nothing else changed.
    `replaces` (the fill_once the table had before, `()` for plain append-only) is what
    unapplying the operation puts back instead of removing the triggers.
    """

    def __init__(
        self,
        table: str,
        fill_once: list[str] | tuple[str, ...] = (),
        replaces: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        self.table = table
        self.fill_once = tuple(fill_once)
        self.replaces = None if replaces is None else tuple(replaces)
        super().__init__(self._install, self._remove)

    def _run(self, schema_editor, statements: list[str]) -> None:
        for statement in statements:
            schema_editor.execute(statement, params=None)

    def _apply(self, schema_editor, fill_once: tuple[str, ...]) -> None:
        connection = schema_editor.connection
        if connection.vendor == "postgresql":
            self._run(schema_editor, _pg_sql(self.table, fill_once))
        elif connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                description = connection.introspection.get_table_description(cursor, self.table)
            columns = [column.name for column in description]
            self._run(schema_editor, _sqlite_sql(self.table, fill_once, columns))

    def _install(self, apps, schema_editor) -> None:
        self._apply(schema_editor, self.fill_once)

    def _remove(self, apps, schema_editor) -> None:
        if self.replaces is not None:
            self._apply(schema_editor, self.replaces)
        else:
            self._run(schema_editor, _drop_sql(schema_editor.connection.vendor, self.table))

    def deconstruct(self):
        kwargs = {}
        if self.fill_once:
            kwargs["fill_once"] = list(self.fill_once)
        if self.replaces is not None:
            kwargs["replaces"] = list(self.replaces)
        return (self.__class__.__qualname__, [self.table], kwargs)
