#!/usr/bin/env bash
# HTTP benchmark against peers (run as `scripts/bench-http.sh --peers`):
# how far tenantd is from the framework it is built on and from the
# machine's ceiling, measured in one run.
#
# Five scenarios, each loaded with wrk (THREADS threads, CONNECTIONS
# connections, DURATION seconds after a WARMUP), alternating for ROUNDS
# rounds so that a burst of noise on this shared machine does not land on
# one of them only; the median round of each is reported:
#   nginx      nginx serving the record's JSON body as a static file (the
#              ceiling: what this machine and wrk can do at all);
#   axum       crates/tenantd/examples/bare_axum.rs: axum with nothing added,
#              serving the same body (the peer tenantd's ratios are taken to);
#   health     tenantd GET /health;
#   get        tenantd GET /records/{id}, X-Tenant-ID of a tenant without
#              keys, one record stored: its body is what the peers serve, so
#              all three GETs answer identical bytes (checked before loading);
#   post       tenantd POST /records, a distinct name per request (wrk Lua:
#              run tag, thread number, counter), in a tenant whose quotas are
#              set high. Throughput counts 2xx answers only: 4xx/5xx are
#              counted and shown, so a run of errors is never a throughput.
# tenantd runs the release build (BIN) on SQLite with multi-tenancy on.
# Prints req/s, p50, p99 and the per-round ratios (median, and each round)
# of each tenantd figure to bare axum and of bare axum to nginx; targets:
# GET /records/{id} >= 0.5x bare axum, /health >= 0.8x bare axum.
# Without nginx installed it says so, skips that scenario, and goes on.
#
# Env: DURATION (10), WARMUP (2), THREADS (2), CONNECTIONS (32), ROUNDS (3),
#      PORT (18081; bare axum on PORT+1, nginx on PORT+2), KEEP (1 keeps the
#      temp dir), BIN (target/release/tenantd), AXUM_BIN (the example as
#      cargo builds it, under CARGO_TARGET_DIR or target/).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18081}
AXUM_PORT=$((PORT + 1))
NGINX_PORT=$((PORT + 2))
BASE="http://127.0.0.1:${PORT}"
BIN=${BIN:-target/release/tenantd}

source scripts/bench-lib.sh
bench_setup tenantd-peers
echo "== building the bare axum peer (examples/bare_axum.rs)"
cargo build --release -p tenantd --example bare_axum --quiet
AXUM_BIN=${AXUM_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/bare_axum}

# Every process started here is stopped on exit, however the script ends;
# bench_cleanup (the tenantd server, the temp dir) runs last.
AXUM_PID=""
NGINX_PID=""
peers_cleanup() {
  local pid
  for pid in $AXUM_PID $NGINX_PID; do
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  done
  bench_cleanup
}
trap peers_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_http URL LOG: polls until URL answers 2xx (5 s at most).
wait_http() {
  for _ in $(seq 1 500); do
    if curl -sf "$1" >/dev/null; then return 0; fi
    sleep 0.01
  done
  echo "$1 did not answer; see $2" >&2
  exit 1
}

