#!/usr/bin/env bash
# Storage benchmark (run as `scripts/bench-http.sh --backend postgres`):
#
# 1. PostgreSQL with row-level security vs the same queries with RLS
#    disabled: GET /records/{id} and POST /records/search, random tenant and
#    word per request, in alternating rounds on one server (RLS is switched
#    with ALTER TABLE between runs; the tenant filter in our SQL stays, so
#    the difference is the policy itself). Target: >= 0.95x.
# 2. Search latency with TENANTS x PER_TENANT records (default 10,000 x 100
#    = 1,000,000) on both backends, p50/p99 under CONNECTIONS concurrent
#    clients. Target: p99 <= 20 ms.
#
# Records are bulk-loaded (scripts/bench_storage_seed.py), then served by
# the release binary. PostgreSQL runs as in production: owner role for
# migrations, app role bound by RLS, admin role with BYPASSRLS.
#
# Env: TENANTS (10000), PER_TENANT (100), DURATION (10), WARMUP (2),
#      THREADS (2), CONNECTIONS (16), ROUNDS (3), PORT (18082),
#      TENANTD_BENCH_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres),
#      BACKENDS (both | sqlite | postgres: which backends to load and measure;
#      the RLS ratios need postgres), KEEP (1 keeps the temp dir and the
#      database), CARGO_TARGET_DIR (where the release builds are).
set -euo pipefail
cd "$(dirname "$0")/.."

TENANTS=${TENANTS:-10000}
PER_TENANT=${PER_TENANT:-100}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-16}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18082}
BASE="http://127.0.0.1:${PORT}"
BACKENDS=${BACKENDS:-both}
case "$BACKENDS" in both|sqlite|postgres) ;; *) echo "BACKENDS: both, sqlite or postgres" >&2; exit 2 ;; esac
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/tenantd
PG=${TENANTD_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}

source scripts/bench-lib.sh
bench_setup tenantd-storage
cargo build --release -p tenantd --example bench_seed_sqlite --quiet

on() { [[ "$BACKENDS" == both || "$BACKENDS" == "$1" ]]; }
DB="tenantd_bench_$$"
pg_for() { python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p._replace(netloc=sys.argv[2]+"@"+p.hostname+(":"+str(p.port) if p.port else ""), path="/"+sys.argv[3]).geturl())' "$PG" "$1" "$2"; }
SUPER_DB=$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p._replace(path="/"+sys.argv[2]).geturl())' "$PG" "$DB")
if on postgres; then
  for role in "tenantd_bench_owner NOBYPASSRLS" "tenantd_bench_app NOBYPASSRLS" "tenantd_bench_admin BYPASSRLS"; do
    set -- $role
    psql "$PG" -qc "CREATE ROLE $1 LOGIN NOSUPERUSER $2" 2>/dev/null || true
  done
  psql "$PG" -qc "CREATE DATABASE $DB OWNER tenantd_bench_owner"
fi
drop_db() { if on postgres && [[ "${KEEP:-0}" != "1" ]]; then psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true; fi; }
trap 'bench_cleanup; drop_db' EXIT
PG_ENV=(TENANTD_STORAGE_BACKEND=postgres
        "TENANTD_STORAGE_URL=$(pg_for tenantd_bench_app "$DB")"
        "TENANTD_STORAGE_ADMIN_URL=$(pg_for tenantd_bench_admin "$DB")"
        "TENANTD_STORAGE_MIGRATE_URL=$(pg_for tenantd_bench_owner "$DB")")
COMMON=(TENANTD_TENANT_ENABLED=true TENANTD_LOG__LEVEL=warn TENANTD_JOBS__WORKERS=0)

echo "== migrating the stores ($BACKENDS)"
if on postgres; then launch "$DATA/pg" "${COMMON[@]}" "${PG_ENV[@]}"; stop_server; fi
if on sqlite; then launch "$DATA/sqlite" "${COMMON[@]}"; stop_server; fi
echo "== loading $((TENANTS * PER_TENANT)) records over $TENANTS tenants into each"
if on postgres; then
  python3 scripts/bench_storage_seed.py postgres "$SUPER_DB" "$TENANTS" "$PER_TENANT" "$WORK/ids.txt"
