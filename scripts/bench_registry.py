#!/usr/bin/env python3
"""Fill a stopped tenantd data directory's registry with extra tenants for
the HTTP benchmark (bulk SQL is far faster than 100,000 admin calls).

Usage: bench_registry.py DB_FILE COUNT

Adds COUNT active tenants named bulk-000000... each with one API key row
(a random hash: the keys are never presented, they only occupy the cache as
real keys would).
"""
import os
import sqlite3
import sys


def main():
    db, count = sys.argv[1], int(sys.argv[2])
    now = "2026-01-01T00:00:00.000000Z"
    con = sqlite3.connect(db)
    with con:
        con.executemany(
            "INSERT INTO tenants (id, name, plan, status, source, spec, created_at, updated_at) "
            "VALUES (?, ?, 'free', 'active', 'api', '{}', ?, ?)",
            ((f"bulk-{i:06d}", f"Bulk tenant {i}", now, now) for i in range(count)),
        )
        con.executemany(
            "INSERT INTO api_keys (tenant_id, id, name, prefix, hash, scopes, created_at) "
            "VALUES (?, ?, 'default', ?, ?, '[]', ?)",
            ((f"bulk-{i:06d}", f"key_bulk{i:06d}", f"bulk-{i:06d}_sk_xxxxxx…", os.urandom(32), now)
             for i in range(count)),
        )
    con.close()


if __name__ == "__main__":
    main()
