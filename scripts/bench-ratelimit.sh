#!/usr/bin/env bash
# HTTP benchmark of the rate limiter, measured in one run.
#
# 1. Cost: GET /records/{id} (X-Tenant-ID: t1) with limits off, limits on
#    with the in-process store, and limits on with the Redis store; the
#    limits are set high enough never to reject. The modes alternate for
#    ROUNDS rounds; ratios are paired by round and the median is shown
#    (targets: memory/off >= 0.95, redis/off >= 0.80).
# 2. Accuracy: a per-minute limit of LIMIT, then 10 x LIMIT requests from 64
#    keep-alive connections as fast as they go, started just after a
#    minute boundary; admitted (200) vs LIMIT, for both stores (target:
#    within 1 %).
#
# Env: DURATION (10), WARMUP (2), THREADS (2), CONNECTIONS (32), ROUNDS (3),
#      RECORDS (200), LIMIT (2000), PORT (18082),
#      REDIS_URL (redis://127.0.0.1:6379), KEEP (1 keeps the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-200}
LIMIT=${LIMIT:-2000}
PORT=${PORT:-18082}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
BASE="http://127.0.0.1:${PORT}"
BIN=target/release/tenantd

source scripts/bench-lib.sh
bench_setup tenantd-bench-rl

# start_server MODE [per-minute limit]: MODE = off | memory | redis.
start_server() {
  local mode=$1 rpm=${2:-1000000000}
  local -a env=(TENANTD_TENANT_ENABLED=true TENANTD_LOG__LEVEL=warn TENANTD_JOBS__WORKERS=0
                TENANTD_USAGE__FLUSH_MS=1000)
  case "$mode" in
    off) env+=(TENANTD_LIMITS__ENABLED=false) ;;
    memory) env+=(TENANTD_LIMITS__ENABLED=true TENANTD_LIMITS__STORE=memory
                  TENANTD_LIMITS__REQUESTS_PER_MINUTE="$rpm") ;;
    redis) env+=(TENANTD_LIMITS__ENABLED=true TENANTD_LIMITS__STORE=redis
                 TENANTD_LIMITS__REDIS_URL="$REDIS_URL" TENANTD_LIMITS__ON_STORE_ERROR=deny
                 TENANTD_LIMITS__REDIS_NAMESPACE="bench-$$-$RANDOM"
                 TENANTD_LIMITS__REQUESTS_PER_MINUTE="$rpm") ;;
  esac
  launch "$DATA" "${env[@]}"
}

echo "== seeding $RECORDS records in t1"
start_server off
python3 scripts/bench_seed.py "$BASE" "t1" "$RECORDS" "$WORK/ids.txt"
stop_server
ID_T1=$(awk '$1=="t1"{print $2}' "$WORK/ids.txt")

for round in $(seq 1 "$ROUNDS"); do
  for mode in off memory redis; do
    echo "== round $round: limits $mode"
    start_server "$mode"
    run_wrk "${mode}_$round" "$BASE/records/$ID_T1" -H "X-Tenant-ID: t1"
    stop_server
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo
printf "%-8s %12s %10s %10s   (median round by req/s)\n" limits req/s p50 p99
for mode in off memory redis; do
  best=$(for r in $(seq 1 "$ROUNDS"); do echo "$(rps "${mode}_$r") ${mode}_$r"; done \
    | sort -n | awk '{a[NR]=$2} END{print a[int((NR+1)/2)]}')
  printf "%-8s %12s %10s %10s\n" "$mode" "$(rps "$best")" "$(pct "$best" 50%)" "$(pct "$best" 99%)"
done
for mode in memory redis; do
  ratios=$(for r in $(seq 1 "$ROUNDS"); do
    awk -v a="$(rps "${mode}_$r")" -v b="$(rps "off_$r")" 'BEGIN{printf "%.3f ", a/b}'
  done)
  printf "%-24s %s   (per round: %s)\n" "$mode/off throughput:" "$(echo "$ratios" | median)" "$ratios"
done

# Accuracy: 10 x LIMIT requests from 64 connections, right after a minute
# boundary so the whole burst falls in one fixed window.
cat > "$WORK/burst.py" <<'PY'
import http.client, sys, threading
host, port, path, tenant, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
lock = threading.Lock()
state = {"sent": 0, "ok": 0, "limited": 0, "other": 0}
def worker():
    conn = http.client.HTTPConnection(host, port, timeout=30)
    while True:
        with lock:
            if state["sent"] >= total:
                return
            state["sent"] += 1
        conn.request("GET", path, headers={"X-Tenant-ID": tenant})
        resp = conn.getresponse(); resp.read()
        key = "ok" if resp.status == 200 else "limited" if resp.status == 429 else "other"
        with lock:
            state[key] += 1
threads = [threading.Thread(target=worker) for _ in range(64)]
for t in threads: t.start()
for t in threads: t.join()
print(state["ok"], state["limited"], state["other"])
PY
wait_minute_start() { # sleep until second 1 of the next minute
  local s; s=$(date +%S); s=${s#0}
  sleep $(( (61 - s) % 60 + 1 ))
}

echo
for mode in memory redis; do
  start_server "$mode" "$LIMIT"
  wait_minute_start
  read -r ok limited other < <(python3 "$WORK/burst.py" 127.0.0.1 "$PORT" "/records/$ID_T1" "t1" $((10 * LIMIT)))
  stop_server
  awk -v m="$mode" -v ok="$ok" -v l="$LIMIT" -v lim="$limited" -v o="$other" \
    'BEGIN{printf "accuracy (%s): %d admitted of limit %d, %d refused, %d other; error %+.2f%%\n", m, ok, l, lim, o, (ok-l)*100/l}'
done
echo "(threads=$THREADS connections=$CONNECTIONS duration=${DURATION}s rounds=$ROUNDS; raw output in $WORK with KEEP=1)"
