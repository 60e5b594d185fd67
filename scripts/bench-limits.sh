#!/usr/bin/env bash
# Rate-limit benchmark: the cost of the limiter and its accuracy, in one run.
#
# Seeds one fixture data directory (tenant t1 with RECORDS records,
# registered), then starts the release server on it once per mode, the
# modes alternating for ROUNDS rounds (the median round of each is
# reported, so a burst of noise on this shared machine does not land on one
# mode only). GET /records/{id} with X-Tenant-ID: t1 is loaded with wrk for
# DURATION seconds after a WARMUP:
#   (a) off:    limits disabled (TENANTD_LIMITS__ENABLED=false);
#   (b) memory: limits on, memory store, a per-minute limit so high that
#               nothing is refused (every request still checks and counts);
#   (c) redis:  the same with the Redis store (REDIS_URL; a fresh namespace
#               per server start; on_store_error=deny so that a Redis error
#               shows up as a 503 in the non-2xx column, not as a request
#               served without a check).
# Prints req/s, p50, p99, and the ratios b/a (target >= 0.95) and c/a
# (target >= 0.80), paired by round, median over rounds.
#
# Then (d) accuracy: a server with a per-minute limit of LIMIT requests
# (memory store, then Redis), hit with BURST_FACTOR x LIMIT requests from
# BURST_CONNECTIONS keep-alive connections at once; prints the number
# admitted (200) against LIMIT and the relative error. The burst is started
# early in a fixed minute window (the script waits for the next one when
# fewer than 45 s are left), so the whole burst falls in one window, where
# the sliding-window counter must admit exactly LIMIT.
#
# Env: DURATION (10), WARMUP (2), THREADS (2), CONNECTIONS (32), ROUNDS (3),
#      RECORDS (1000), LIMIT (2000), BURST_FACTOR (10),
#      BURST_CONNECTIONS (64), REDIS_URL (redis://127.0.0.1:6379),
#      PORT (a free one), KEEP (1 keeps the temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-1000}
LIMIT=${LIMIT:-2000}
BURST_FACTOR=${BURST_FACTOR:-10}
BURST_CONNECTIONS=${BURST_CONNECTIONS:-64}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
# A free port by default: another benchmark may be using a fixed one.
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
BASE="http://127.0.0.1:${PORT}"
BIN=target/release/tenantd

if ! command -v wrk >/dev/null 2>&1; then
  echo "== installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

