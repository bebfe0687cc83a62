#!/usr/bin/env bash
# XMTP interop: two unmodified @xmtp/node-sdk 5.5.0 clients (plus a third) use Clawx as their
# XMTP network through the gateway's port, then Clawx restarts on the same data and the
# conversation goes on (tests/interop/xmtp-dm.mjs); a Clawx agent using only REST and node-sdk
# users DM each other in both directions, before and after the restart (agent-rest.mjs), and,
# on `serve`, through two messaging replicas behind two gateways. Runs on `clawx dev` (SQLite) and on
# `clawx serve` roles with PostgreSQL + Redis.
#
#   scripts/interop.sh dev|serve
#
# node-sdk 5.5.0 resolves inbox ids at http://localhost:5556 whatever its apiUrl says, so the
# gateway listens there. Needs: node and npm; for `serve`, CLAWX_TEST_DATABASE_URL and
# CLAWX_TEST_REDIS_URL (scripts/test.sh sets them).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:?usage: scripts/interop.sh dev|serve}
PORT=5556
BIN="$ROOT/target/debug/clawx"
WORK=$(mktemp -d)
PIDS=()

log() { printf '[interop %s] %s\n' "$MODE" "$*"; }
cleanup() {
  stop_clawx
  rm -rf "$WORK"
}
trap cleanup EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { # wait_port <port> <log>
  local deadline=$((SECONDS + 60))
  until port_in_use "$1"; do
    if [ "$SECONDS" -ge "$deadline" ]; then cat "$2" >&2; echo "nothing listens on port $1" >&2; return 1; fi
    sleep 0.3
  done
}
wait_ready() { # the gateway answers /status with every database up
  local deadline=$((SECONDS + 60))
  until python3 -c "import json,sys,urllib.request; s=json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/status'))['status']; sys.exit(0 if s['db'] else 1)" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "Clawx did not become ready" >&2; tail -n 50 "$WORK"/*.log >&2; return 1; fi
    sleep 0.3
  done
}

stop_clawx() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

start_dev() {
  "$BIN" dev --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >>"$WORK/dev.log" 2>&1 &
  PIDS+=($!)
  wait_port "$PORT" "$WORK/dev.log"
}

SERVE_ENV_READY=""
start_serve() {
  if [ -z "$SERVE_ENV_READY" ]; then
    : "${CLAWX_TEST_DATABASE_URL:?set CLAWX_TEST_DATABASE_URL}" "${CLAWX_TEST_REDIS_URL:?set CLAWX_TEST_REDIS_URL}"
    export CLAWX_DATABASE_URL="$CLAWX_TEST_DATABASE_URL"
    export CLAWX_DATABASE_SCHEMA_PREFIX="interop$RANDOM$RANDOM"_
    export CLAWX_REDIS_URL="$CLAWX_TEST_REDIS_URL"
    export CLAWX_REDIS_PREFIX="clawx-interop-$RANDOM$RANDOM"
    export CLAWX_JWT_SECRET
    CLAWX_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    export CLAWX_MASTER_KEY
    CLAWX_MASTER_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    IDENTITY_PORT=$(free_port); MESSAGING_PORT=$(free_port); GROUPS_PORT=$(free_port); VERIFY_PORT=$(free_port)
    export CLAWX_IDENTITY_URL="http://127.0.0.1:$IDENTITY_PORT" CLAWX_MESSAGING_URL="http://127.0.0.1:$MESSAGING_PORT"
    export CLAWX_GROUPS_URL="http://127.0.0.1:$GROUPS_PORT" CLAWX_VERIFY_URL="http://127.0.0.1:$VERIFY_PORT"
    SERVE_ENV_READY=1
  fi
  local role port
  for role in identity messaging groups verify gateway; do
    case $role in
      identity) port=$IDENTITY_PORT ;; messaging) port=$MESSAGING_PORT ;; groups) port=$GROUPS_PORT ;;
      verify) port=$VERIFY_PORT ;; gateway) port=$PORT ;;
    esac
    CLAWX_LISTEN="127.0.0.1:$port" "$BIN" serve "$role" >>"$WORK/$role.log" 2>&1 &
    PIDS+=($!)
  done
  for port in "$IDENTITY_PORT" "$MESSAGING_PORT" "$GROUPS_PORT" "$VERIFY_PORT" "$PORT"; do
    wait_port "$port" "$WORK/gateway.log"
  done
}

if port_in_use "$PORT"; then
  echo "port $PORT is in use; node-sdk 5.5.0 needs Clawx there. Stop what listens on it and re-run." >&2
  exit 1
fi

command -v node >/dev/null 2>&1 || { echo "node is required for the XMTP interop test" >&2; exit 1; }
if [ ! -d tests/interop/node_modules/@xmtp/node-sdk ] || [ tests/interop/package-lock.json -nt tests/interop/node_modules/.package-lock.json ]; then
  log "installing @xmtp/node-sdk (npm ci)"
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi

STATE="$WORK/clients"
run_phase() {
  log "phase $1"
  (cd tests/interop && node xmtp-dm.mjs --phase "$1" --url "http://localhost:$PORT" --state "$STATE" --timeout 90) 2>&1 \
    | grep -v 'sqlcipherCodecAttach'
  log "phase $1: a Clawx agent (REST) and node-sdk users"
  (cd tests/interop && node agent-rest.mjs --phase "$1" --url "http://localhost:$PORT" --state "$STATE/agent") 2>&1 \
    | grep -v 'sqlcipherCodecAttach' | tee "$WORK/agent-$1.out"
  grep -q '^PASS agent-rest' "$WORK/agent-$1.out" || { tail -n 80 "$WORK"/*.log >&2; return 1; }
}

start_$MODE
wait_ready
run_phase first
log "restarting Clawx on the same data"
stop_clawx
start_$MODE
wait_ready
run_phase second
if [ "$MODE" = serve ]; then
  # A second messaging replica on the same database and Redis, behind a second gateway.
  MESSAGING2_PORT=$(free_port); GATEWAY2_PORT=$(free_port)
  CLAWX_LISTEN="127.0.0.1:$MESSAGING2_PORT" "$BIN" serve messaging >>"$WORK/messaging2.log" 2>&1 &
  PIDS+=($!)
  CLAWX_LISTEN="127.0.0.1:$GATEWAY2_PORT" CLAWX_MESSAGING_URL="http://127.0.0.1:$MESSAGING2_PORT" "$BIN" serve gateway >>"$WORK/gateway2.log" 2>&1 &
  PIDS+=($!)
  wait_port "$MESSAGING2_PORT" "$WORK/messaging2.log"
  wait_port "$GATEWAY2_PORT" "$WORK/gateway2.log"
  log "phase replicas: two messaging replicas behind two gateways"
  (cd tests/interop && node agent-rest.mjs --phase replicas --url "http://localhost:$PORT" --state "$STATE/agent" \
    --rest-urls "http://127.0.0.1:$PORT,http://127.0.0.1:$GATEWAY2_PORT") 2>&1 | grep -v 'sqlcipherCodecAttach' | tee "$WORK/agent-replicas.out"
  grep -q '^PASS agent-rest' "$WORK/agent-replicas.out" || { tail -n 80 "$WORK"/*.log >&2; exit 1; }
fi
log "passed"
