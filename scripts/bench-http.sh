#!/usr/bin/env bash
# HTTP benchmark: the cost of multi-tenancy, measured in one run.
#
# Usage: scripts/bench-http.sh [--backend sqlite|postgres | --peers]
#   (no option) or --backend sqlite: the modes below.
#   --backend postgres: scripts/bench-storage.sh (RLS on/off, search latency
#     with a million records on both backends).
#   --peers: scripts/bench-peers.sh: tenantd (GET /health, GET
#     /records/{id}, POST /records) against a bare axum binary and nginx
#     serving the same JSON body, alternating rounds, with ratios to bare
#     axum (targets: GET >= 0.5x, /health >= 0.8x) and bare axum / nginx.
#     Same DURATION, WARMUP, THREADS, CONNECTIONS, ROUNDS, PORT, KEEP, BIN.
#
# Seeds one fixture data directory (tenants default, t1..t9; RECORDS per
# tenant), then starts the release server on it twice, back to back:
#   (a) multi-tenancy disabled: every request runs in "default";
#   (b) multi-tenancy enabled, requests carry X-Tenant-ID: t2 (a tenant
#       without keys: one with keys is reached only with one).
#   (c) enabled, requests carry t1's API key (x-api-key) instead;
#   (d) and (e): (b) and (c) on a copy of the data with BIG_TENANTS more
#       tenants (each with a key) in the registry.
# Each mode is loaded with wrk (GET /records/{id}; POST /records/search for
# (a) and (b)), DURATION seconds each after a WARMUP. The modes alternate
# for ROUNDS rounds and the median round of each is reported, so a burst of
# noise on this shared machine does not land on one mode only. Prints req/s,
# p50, p99 and the ratios (targets: enabled/disabled >= 0.95;
# API key/header >= 0.90; 100k tenants/10 tenants >= 0.95; GET >= 20k
# req/s), the startup time with BIG_TENANTS tenants and the registry memory
# per tenant (RSS difference after startup / extra tenants; target 2 KiB).
#
# Env: DURATION (10), WARMUP (2), THREADS (2), CONNECTIONS (32), ROUNDS (3),
#      RECORDS (1000 per tenant), BIG_TENANTS (100000), PORT (18081),
#      KEEP (1 keeps the temp dir), BIN (target/release/tenantd).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 [--backend sqlite|postgres | --peers]" >&2; exit 2; }
# --backend postgres: the storage benchmark (RLS on/off, search latency
# with a million records on both backends); --peers: tenantd against bare
# axum and nginx. Each is its own script, run in this one's place.
case "${1:-}" in
  "") ;;
  --backend)
    case "${2:-}" in
      postgres) exec scripts/bench-storage.sh ;;
      sqlite) ;;
      *) usage ;;
    esac ;;
  --peers) [[ $# == 1 ]] || usage; exec scripts/bench-peers.sh ;;
  *) usage ;;
esac

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
RECORDS=${RECORDS:-1000}
ROUNDS=${ROUNDS:-3}
BIG_TENANTS=${BIG_TENANTS:-100000}
PORT=${PORT:-18081}
BASE="http://127.0.0.1:${PORT}"
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/tenantd}  # BIN=path/to/tenantd compares another build

source scripts/bench-lib.sh
bench_setup tenantd-bench

start_server() { # $1 = enabled (true/false), $2 = data dir (default $DATA)
  launch "${2:-$DATA}" TENANTD_TENANT_ENABLED="$1" TENANTD_LOG__LEVEL=warn TENANTD_JOBS__WORKERS=0
}

echo "== seeding $RECORDS records in each of 10 tenants"
start_server true
python3 scripts/bench_seed.py "$BASE" "default,t1,t2,t3,t4,t5,t6,t7,t8,t9" "$RECORDS" "$WORK/ids.txt"
stop_server
ID_DEFAULT=$(awk '$1=="default"{print $2}' "$WORK/ids.txt")
ID_T1=$(awk '$1=="t1"{print $2}' "$WORK/ids.txt")
# A tenant that holds an API key is reached only with it, so the header
# runs use t2 (same size, no key) and the key runs t1.
ID_T2=$(awk '$1=="t2"{print $2}' "$WORK/ids.txt")

echo "== registering the 10 tenants; an API key for t1"
for t in default t1 t2 t3 t4 t5 t6 t7 t8 t9; do
  "$BIN" tenants create "$t" --name "$t" --no-key --data-dir "$DATA" >/dev/null
