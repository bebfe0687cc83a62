#!/usr/bin/env bash
# The MCP endpoint (/mcp) driven by the official MCP Python SDK (PyPI `mcp`, pinned below):
# tests/mcp/mcp_client.py against `clawx dev` (SQLite) on a free port.
#
#   scripts/mcp.sh
#
# Needs python3 with venv; installs the SDK into target/test-tools/mcp-venv (its own venv, so its
# HTTP stack cannot clash with the other Python test tools). Builds nothing: run
# `cargo build -p clawx` first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MCP_SDK="mcp==2.3.0"
VENV="$ROOT/target/test-tools/mcp-venv"
BIN="$ROOT/target/debug/clawx"
WORK=$(mktemp -d)
PID=""

log() { printf '[mcp] %s\n' "$*"; }
cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
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

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$BIN" dev --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/dev.log" 2>&1 &
PID=$!
deadline=$((SECONDS + 60))
until python3 -c "import json,sys,urllib.request; s=json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/status'))['status']; sys.exit(0 if s['db'] else 1)" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then tail -n 50 "$WORK/dev.log" >&2; echo "clawx dev did not become ready" >&2; exit 1; fi
  sleep 0.3
done

log "MCP Python SDK against clawx dev on 127.0.0.1:$PORT"
if ! timeout 300 "$VENV/bin/python" "$ROOT/tests/mcp/mcp_client.py" "http://127.0.0.1:$PORT"; then
  tail -n 80 "$WORK/dev.log" >&2
  exit 1
fi