fi
if on sqlite; then
  "$TARGET/release/examples/bench_seed_sqlite" "$DATA/sqlite/tenantd.db" "$TENANTS" "$PER_TENANT" "$WORK/ids_sqlite.txt"
fi

cat > "$WORK/get.lua" <<LUA
local ids, n = {}, 0
function init(args)
  local f = io.open(os.getenv("IDS"))
  for line in f:lines() do
    local t, id = line:match("(%S+) (%S+)")
    n = n + 1; ids[n] = {t, id}
  end
  f:close()
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  local pick = ids[math.random(n)]
  return wrk.format("GET", "/records/" .. pick[2], {["X-Tenant-ID"] = pick[1]})
end
LUA
cat > "$WORK/search.lua" <<LUA
local words = {"payments", "billing", "search", "gateway", "ledger", "auth", "inventory", "shipping", "catalog", "checkout"}
function init(args) math.randomseed(os.time() + math.floor(os.clock() * 1e6)) end
function request()
  local t = string.format("t%05d", math.random(0, $TENANTS - 1))
  local w = words[math.random(#words)]
  return wrk.format("POST", "/records/search",
    {["X-Tenant-ID"] = t, ["Content-Type"] = "application/json"},
    '{"query":"' .. w .. ' service","limit":10}')
end
LUA

rls() { # on|off
  local verb; [[ $1 == on ]] && verb=ENABLE || verb=DISABLE
  psql "$SUPER_DB" -qc "ALTER TABLE records $verb ROW LEVEL SECURITY"
}

if on postgres; then
  launch "$DATA/pg" "${COMMON[@]}" "${PG_ENV[@]}"
  for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: PostgreSQL, RLS on then off"
    rls on
    IDS="$WORK/ids.txt" run_wrk "pg_get_rls_$round" "$BASE" -s "$WORK/get.lua"
    run_wrk "pg_search_rls_$round" "$BASE" -s "$WORK/search.lua"
    rls off
    IDS="$WORK/ids.txt" run_wrk "pg_get_norls_$round" "$BASE" -s "$WORK/get.lua"
    run_wrk "pg_search_norls_$round" "$BASE" -s "$WORK/search.lua"
    rls on
  done
  stop_server
fi
if on sqlite; then
  launch "$DATA/sqlite" "${COMMON[@]}"
  for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: SQLite"
    IDS="$WORK/ids_sqlite.txt" run_wrk "sqlite_get_$round" "$BASE" -s "$WORK/get.lua"
    run_wrk "sqlite_search_$round" "$BASE" -s "$WORK/search.lua"
  done
  stop_server
fi

median_round() {
  for r in $(seq 1 "$ROUNDS"); do
    echo "$(awk '/Requests\/sec/{print $2}' "$WORK/${1}_$r.txt") ${1}_$r"
  done | sort -n | awk '{a[NR]=$2} END{print a[int((NR+1)/2)]}'
}
echo
printf "%-34s %12s %10s %10s\n" scenario req/s p50 p99
SCENARIOS=()
if on postgres; then SCENARIOS+=(pg_get_rls pg_get_norls pg_search_rls pg_search_norls); fi
if on sqlite; then SCENARIOS+=(sqlite_get sqlite_search); fi
for sc in "${SCENARIOS[@]}"; do
  m=$(median_round "$sc")
  printf "%-34s %12s %10s %10s\n" "$sc" "$(rps "$m")" "$(pct "$m" 50%)" "$(pct "$m" 99%)"
done
echo
ratio() {
  local ratios median
  ratios=$(for r in $(seq 1 "$ROUNDS"); do
    awk -v a="$(rps "${2}_$r")" -v b="$(rps "${3}_$r")" 'BEGIN{printf "%.3f\n", a/b}'
  done | sort -n | tr '\n' ' ')
  median=$(echo "$ratios" | tr ' ' '\n' | grep -v '^$' | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  printf "%-40s %s   (per round: %s)\n" "$1" "$median" "$ratios"
}
if on postgres; then
  ratio "PostgreSQL RLS/no RLS, GET:" pg_get_rls pg_get_norls
  ratio "PostgreSQL RLS/no RLS, search:" pg_search_rls pg_search_norls
fi
echo "(search: $((TENANTS * PER_TENANT)) records over $TENANTS tenants, random tenant and word per request; median of $ROUNDS rounds; threads=$THREADS connections=$CONNECTIONS duration=${DURATION}s)"
