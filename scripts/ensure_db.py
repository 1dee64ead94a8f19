"""Create the PostgreSQL role and database the app and its tests use, if the admin URL lets
us in (trust auth on 127.0.0.1 here). Elsewhere, create them by hand and pass PG_URL."""

import argparse
import sys
from urllib.parse import urlparse

import psycopg
from psycopg import sql


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    target = urlparse(args.url)
    role, password, dbname = target.username, target.password or "", target.path.lstrip("/")
    try:
        conn = psycopg.connect(args.admin_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        print(f"ensure_db: cannot connect as admin ({exc}); assuming {role}@{dbname} exists")
        return 0
    with conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            print(f"ensure_db: created role {role}")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(role)
                )
            )
            print(f"ensure_db: created database {dbname}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
