# Shared by the scripts/bench-*.sh benchmarks (sourced, not run).
# Expects BIN, BASE, PORT, THREADS, CONNECTIONS, WARMUP, DURATION.

# bench_setup PREFIX: wrk installed, release binary built, WORK and DATA
# made (removed on exit unless KEEP=1), the server stopped on exit.
bench_setup() {
  if ! command -v wrk >/dev/null 2>&1; then
    echo "== installing wrk"
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  fi
  if [[ "$BIN" == "${CARGO_TARGET_DIR:-target}/release/tenantd" ]]; then
    echo "== building release binary"
    cargo build --release -p tenantd --quiet
  else
    echo "== using $BIN"
  fi
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  DATA="$WORK/data"
  SERVER_PID=""
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [[ "${KEEP:-0}" != "1" ]]; then rm -rf "$WORK"; fi
}

# launch DATA_DIR [VAR=value ...]: serves DATA_DIR with the variables set
# and waits until it is ready; START_MS is the time that took.
START_MS=0
launch() {
  local dir=$1; shift
  local t0; t0=$(date +%s%N)
  env "$@" "$BIN" serve --bind "127.0.0.1:${PORT}" --data-dir "$dir" 2>>"$WORK/server.log" &
  SERVER_PID=$!
  for _ in $(seq 1 2000); do
    if curl -sf "$BASE/health/ready" >/dev/null; then
      START_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
      return 0
    fi
    sleep 0.01
  done
  echo "server did not become ready; see $WORK/server.log" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

# run_wrk NAME URL [extra wrk args...] → $WORK/NAME.txt; fails on non-2xx.
run_wrk() {
  local name=$1 url=$2; shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$WORK/$name.txt"
  if grep -q "Non-2xx" "$WORK/$name.txt"; then
    echo "!! $name had non-2xx responses:" >&2; cat "$WORK/$name.txt" >&2; exit 1
  fi
}

rps() { awk '/Requests\/sec/{print $2}' "$WORK/$1.txt"; }
pct() { awk -v p="$2" '$1==p{print $2}' "$WORK/$1.txt"; }
