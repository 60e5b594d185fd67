#!/usr/bin/env python3
"""Seed a running tenantd with records for the HTTP benchmark.

Usage: bench_seed.py BASE_URL TENANTS RECORDS_PER_TENANT OUT_IDS_FILE

Creates RECORDS_PER_TENANT records in each tenant (comma-separated list),
over keep-alive connections from a few threads, and writes one line per
tenant to OUT_IDS_FILE: "<tenant> <id of its 500th record>".
"""
import http.client
import json
import sys
import threading
from urllib.parse import urlparse

WORDS = ["payments", "billing", "search", "gateway", "ledger", "auth", "inventory", "shipping"]


def seed_tenant(host, port, tenant, count, out):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    picked = None
    for i in range(count):
        word = WORDS[i % len(WORDS)]
        body = json.dumps({
            "name": f"{word}-service-{i}",
            "kind": "service",
            "url": f"https://git.example.test/{tenant}/{word}-{i}",
            "description": f"The {word} service number {i}, owned by team {i % 17}",
            "tags": [word, "prod" if i % 2 else "staging"],
            "fields": {"lang": "rust", "owner": f"team-{i % 17}", "replicas": i % 5},
        })
        conn.request("POST", "/records", body=body,
                     headers={"Content-Type": "application/json", "X-Tenant-ID": tenant})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 201:
            raise SystemExit(f"seeding {tenant}: HTTP {resp.status}: {data[:200]!r}")
        if i == count // 2:
            picked = json.loads(data)["id"]
    out[tenant] = picked


def main():
    base, tenants, per_tenant, out_file = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
    url = urlparse(base)
    out = {}
    threads = [threading.Thread(target=seed_tenant, args=(url.hostname, url.port, t, per_tenant, out))
               for t in tenants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = [t for t in tenants if t not in out]
    if missing:
        raise SystemExit(f"seeding failed for {missing}")
    with open(out_file, "w") as f:
        for t in tenants:
            f.write(f"{t} {out[t]}\n")


if __name__ == "__main__":
    main()
