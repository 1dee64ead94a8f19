"""Bulk row writing for the ingest hot path.

On PostgreSQL all rows travel as one JSON text parameter (an array of positional arrays,
dumped by orjson) and ``INSERT ... SELECT (r->>0)::type, ... FROM jsonb_array_elements(...)``
writes every row in one statement. Measured for 1,000 usage-event rows (31 columns): about
31 ms (24 ms in PostgreSQL, 7 ms here) against 55 ms for one binary array per column (psycopg
dumps array elements in Python: 31 ms here) and 145 ms for ``json`` instead of ``jsonb``
(``->>`` on ``json`` parses the element again for every column). Arrays were themselves 3x
faster than a multi-row VALUES list and 10x faster than ``bulk_create``. Decimals travel as
strings and datetimes as RFC 3339 text, so nothing is rounded on the way. Elsewhere (SQLite, the
embedded default) rows are written one statement each. Values are plain Python (JSON columns
already dumped to text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from django.db import connection
from django.db.models import Model


def _json_default(value: Any) -> str:
    return str(value)  # Decimal: its exact text (orjson knows ints, strings, datetimes)


class BulkInsert:
    def __init__(
        self,
        model: type[Model],
        columns: Sequence[str],
        *,
        conflict: Sequence[str] | None = None,
        returning: Sequence[str] = (),
    ) -> None:
        meta = model._meta
        by_attname = {f.attname: f for f in meta.concrete_fields}
        fields = [by_attname[c] for c in columns]
        self._fields = fields
        self.table = meta.db_table
        self.columns = [f.column for f in fields]
        self.returning = list(returning)
        self._conflict = (
            f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING" if conflict is not None else ""
        )
        self._returning = f" RETURNING {', '.join(returning)}" if returning else ""
        self._pg_types = [self._cast_type(f) for f in fields]
        self._json = [f.get_internal_type() == "JSONField" for f in fields]
        marks = ", ".join("%s::jsonb" if is_json else "%s" for is_json in self._json)
        self._pg_row_sql = (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES ({marks})"  # noqa: S608
            f"{self._conflict}{self._returning}"
        )

    @staticmethod
    def _cast_type(field: Any) -> str:
        if field.get_internal_type() == "JSONField":
            return "jsonb"  # the element is the JSON document's text
        db_type = field.rel_db_type(connection) if field.is_relation else field.db_type(connection)
        db_type = db_type.split(" CHECK")[0]
        # text, not varchar(n): an explicit cast would truncate; the column's own assignment
        # cast refuses a value that is too long.
        return "text" if db_type.startswith("varchar") else db_type

    def _pg_sql(self) -> str:
        # A JSON column's document is embedded as JSON (not as a string): r->i is already jsonb.
        selects = ", ".join(
            f"(r->{i})" if t == "jsonb" else f"(r->>{i})::{t}" for i, t in enumerate(self._pg_types)
        )
        return (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) "  # noqa: S608 - names from _meta
            f"SELECT {selects} FROM jsonb_array_elements(%s::jsonb) AS r"
            f"{self._conflict}{self._returning}"
        )

    def _prepare_row(self, row: Sequence[Any]) -> list[Any]:
        """Values as the ORM would write them (SQLite: naive UTC datetimes, decimal text)."""
        return [
            value if is_json or value is None else field.get_db_prep_value(value, connection)
            for value, field, is_json in zip(row, self._fields, self._json, strict=True)
        ]

    def _row_sql(self) -> str:
        marks = ", ".join(["%s"] * len(self.columns))
        return (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES ({marks})"  # noqa: S608
            f"{self._conflict}{self._returning}"
        )

    def pg_statement(self, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
        """The PostgreSQL statement and its parameters, to run or embed in a larger statement.
        One row travels as plain values; more rows as one JSON text of positional arrays."""
        if len(rows) == 1:
            return self._pg_row_sql, list(rows[0])
        json_at = [i for i, is_json in enumerate(self._json) if is_json]
        if json_at:  # JSON columns hold dumped text: embed it as JSON, not as a string
            rows = [list(row) for row in rows]
            for row in rows:
                for i in json_at:
                    if row[i] is not None:
                        row[i] = orjson.Fragment(row[i])
        return self._pg_sql(), [orjson.dumps(rows, default=_json_default).decode()]

    def __call__(self, rows: Sequence[Sequence[Any]]) -> list[tuple]:
        """Insert `rows` (tuples in column order); returns the RETURNING rows of inserted ones."""
        if not rows:
            return []
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                sql, params = self.pg_statement(rows)
                cursor.execute(sql, params)
                return cursor.fetchall() if self.returning else []
            out: list[tuple] = []
            sql = self._row_sql()
            for row in rows:
                cursor.execute(sql, self._prepare_row(row))
                if self.returning:
                    out.extend(cursor.fetchall())
            return out