done
KEY_T1=$("$BIN" keys issue t1 --name bench --data-dir "$DATA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

echo "== copying the data and adding $BIG_TENANTS tenants to the copy's registry"
BIG="$WORK/big"
cp -r "$DATA" "$BIG"
python3 scripts/bench_registry.py "$BIG/tenantd.db" "$BIG_TENANTS"

rss_kib() { awk '/VmRSS/{print $2}' "/proc/$SERVER_PID/status"; }

cat > "$WORK/search.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"query":"payments service","limit":10}'
wrk.headers["Content-Type"] = "application/json"
LUA

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: disabled"
  start_server false
  run_wrk "get_disabled_$round" "$BASE/records/$ID_DEFAULT"
  run_wrk "search_disabled_$round" "$BASE/records/search" -s "$WORK/search.lua"
  stop_server
  echo "== round $round: enabled (X-Tenant-ID: t2), then API key (t1)"
  start_server true
  echo "$START_MS $(rss_kib)" >"$WORK/small_start_$round"
  run_wrk "get_enabled_$round" "$BASE/records/$ID_T2" -H "X-Tenant-ID: t2"
  run_wrk "search_enabled_$round" "$BASE/records/search" -s "$WORK/search.lua" -H "X-Tenant-ID: t2"
  run_wrk "get_apikey_$round" "$BASE/records/$ID_T1" -H "x-api-key: $KEY_T1"
  stop_server
  echo "== round $round: $BIG_TENANTS more tenants: header, then API key"
  start_server true "$BIG"
  echo "$START_MS $(rss_kib)" >"$WORK/big_start_$round"
  run_wrk "get_bigheader_$round" "$BASE/records/$ID_T2" -H "X-Tenant-ID: t2"
  run_wrk "get_bigapikey_$round" "$BASE/records/$ID_T1" -H "x-api-key: $KEY_T1"
  stop_server
done

# The median round (by req/s) of a scenario: its file name without .txt.
median_round() { # $1 = scenario prefix, e.g. get_enabled
  for r in $(seq 1 "$ROUNDS"); do
    echo "$(awk '/Requests\/sec/{print $2}' "$WORK/${1}_$r.txt") ${1}_$r"
  done | sort -n | awk '{a[NR]=$2} END{print a[int((NR+1)/2)]}'
}
for sc in get_disabled get_enabled search_disabled search_enabled get_apikey get_bigheader get_bigapikey; do
  cp "$WORK/$(median_round "$sc").txt" "$WORK/$sc.txt"
done

echo
printf "%-22s %-9s %12s %10s %10s\n" endpoint mode req/s p50 p99
for sc in get_disabled get_enabled get_apikey get_bigheader get_bigapikey search_disabled search_enabled; do
  ep=${sc%%_*}; mode=${sc#*_}
  printf "%-22s %-9s %12s %10s %10s\n" \
    "$([[ $ep == get ]] && echo 'GET /records/{id}' || echo 'POST /records/search')" \
    "$mode" "$(rps "$sc")" "$(pct "$sc" 50%)" "$(pct "$sc" 99%)"
done
echo
# Ratios are paired by round (each enabled run against the disabled run
# just before it), then the median is taken: noise from other processes
# shifts both halves of a round alike.
ratio() { # $1 label, $2 numerator scenario, $3 denominator scenario
  local ratios median
  ratios=$(for r in $(seq 1 "$ROUNDS"); do
    awk -v a="$(awk '/Requests\/sec/{print $2}' "$WORK/${2}_$r.txt")" \
        -v b="$(awk '/Requests\/sec/{print $2}' "$WORK/${3}_$r.txt")" 'BEGIN{printf "%.3f\n", a/b}'
  done | sort -n | tr '\n' ' ')
  median=$(echo "$ratios" | tr ' ' '\n' | grep -v '^$' | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  printf "%-44s %s   (per round: %s)\n" "$1" "$median" "$ratios"
}
ratio "enabled/disabled, GET:" get_enabled get_disabled
ratio "enabled/disabled, search:" search_enabled search_disabled
ratio "API key/header, GET:" get_apikey get_enabled
ratio "$BIG_TENANTS+ tenants/10 tenants, header GET:" get_bigheader get_enabled
ratio "$BIG_TENANTS+ tenants/10 tenants, API key GET:" get_bigapikey get_apikey
echo
for r in $(seq 1 "$ROUNDS"); do
  read -r small_ms small_rss <"$WORK/small_start_$r"
  read -r big_ms big_rss <"$WORK/big_start_$r"
  awk -v sm="$small_ms" -v bm="$big_ms" -v sr="$small_rss" -v br="$big_rss" -v n="$BIG_TENANTS" -v r="$r" \
    'BEGIN{printf "round %d: startup to ready %d ms (10 tenants) vs %d ms (+%d tenants); registry memory %.0f bytes per tenant (RSS %d KiB vs %d KiB)\n", r, sm, bm, n, (br-sr)*1024/n, sr, br}'
done
echo "(median of $ROUNDS alternating rounds; threads=$THREADS connections=$CONNECTIONS duration=${DURATION}s; raw wrk output kept in $WORK with KEEP=1)"