# Tenants: r1 (one record, the GET target) and w1 (the POST target, quotas
# high enough never to refuse). Seeded before they are registered, as
# bench-http.sh does: an empty registry admits any X-Tenant-ID.
setup_tenantd() {
  echo "== seeding one record in tenant r1; registering r1 and w1"
  launch "$DATA" TENANTD_TENANT_ENABLED=true TENANTD_LOG__LEVEL=warn TENANTD_JOBS__WORKERS=0
  ID=$(curl -sf -XPOST "$BASE/records" -H 'content-type: application/json' -H 'X-Tenant-ID: r1' \
    -d '{"name":"payments-service","kind":"service","url":"https://git.example.test/r1/payments","description":"The payments service, owned by team 7","tags":["payments","prod"],"fields":{"lang":"rust","owner":"team-7","replicas":3}}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  stop_server
  for t in r1 w1; do
    "$BIN" tenants create "$t" --name "$t" --no-key --data-dir "$DATA" >/dev/null
  done
  "$BIN" tenants update w1 --data-dir "$DATA" \
    --set '{"quotas":{"max_records":1000000000,"max_storage_mb":1000000}}' >/dev/null
  launch "$DATA" TENANTD_TENANT_ENABLED=true TENANTD_LOG__LEVEL=warn TENANTD_JOBS__WORKERS=0
  curl -sf "$BASE/records/$ID" -H 'X-Tenant-ID: r1' >"$WORK/body.json"
}

start_axum() {
  "$AXUM_BIN" "$AXUM_PORT" "$WORK/body.json" 2>>"$WORK/axum.log" &
  AXUM_PID=$!
  wait_http "http://127.0.0.1:$AXUM_PORT/records/$ID" "$WORK/axum.log"
}

# nginx as this user, everything under its own prefix in WORK: no root
# paths (the packaged build's temp paths under /var/lib/nginx are replaced),
# no daemon (so its pid is ours to stop), pid and logs in WORK.
# worker_processes auto is one worker per core, as tokio's multi-thread
# runtime runs one worker thread per core in tenantd and bare axum: the
# three servers may use the same cores, so the ceiling is not understated.
# keepalive_requests is raised because hyper does not cap requests per
# connection; nginx's default (1000) would make wrk reconnect.
start_nginx() {
  local n="$WORK/nginx"
  mkdir -p "$n/html/records" "$n/tmp"
  cp "$WORK/body.json" "$n/html/records/$ID"
  # Started by root, nginx would run its workers as nobody, who cannot read
  # WORK (mode 0700): name the current user (otherwise the directive is
  # ignored with a warning, so it is only written for root).
  local user=""
  if [[ $EUID == 0 ]]; then user="user $(id -un) $(id -gn);"; fi
  cat >"$n/nginx.conf" <<CONF
$user
worker_processes auto;
daemon off;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $n/tmp/body;
  proxy_temp_path $n/tmp/proxy;
  fastcgi_temp_path $n/tmp/fastcgi;
  uwsgi_temp_path $n/tmp/uwsgi;
  scgi_temp_path $n/tmp/scgi;
  keepalive_requests 1000000;
  open_file_cache max=16;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $n/html;
    default_type application/json;
  }
}
CONF
  nginx -p "$n/" -c "$n/nginx.conf" -e "$n/error.log" &
  NGINX_PID=$!
  wait_http "http://127.0.0.1:$NGINX_PORT/records/$ID" "$n/error.log"
}

# same_bytes URL [curl args]: the body at URL is body.json, byte for byte.
same_bytes() {
  local url=$1; shift
  if ! curl -sf "$url" "$@" | cmp -s - "$WORK/body.json"; then
    echo "!! $url does not serve the same body as tenantd" >&2; exit 1
  fi
}

cat >"$WORK/post.lua" <<'LUA'
-- A distinct record name per request: the run tag (wrk argument), the
-- thread's number and a per-thread counter.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  tag = args[1] or "run"
  n = 0
end
function request()
  n = n + 1
  local name = string.format("w-%s-%d-%d", tag, tid, n)
  local body = '{"name":"' .. name .. '","kind":"service","url":"https://git.example.test/w1/' .. name
    .. '","description":"The ' .. name .. ' service","tags":["bench","prod"],"fields":{"lang":"rust","replicas":3}}'
  return wrk.format("POST", "/records",
    { ["Content-Type"] = "application/json", ["X-Tenant-ID"] = "w1" }, body)
end
LUA

# load NAME URL [wrk args...] → $WORK/NAME.txt (wrk's report) and
# $WORK/NAME.ok ("<2xx req/s> <error count>"; wrk counts as errors the
# answers with a status of 400 or more, and a 3xx is not expected here).
# Unlike run_wrk it does not stop at errors: POST throughput must show
# them, not abort on them. The Lua script gets NAME as its run tag.
load() {
  local name=$1 url=$2; shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" -- "$name-warm" >/dev/null
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" -- "$name" >"$WORK/$name.txt"
  awk '/requests in/{n=$1; t=$4; sub(/,$/,"",t)
         if (t ~ /ms$/) s=t/1000; else if (t ~ /m$/) s=t*60; else if (t ~ /h$/) s=t*3600; else s=t+0}
       /Non-2xx/{bad=$NF}
       END{printf "%.2f %d\n", (s > 0 ? (n-bad)/s : 0), bad}' "$WORK/$name.txt" >"$WORK/$name.ok"
}

