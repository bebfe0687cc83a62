#!/usr/bin/env bash
# The one test command. Makes sure PostgreSQL and Redis run on 127.0.0.1 (starting them when
# installed and stopped, installing them when missing), sets the test URLs, and runs every test
# of the workspace; the storage, cache and end-to-end suites run on SQLite + memory and on
# PostgreSQL + Redis.
#
#   scripts/test.sh              everything
#   scripts/test.sh -E 'test(x)' extra arguments go to the test runner (cargo nextest / cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\n==> %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

APT_UPDATED=""
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install $*: no apt-get on this machine; install them and re-run" >&2
    exit 1
  fi
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for <seconds> <command...>
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
    sleep 0.5
  done
}

PG_USER=${CLAWX_TEST_PG_USER:-postgres}
PG_PASSWORD=${CLAWX_TEST_PG_PASSWORD:-postgres}
psql_test() { PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p 5432 -U "$PG_USER" -v ON_ERROR_STOP=1 -qAt "$@"; }

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! command -v pg_isready >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    log "starting PostgreSQL"
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$version" ]; then apt_install postgresql postgresql-client; version=$(ls /etc/postgresql | sort -V | tail -n 1); fi
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for 30 pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL did not start" >&2; exit 1; }
  fi
  if ! psql_test -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    # A fresh Debian cluster wants a password over TCP: give the superuser the test password.
    log "setting the PostgreSQL test password"
    if [ "$(id -u)" -eq 0 ]; then
      su postgres -c "psql -qc \"ALTER USER postgres PASSWORD '$PG_PASSWORD'\""
    else
      $SUDO -u postgres psql -qc "ALTER USER postgres PASSWORD '$PG_PASSWORD'"
    fi
  fi
  psql_test -d postgres -c 'DROP DATABASE IF EXISTS clawx_test WITH (FORCE)' -c 'CREATE DATABASE clawx_test'
  export CLAWX_TEST_DATABASE_URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/clawx_test"
}

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }

ensure_redis() {
  if ! redis_up; then
    if ! command -v redis-server >/dev/null 2>&1; then
      log "installing Redis"
      apt_install redis-server
    fi
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_for 15 redis_up || { echo "Redis did not start" >&2; exit 1; }
  fi
  export CLAWX_TEST_REDIS_URL="redis://127.0.0.1:6379"
}

log "checking PostgreSQL and Redis"
ensure_postgres
ensure_redis
export CLAWX_TEST_REQUIRE_BACKENDS=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

log "running the test suite (SQLite + memory and PostgreSQL + Redis)"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
