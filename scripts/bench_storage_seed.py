#!/usr/bin/env python3
"""Bulk-load records for the storage benchmark (scripts/bench-storage.sh):
far faster than a million API calls, and written exactly as tenantd writes
them (the same columns, ULID ids; PostgreSQL computes the search vector
and tenant_stats itself).

Usage:
  bench_storage_seed.py postgres SUPERUSER_DB_URL TENANTS PER_TENANT IDS_OUT

(SQLite is loaded by the bench_seed_sqlite example: Python's SQLite lacks
the FTS5 options the schema uses.)

Tenants are t00000.. ; IDS_OUT gets "<tenant> <record id>" for every
tenant (the id a GET benchmark reads). The schema must exist (start the
server on the store once first).
"""
import json
import os
import random
import subprocess
import sys
import time

WORDS = ["payments", "billing", "search", "gateway", "ledger", "auth", "inventory",
         "shipping", "catalog", "checkout", "pricing", "orders", "invoices", "refunds",
         "fraud", "identity", "profile", "reports", "metrics", "alerts"]
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
NOW = "2026-01-01T00:00:00.000000Z"


def ulid(n):
    """A valid, unique, sortable ULID text for counter n."""
    t = 1_767_225_600_000 + n  # ms
    rnd = int.from_bytes(os.urandom(10), "big")
    value = (t << 80) | rnd
    return "".join(CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


def rows(tenants, per_tenant):
    rng = random.Random(7)
    n = 0
    for t in range(tenants):
        tenant = f"t{t:05d}"
        for i in range(per_tenant):
            n += 1
            word = WORDS[rng.randrange(len(WORDS))]
            other = WORDS[rng.randrange(len(WORDS))]
            name = f"{word}-service-{i}"
            url = f"https://git.example.test/{tenant}/{word}-{i}"
            desc = f"The {word} service number {i}, talks to {other}"
            tags = json.dumps([word, "prod" if i % 2 else "staging"])
            fields = json.dumps({"lang": "rust", "owner": f"team-{i % 17}"}, separators=(",", ":"))
            size = len(name) + len(url) + len(desc) + len(tags) + len(fields) + len("service")
            yield (tenant, "rec_" + ulid(n), "service", name, url, desc, tags, fields, size)


def seed_postgres(url, tenants, per_tenant, out):
    # COPY through psql: the superuser bypasses row-level security, the
    # triggers keep tenant_stats, the generated column the search vector.
    first = {}
    proc = subprocess.Popen(
        ["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c",
         "COPY records (tenant_id, id, kind, name, url, description, tags, fields, size_bytes, "
         "created_at, updated_at) FROM STDIN"],
        stdin=subprocess.PIPE, text=True)

    def esc(v):
        return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    for r in rows(tenants, per_tenant):
        first.setdefault(r[0], r[1])
        proc.stdin.write("\t".join(esc(v) for v in (*r, NOW, NOW)) + "\n")
    proc.stdin.close()
    if proc.wait() != 0:
        sys.exit("COPY failed")
    subprocess.run(["psql", url, "-q", "-c", "ANALYZE records"], check=True)
    write_ids(out, first)


def write_ids(out, first):
    with open(out, "w") as f:
        for tenant, rid in first.items():
            f.write(f"{tenant} {rid}\n")


def main():
    kind, target, tenants, per_tenant, out = sys.argv[1:6]
    t0 = time.time()
    if kind != "postgres":
        sys.exit("only postgres (SQLite: the bench_seed_sqlite example)")
    seed_postgres(target, int(tenants), int(per_tenant), out)
    print(f"seeded {int(tenants) * int(per_tenant)} records over {tenants} tenants "
          f"({kind}) in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
