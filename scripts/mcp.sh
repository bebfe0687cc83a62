#!/usr/bin/env bash
# The MCP endpoint (/mcp) driven by the official MCP Python SDK (PyPI `mcp`, pinned below):
# tests/mcp/mcp_client.py against `clawx dev` (SQLite), or against `clawx serve` roles with
# PostgreSQL + Redis, on free ports.
#
#   scripts/mcp.sh [dev|serve]
#
# Then the official MCP Inspector's CLI mode (npm `@modelcontextprotocol/inspector`, pinned in
# tests/mcp/package.json) lists the tools with its --strict schema checks.
#
# Needs python3 with venv, node and npm; installs the SDK into target/test-tools/mcp-venv (its own
# venv, so its HTTP stack cannot clash with the other Python test tools) and the Inspector into
# tests/mcp/node_modules. For `serve`, CLAWX_TEST_DATABASE_URL
# and CLAWX_TEST_REDIS_URL (scripts/test.sh sets them). Builds nothing: run
# `cargo build -p clawx` first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-dev}
MCP_SDK="mcp==2.3.0"
VENV="$ROOT/target/test-tools/mcp-venv"
BIN="$ROOT/target/debug/clawx"
WORK=$(mktemp -d)
PIDS=()

log() { printf '[mcp %s] %s\n' "$MODE" "$*"; }
cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(0 if m.version("mcp") == sys.argv[1] else 1)' "${MCP_SDK#mcp==}" 2>/dev/null; then
  log "installing $MCP_SDK"
  "$VENV/bin/pip" install -q "$MCP_SDK"
fi

command -v node >/dev/null 2>&1 || { echo "node is required for the MCP Inspector check" >&2; exit 1; }
if [ ! -d tests/mcp/node_modules/@modelcontextprotocol/inspector ] || [ tests/mcp/package-lock.json -nt tests/mcp/node_modules/.package-lock.json ]; then
  log "installing @modelcontextprotocol/inspector (npm ci)"
  # npm 11 refuses `npm ci` for this lock file (an optional, Windows-only dependency of vite has
  # no entry of its own); then install from the same lock file without rewriting it.
  (cd tests/mcp && { npm ci --no-audit --no-fund --loglevel=silent || npm install --no-save --no-audit --no-fund --loglevel=error; })
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
PORT=$(free_port)
case "$MODE" in
  dev)
    "$BIN" dev --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/dev.log" 2>&1 &
    PIDS+=($!)
    ;;
  serve)
    : "${CLAWX_TEST_DATABASE_URL:?set CLAWX_TEST_DATABASE_URL}" "${CLAWX_TEST_REDIS_URL:?set CLAWX_TEST_REDIS_URL}"
    export CLAWX_DATABASE_URL="$CLAWX_TEST_DATABASE_URL"
    export CLAWX_DATABASE_SCHEMA_PREFIX="mcp$RANDOM$RANDOM"_
    export CLAWX_REDIS_URL="$CLAWX_TEST_REDIS_URL"
    export CLAWX_REDIS_PREFIX="clawx-mcp-$RANDOM$RANDOM"
    CLAWX_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    CLAWX_MASTER_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
    export CLAWX_JWT_SECRET CLAWX_MASTER_KEY
    IDENTITY_PORT=$(free_port); MESSAGING_PORT=$(free_port); GROUPS_PORT=$(free_port); VERIFY_PORT=$(free_port)
    export CLAWX_IDENTITY_URL="http://127.0.0.1:$IDENTITY_PORT" CLAWX_MESSAGING_URL="http://127.0.0.1:$MESSAGING_PORT"
    export CLAWX_GROUPS_URL="http://127.0.0.1:$GROUPS_PORT" CLAWX_VERIFY_URL="http://127.0.0.1:$VERIFY_PORT"
    for role in identity messaging groups verify gateway; do
      case $role in
        identity) port=$IDENTITY_PORT ;; messaging) port=$MESSAGING_PORT ;; groups) port=$GROUPS_PORT ;;
        verify) port=$VERIFY_PORT ;; gateway) port=$PORT ;;
      esac
      CLAWX_LISTEN="127.0.0.1:$port" "$BIN" serve "$role" >>"$WORK/$role.log" 2>&1 &
      PIDS+=($!)
    done
    ;;
  *) echo "usage: scripts/mcp.sh [dev|serve]" >&2; exit 2 ;;
esac
deadline=$((SECONDS + 60))
until python3 -c "import json,sys,urllib.request; s=json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/status'))['status']; sys.exit(0 if s['db'] else 1)" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then tail -n 50 "$WORK"/*.log >&2; echo "Clawx did not become ready" >&2; exit 1; fi
  sleep 0.3
done

log "MCP Python SDK against clawx $MODE on 127.0.0.1:$PORT"
if ! timeout 300 "$VENV/bin/python" "$ROOT/tests/mcp/mcp_client.py" "http://127.0.0.1:$PORT"; then
  tail -n 80 "$WORK"/*.log >&2
  exit 1
fi

log "MCP Inspector CLI: tools/list --strict"
KEY=$(python3 -c "import json,sys,urllib.request; r=urllib.request.Request(sys.argv[1]+'/account/create', data=b'{}', method='POST', headers={'content-type': 'application/json'}); print(json.load(urllib.request.urlopen(r))['api_key'])" "http://127.0.0.1:$PORT")
# HOME is the scratch directory: the Inspector keeps a catalog and auth state under ~/.mcp-inspector.
if ! HOME="$WORK" timeout 120 "$ROOT/tests/mcp/node_modules/.bin/mcp-inspector" --cli "http://127.0.0.1:$PORT/mcp" \
  --method tools/list --header "Authorization: Bearer $KEY" --strict >"$WORK/tools.json" 2>"$WORK/inspector.err"; then
  cat "$WORK/inspector.err" >&2
  exit 1
fi
python3 - "$WORK/tools.json" "$WORK/inspector.err" <<'PY'
import json, sys
tools = json.load(open(sys.argv[1]))["tools"]
warnings = [line for line in open(sys.argv[2]) if line.startswith(("Warning", "Error"))]
assert len(tools) == 21 and all(tool["inputSchema"]["type"] == "object" for tool in tools), tools
assert not warnings, "".join(warnings)
print(f"ok - the Inspector lists {len(tools)} tools with no schema warnings")
PY
log "passed"