setup_tenantd
start_axum
NGINX=1
if command -v nginx >/dev/null 2>&1; then start_nginx; else NGINX=0; echo "nginx: not installed, skipped"; fi
same_bytes "http://127.0.0.1:$AXUM_PORT/records/$ID"
if [[ $NGINX == 1 ]]; then same_bytes "http://127.0.0.1:$NGINX_PORT/records/$ID"; fi
echo "== the GET body: $(wc -c <"$WORK/body.json") bytes, identical from every server"

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS"
  if [[ $NGINX == 1 ]]; then load "nginx_$round" "http://127.0.0.1:$NGINX_PORT/records/$ID"; fi
  load "axum_$round" "http://127.0.0.1:$AXUM_PORT/records/$ID"
  load "health_$round" "$BASE/health"
  load "get_$round" "$BASE/records/$ID" -H "X-Tenant-ID: r1"
  load "post_$round" "$BASE/records" -s "$WORK/post.lua"
done

ok_rps() { cut -d' ' -f1 "$WORK/$1.ok"; }
# The median of numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# The median round (by 2xx req/s) of a scenario, copied to SCENARIO.{txt,ok}.
pick_median() {
  local best
  best=$(for r in $(seq 1 "$ROUNDS"); do echo "$(ok_rps "${1}_$r") ${1}_$r"; done |
    sort -n | awk '{a[NR]=$2} END{print a[int((NR+1)/2)]}')
  cp "$WORK/$best.txt" "$WORK/$1.txt"; cp "$WORK/$best.ok" "$WORK/$1.ok"
}
SCENARIOS="axum health get post"
if [[ $NGINX == 1 ]]; then SCENARIOS="nginx $SCENARIOS"; fi
for sc in $SCENARIOS; do pick_median "$sc"; done

label() {
  case $1 in
    nginx) echo "nginx, static file" ;;
    axum) echo "bare axum, GET" ;;
    health) echo "tenantd GET /health" ;;
    get) echo "tenantd GET /records/{id}" ;;
    post) echo "tenantd POST /records" ;;
  esac
}
echo
printf "%-28s %12s %10s %10s %9s\n" server "req/s (2xx)" p50 p99 "4xx/5xx"
if [[ $NGINX == 0 ]]; then printf "%-28s %s\n" "nginx" "not installed, skipped"; fi
for sc in $SCENARIOS; do
  printf "%-28s %12s %10s %10s %9s\n" "$(label "$sc")" "$(ok_rps "$sc")" \
    "$(pct "$sc" 50%)" "$(pct "$sc" 99%)" "$(cut -d' ' -f2 "$WORK/$sc.ok")"
done
for sc in $SCENARIOS; do
  errors=$(cut -d' ' -f2 "$WORK/$sc.ok")
  if [[ $errors != 0 ]]; then echo "!! $(label "$sc"): $errors error answers in its median round"; fi
done
echo

# ratio LABEL NUM DEN [TARGET]: paired by round (both runs of a round are
# seconds apart, so noise shifts them alike), median and each round shown.
ratio() {
  local ratios med verdict=""
  ratios=$(for r in $(seq 1 "$ROUNDS"); do
    awk -v a="$(ok_rps "${2}_$r")" -v b="$(ok_rps "${3}_$r")" 'BEGIN{printf "%.3f\n", (b > 0 ? a/b : 0)}'
  done | sort -n)
  med=$(echo "$ratios" | median)
  if [[ -n "${4:-}" ]]; then
    verdict=$(awk -v m="$med" -v t="$4" 'BEGIN{print (m >= t ? "met" : "MISSED")}')
    verdict="target >= $4: $verdict"
  fi
  printf "%-34s %6s  %-22s (per round: %s)\n" "$1" "$med" "$verdict" "$(echo "$ratios" | tr '\n' ' ')"
}
ratio "GET /records/{id} / bare axum:" get axum 0.5
ratio "GET /health / bare axum:" health axum 0.8
ratio "POST /records / bare axum:" post axum
if [[ $NGINX == 1 ]]; then ratio "bare axum / nginx:" axum nginx; fi
echo "(median of $ROUNDS alternating rounds; threads=$THREADS connections=$CONNECTIONS duration=${DURATION}s;"
echo " req/s counts 2xx answers only; raw wrk output kept in $WORK with KEEP=1)"
