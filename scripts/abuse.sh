#!/usr/bin/env bash
# Replays the anonymous XMTP requests that once made the node allocate hundreds of megabytes
# (repeated keys, unsigned free-form bytes, oversized messages, subscription fan-out, unsigned
# commit logs) against a fresh `clawx dev`, and prints the server's resident memory before and
# after. Fails when an answer is not a clean gRPC status or the attack grew memory by 50 MB or
# more (measured after a round of legitimate traffic, so caches and buffers that any use
# fills are not counted as the attack's).
#
#   scripts/abuse.sh            builds clawx and xmtp-abuse (debug) first
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LIMIT_KB=${CLAWX_ABUSE_RSS_LIMIT_KB:-51200}

cargo build -q -p clawx -p clawx-tests --bin clawx --bin xmtp-abuse

DATA=$(mktemp -d)
LOG="$DATA/clawx.log"
"$ROOT/target/debug/clawx" dev --listen 127.0.0.1:0 --data-dir "$DATA" >"$LOG" 2>&1 &
PID=$!
trap 'kill -INT $PID 2>/dev/null; wait $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
URL=""
for _ in $(seq 1 120); do
  URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$LOG" | head -n 1 || true)
  [ -n "$URL" ] && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG" >&2; echo "clawx dev did not start" >&2; exit 1; }
  sleep 0.5
done
[ -n "$URL" ] || { cat "$LOG" >&2; echo "clawx dev did not start" >&2; exit 1; }

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status"; }
echo "clawx dev at $URL, resident memory at start: $(( $(rss_kb) / 1024 )) MB"
# The tool sends legitimate traffic first, then takes its baseline, replays the attack, and
# fails when an answer is not a clean status or memory grew by CLAWX_ABUSE_RSS_LIMIT_KB.
STATUS=0
CLAWX_ABUSE_PID=$PID CLAWX_ABUSE_RSS_LIMIT_KB=$LIMIT_KB "$ROOT/target/debug/xmtp-abuse" "$URL" || STATUS=$?
kill -0 "$PID" 2>/dev/null || { echo "clawx dev died" >&2; exit 1; }
echo "resident memory at the end: $(( $(rss_kb) / 1024 )) MB"
if [ "$STATUS" -ne 0 ]; then echo "abuse replay failed" >&2; exit 1; fi
echo "abuse replay passed"
