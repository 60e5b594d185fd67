#!/usr/bin/env bash
# HTTP benchmark: the cost of multi-tenancy, measured in one run.
#
# Seeds one fixture data directory (tenants default, t1..t9; RECORDS per
# tenant), then starts the release server on it twice, back to back:
#   (a) multi-tenancy disabled: every request runs in "default";
#   (b) multi-tenancy enabled, requests carry X-Tenant-ID: t1.
# Each mode is loaded with wrk: GET /records/{id} and POST /records/search,
# DURATION seconds each after a WARMUP. The modes alternate for ROUNDS
# rounds (disabled, enabled, disabled, enabled, ...) and the median round of
# each is reported, so a burst of noise on this shared machine does not land
# on one mode only. Prints req/s, p50, p99 and the ratio enabled/disabled
# (DESIGN.md section 9: ratio >= 0.95; GET >= 20k req/s).
#
# Env: DURATION (10), WARMUP (2), THREADS (2), CONNECTIONS (32), ROUNDS (3),
#      RECORDS (1000 per tenant), PORT (18081), KEEP (1 keeps the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
RECORDS=${RECORDS:-1000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18081}
BASE="http://127.0.0.1:${PORT}"
BIN=target/release/tenantd

if ! command -v wrk >/dev/null 2>&1; then
  echo "== installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

echo "== building release binary"
cargo build --release -p tenantd --quiet

WORK=$(mktemp -d /tmp/tenantd-bench.XXXXXX)
DATA="$WORK/data"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [[ "${KEEP:-0}" != "1" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_server() { # $1 = enabled (true/false)
  TENANTD_TENANT_ENABLED="$1" TENANTD_LOG__LEVEL=warn TENANTD_JOBS__WORKERS=0 \
    "$BIN" serve --bind "127.0.0.1:${PORT}" --data-dir "$DATA" 2>>"$WORK/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    if curl -sf "$BASE/health/ready" >/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "server did not become ready; see $WORK/server.log" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

echo "== seeding $RECORDS records in each of 10 tenants"
start_server true
python3 scripts/bench_seed.py "$BASE" "default,t1,t2,t3,t4,t5,t6,t7,t8,t9" "$RECORDS" "$WORK/ids.txt"
stop_server
ID_DEFAULT=$(awk '$1=="default"{print $2}' "$WORK/ids.txt")
ID_T1=$(awk '$1=="t1"{print $2}' "$WORK/ids.txt")

cat > "$WORK/search.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"query":"payments service","limit":10}'
wrk.headers["Content-Type"] = "application/json"
LUA

# run_wrk NAME URL [extra wrk args...] → writes $WORK/NAME.txt
run_wrk() {
  local name=$1 url=$2; shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$WORK/$name.txt"
  if grep -q "Non-2xx" "$WORK/$name.txt"; then
    echo "!! $name had non-2xx responses:" >&2; cat "$WORK/$name.txt" >&2; exit 1
  fi
}

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: disabled"
  start_server false
  run_wrk "get_disabled_$round" "$BASE/records/$ID_DEFAULT"
  run_wrk "search_disabled_$round" "$BASE/records/search" -s "$WORK/search.lua"
  stop_server
  echo "== round $round: enabled (X-Tenant-ID: t1)"
  start_server true
  run_wrk "get_enabled_$round" "$BASE/records/$ID_T1" -H "X-Tenant-ID: t1"
  run_wrk "search_enabled_$round" "$BASE/records/search" -s "$WORK/search.lua" -H "X-Tenant-ID: t1"
  stop_server
done

# The median round (by req/s) of a scenario: its file name without .txt.
median_round() { # $1 = scenario prefix, e.g. get_enabled
  for r in $(seq 1 "$ROUNDS"); do
    echo "$(awk '/Requests\/sec/{print $2}' "$WORK/${1}_$r.txt") ${1}_$r"
  done | sort -n | awk '{a[NR]=$2} END{print a[int((NR+1)/2)]}'
}
rps() { awk '/Requests\/sec/{print $2}' "$WORK/$1.txt"; }
pct() { awk -v p="$2" '$1==p{print $2}' "$WORK/$1.txt"; }
for sc in get_disabled get_enabled search_disabled search_enabled; do
  cp "$WORK/$(median_round "$sc").txt" "$WORK/$sc.txt"
done

echo
printf "%-22s %-9s %12s %10s %10s\n" endpoint mode req/s p50 p99
for ep in get search; do
  for mode in disabled enabled; do
    printf "%-22s %-9s %12s %10s %10s\n" \
      "$([[ $ep == get ]] && echo 'GET /records/{id}' || echo 'POST /records/search')" \
      "$mode" "$(rps ${ep}_$mode)" "$(pct ${ep}_$mode 50%)" "$(pct ${ep}_$mode 99%)"
  done
done
echo
# Ratios are paired by round (each enabled run against the disabled run
# just before it), then the median is taken: noise from other processes
# shifts both halves of a round alike.
for ep in get search; do
  ratios=$(for r in $(seq 1 "$ROUNDS"); do
    awk -v a="$(awk '/Requests\/sec/{print $2}' "$WORK/${ep}_enabled_$r.txt")" \
        -v b="$(awk '/Requests\/sec/{print $2}' "$WORK/${ep}_disabled_$r.txt")" 'BEGIN{printf "%.3f\n", a/b}'
  done | sort -n | tr '\n' ' ')
  median=$(echo "$ratios" | tr ' ' '\n' | grep -v '^$' | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  printf "ratio enabled/disabled %-7s %s   (per round: %s)\n" "$ep:" "$median" "$ratios"
done
echo "(median of $ROUNDS alternating rounds; threads=$THREADS connections=$CONNECTIONS duration=${DURATION}s; raw wrk output kept in $WORK with KEEP=1)"