# Fail early (not with a page of 503s) when Redis is not there.
redis_hostport=${REDIS_URL#*://}; redis_hostport=${redis_hostport##*@}; redis_hostport=${redis_hostport%%/*}
redis_host=${redis_hostport%:*}; redis_port=${redis_hostport##*:}
[[ "$redis_port" == "$redis_hostport" ]] && redis_port=6379
if ! timeout 2 bash -c "exec 3<>/dev/tcp/$redis_host/$redis_port && printf 'PING\r\n' >&3 && head -c1 <&3 >/dev/null"; then
  echo "Redis is not reachable at $redis_host:$redis_port (REDIS_URL)" >&2
  exit 1
fi

echo "== building release binary"
cargo build --release -p tenantd --quiet

WORK=$(mktemp -d /tmp/tenantd-bench-limits.XXXXXX)
DATA="$WORK/data"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [[ "${KEEP:-0}" != "1" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# start_server [VAR=value ...]: the server on $DATA with extra environment.
start_server() {
  if curl -s -o /dev/null "$BASE/health/ready"; then
    echo "something already answers on port $PORT; set PORT to a free port" >&2
    exit 1
  fi
  env TENANTD_TENANT_ENABLED=true TENANTD_LOG__LEVEL=warn TENANTD_JOBS__WORKERS=0 "$@" \
    "$BIN" serve --bind "127.0.0.1:${PORT}" --data-dir "$DATA" 2>>"$WORK/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 2000); do
    if curl -sf "$BASE/health/ready" >/dev/null; then
      # Ready, and it is ours (a server that failed to bind has exited).
      sleep 0.05
      if kill -0 "$SERVER_PID" 2>/dev/null; then return 0; fi
      break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.01
  done
  echo "server did not become ready; see $WORK/server.log:" >&2
  tail -20 "$WORK/server.log" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

# Environment of each mode. The Redis namespace is fresh per server start,
# so no run sees another's counters.
mode_env() { # $1 = off|memory|redis, $2 = per-minute limit (memory, redis)
  case $1 in
    off) echo "TENANTD_LIMITS__ENABLED=false" ;;
    memory) echo "TENANTD_LIMITS__ENABLED=true TENANTD_LIMITS__STORE=memory TENANTD_LIMITS__REQUESTS_PER_MINUTE=$2 TENANTD_LIMITS__ON_STORE_ERROR=deny" ;;
    redis) echo "TENANTD_LIMITS__ENABLED=true TENANTD_LIMITS__STORE=redis TENANTD_LIMITS__REDIS_URL=$REDIS_URL TENANTD_LIMITS__REDIS_NAMESPACE=bench-limits-$$-$RANDOM$RANDOM TENANTD_LIMITS__REQUESTS_PER_MINUTE=$2 TENANTD_LIMITS__ON_STORE_ERROR=deny" ;;
  esac
}

# The limiter must really be in the path (or not): one request, its headers.
expect_limit_header() { # $1 = mode, $2 = expected X-RateLimit-Limit ("" = none)
  local got
  got=$(curl -s -o /dev/null -D - -H "X-Tenant-ID: t1" "$BASE/records/$ID_T1" \
    | awk -F': ' 'tolower($1)=="x-ratelimit-limit"{gsub("\r","",$2); print $2}')
  if [[ "$got" != "$2" ]]; then
    echo "!! mode $1: X-RateLimit-Limit is '$got', expected '$2' (is the limiter wired?)" >&2
    exit 1
  fi
}

echo "== seeding $RECORDS records in tenant t1"
start_server TENANTD_LIMITS__ENABLED=false
python3 scripts/bench_seed.py "$BASE" "t1" "$RECORDS" "$WORK/ids.txt"
stop_server
ID_T1=$(awk '$1=="t1"{print $2}' "$WORK/ids.txt")
"$BIN" tenants create t1 --name t1 --no-key --data-dir "$DATA" >/dev/null

# run_wrk NAME URL [extra wrk args...] → writes $WORK/NAME.txt
run_wrk() {
  local name=$1 url=$2; shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$WORK/$name.txt"
}
non2xx() { awk '/Non-2xx/{print $NF}' "$WORK/$1.txt" | grep . || echo 0; }

HIGH=1000000000
for round in $(seq 1 "$ROUNDS"); do
  for mode in off memory redis; do
    echo "== round $round: $mode"
    # shellcheck disable=SC2046 # word splitting of VAR=value pairs intended
    start_server $(mode_env "$mode" "$HIGH")
    if [[ $mode == off ]]; then expect_limit_header "$mode" ""; else expect_limit_header "$mode" "$HIGH"; fi
    run_wrk "get_${mode}_$round" "$BASE/records/$ID_T1" -H "X-Tenant-ID: t1"
    stop_server
    if [[ $(non2xx "get_${mode}_$round") != 0 ]]; then
      echo "!! $mode round $round: $(non2xx "get_${mode}_$round") non-2xx responses (see the table)" >&2
    fi
  done
done

# The median round (by req/s) of a mode: its file name without .txt.
median_round() { # $1 = scenario prefix, e.g. get_memory
  for r in $(seq 1 "$ROUNDS"); do
    echo "$(awk '/Requests\/sec/{print $2}' "$WORK/${1}_$r.txt") ${1}_$r"
  done | sort -n | awk '{a[NR]=$2} END{print a[int((NR+1)/2)]}'
}
rps() { awk '/Requests\/sec/{print $2}' "$WORK/$1.txt"; }
pct() { awk -v p="$2" '$1==p{print $2}' "$WORK/$1.txt"; }
for mode in off memory redis; do
  cp "$WORK/$(median_round "get_$mode").txt" "$WORK/get_$mode.txt"
done

echo
printf "%-20s %-8s %12s %10s %10s %9s\n" endpoint limits req/s p50 p99 non-2xx
for mode in off memory redis; do
  printf "%-20s %-8s %12s %10s %10s %9s\n" 'GET /records/{id}' "$mode" \
    "$(rps "get_$mode")" "$(pct "get_$mode" 50%)" "$(pct "get_$mode" 99%)" "$(non2xx "get_$mode")"
done
echo
# Ratios are paired by round (each mode against the limits-off run of the
# same round), then the median is taken.
ratio() { # $1 label, $2 numerator mode, $3 denominator mode, $4 target
  local ratios median
  ratios=$(for r in $(seq 1 "$ROUNDS"); do
    awk -v a="$(rps "get_${2}_$r")" -v b="$(rps "get_${3}_$r")" 'BEGIN{printf "%.3f\n", a/b}'
  done | sort -n | tr '\n' ' ')
  median=$(echo "$ratios" | tr ' ' '\n' | grep -v '^$' | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
  printf "%-34s %s  target >= %s: %s   (per round: %s)\n" "$1" "$median" "$4" \
    "$(awk -v m="$median" -v t="$4" 'BEGIN{print (m >= t) ? "ok" : "MISSED"}')" "$ratios"
}
ratio "(b) memory / (a) off, GET:" memory off 0.95
ratio "(c) redis / (a) off, GET:" redis off 0.80
echo "(median of $ROUNDS alternating rounds; threads=$THREADS connections=$CONNECTIONS duration=${DURATION}s)"

# --- (d) accuracy ------------------------------------------------------------

cat >"$WORK/burst.py" <<'PY'
"""Fire TOTAL GET requests from CONNS keep-alive connections at once; print
the count per status as JSON, with the start and end (epoch seconds)."""
import http.client, json, sys, threading, time

host, port, path, tenant, total, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
counts, lock = {}, threading.Lock()
go = threading.Barrier(conns + 1)

def worker(n):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.connect()
    mine = {}
    go.wait()
    for _ in range(n):
        for attempt in range(2):
            try:
                conn.request("GET", path, headers={"X-Tenant-ID": tenant})
                resp = conn.getresponse()
                resp.read()
                mine[resp.status] = mine.get(resp.status, 0) + 1
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                if attempt == 1:
                    mine["error"] = mine.get("error", 0) + 1
    with lock:
        for k, v in mine.items():
            counts[k] = counts.get(k, 0) + v

threads = [threading.Thread(target=worker, args=(total // conns + (i < total % conns),)) for i in range(conns)]
for t in threads:
    t.start()
go.wait()
start = time.time()
for t in threads:
    t.join()
print(json.dumps({"counts": {str(k): v for k, v in counts.items()}, "start": start, "end": time.time()}))
PY

BURST=$((BURST_FACTOR * LIMIT))
echo
echo "== (d) accuracy: per-minute limit $LIMIT, $BURST requests from $BURST_CONNECTIONS connections"
for store in memory redis; do
  # shellcheck disable=SC2046
  start_server $(mode_env "$store" "$LIMIT")
  expect_limit_header "$store" "$LIMIT" # this one request is admitted and counted
  now_ms=$(date +%s%3N)
  left_ms=$((60000 - now_ms % 60000))
  if ((left_ms < 45000)); then
    echo "   ($store: waiting $((left_ms / 1000 + 1)) s for a fresh minute window)"
    sleep "$(awk -v ms="$left_ms" 'BEGIN{printf "%.3f", ms/1000 + 0.2}')"
    # Restart, so the request above (and the previous window) count nothing.
    stop_server
    # shellcheck disable=SC2046
    start_server $(mode_env "$store" "$LIMIT")
    before=0
  else
    before=1
  fi
  python3 "$WORK/burst.py" 127.0.0.1 "$PORT" "/records/$ID_T1" t1 "$BURST" "$BURST_CONNECTIONS" >"$WORK/burst_$store.json"
  stop_server
  python3 - "$WORK/burst_$store.json" "$store" "$LIMIT" "$BURST" "$before" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
store, limit, burst, before = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
c = r["counts"]
ok, limited = c.get("200", 0), c.get("429", 0)
other = {k: v for k, v in c.items() if k not in ("200", "429")}
admitted = ok + before  # the header probe before the burst used one request
secs = r["end"] - r["start"]
crossed = int(r["start"] // 60) != int(r["end"] // 60)
print(f"{store:<7} admitted {admitted} of {burst} (200: {ok}{' + 1 probe' if before else ''}, 429: {limited}"
      f"{', other: ' + str(other) if other else ''}) vs limit {limit}: "
      f"relative error {(admitted - limit) / limit:+.4%}  [{burst / secs:.0f} req/s over {secs:.2f} s"
      f"{'; CROSSED A MINUTE BOUNDARY, the sliding estimate applies' if crossed else ', one fixed window'}]")
PY
done
