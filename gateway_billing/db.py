"""Database-level guards shared by the apps: append-only tables.

Used from migrations: ``AppendOnly("ledger_ledgerentry")`` installs triggers that make
UPDATE and DELETE fail on PostgreSQL (as IntegrityError, via ERRCODE restrict_violation) and
on SQLite (RAISE(ABORT)). PostgreSQL's TRUNCATE (used by test flushes) is not a row event.
"""

from __future__ import annotations

from django.db import migrations


def _pg_sql(table: str) -> list[str]:
    fn = f"{table}_append_only"
    return [
        f"""
        CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger AS $$
        BEGIN
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


def _sqlite_sql(table: str) -> list[str]:
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update;",
        f"""
        CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
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
    """A migration operation installing the append-only triggers for one table."""

    def __init__(self, table: str) -> None:
        self.table = table
        super().__init__(self._install, self._remove)

    def _run(self, schema_editor, statements: list[str]) -> None:
        for statement in statements:
            schema_editor.execute(statement, params=None)

    def _install(self, apps, schema_editor) -> None:
        vendor = schema_editor.connection.vendor
        if vendor == "postgresql":
            self._run(schema_editor, _pg_sql(self.table))
        elif vendor == "sqlite":
            self._run(schema_editor, _sqlite_sql(self.table))

    def _remove(self, apps, schema_editor) -> None:
        self._run(schema_editor, _drop_sql(schema_editor.connection.vendor, self.table))

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.table], {})
