#!/usr/bin/env bash
# Project-local PostgreSQL and Redis, with their data under $STACK_DIR.
# Sourced by the other scripts; every function is idempotent.
#
#   STACK_DIR   where data, logs and pid files live   (default .dev)
#   PG_PORT     PostgreSQL port on 127.0.0.1            (default 54329)
#   REDIS_PORT  Redis port on 127.0.0.1                 (default 63799)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$ROOT/.dev}"
case "$STACK_DIR" in /*) ;; *) STACK_DIR="$ROOT/$STACK_DIR" ;; esac
PG_PORT="${PG_PORT:-54329}"
REDIS_PORT="${REDIS_PORT:-63799}"
PG_DB="${PG_DB:-crm}"
# fsync of the PostgreSQL cluster: on for `make up` and the bench; `start_test_stack` turns it off for the
# test cluster (docs/decisions.md, "fsync off in the test cluster only").
PG_FSYNC="${PG_FSYNC:-on}"

log() { printf '[stack] %s\n' "$*" >&2; }
# One sentence on what cannot work and what to do, then stop.
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "installing packages needs root: run this as root or with sudo, or install them yourself ($*)."
  fi
}

apt_install() {
  if [ -z "${_APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    _APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

pg_bin() {
  # Debian's packages keep the server binaries off PATH.
  if command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$found" ]; then echo "$found"; fi
}

pg_tool() {
  # The client tools may live apart from the server binaries (Debian's wrappers in /usr/bin).
  local bin
  bin="$(pg_bin)"
  if [ -x "$bin/$1" ]; then echo "$bin/$1"; else command -v "$1"; fi
}

ensure_system_packages() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ -n "$(pg_bin)" ] || missing+=(postgresql)
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  # Debian starts a system redis on 6379 when it installs one; we never use it.
}

# The browser tests drive Debian's chromium through Playwright, which never downloads a browser of its own.
ensure_chromium() {
  if [ ! -x /usr/bin/chromium ]; then
    log "installing Debian package: chromium"
    apt_install chromium
  fi
}

# initdb refuses to run as root, so root runs PostgreSQL as the `postgres` user.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Where PostgreSQL keeps its data. Root runs the server as `postgres`, which cannot enter a
# checkout inside a private directory (root's mode-700 home, a private temporary directory).
# Then the data lives under PostgreSQL's own home, one directory per checkout and stack, and
# the user's directories keep their permissions: we never chmod or chown them.
pg_data_dir() {
  if [ "$(id -u)" -ne 0 ] || as_pg test -x "$STACK_DIR" 2>/dev/null; then
    echo "$STACK_DIR/pg"
    return 0
  fi
  local home key
  home="$(getent passwd postgres | cut -d: -f6)"
  key="$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)"
  # Short: the server's Unix socket lives in the data directory (a socket path has at most 107 bytes).
  echo "${home:-/var/lib/postgresql}/crm-dev/$(basename "$ROOT" | cut -c1-24)-$key/pg"
}

prepare_pg_data_dir() {
  local data="$1"
  if [ "$(id -u)" -ne 0 ]; then
    mkdir -p "$data"
    return 0
  fi
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  mkdir -p "$data"
  # Only the data directory (ours, or one we made under PostgreSQL's home) changes hands.
  chown postgres: "$data"
  chmod 700 "$data"
  as_pg test -w "$data" \
    || die "the postgres user cannot write $data; run from a directory it can reach, or set DATABASE_URL to a PostgreSQL server of your own."
}

start_postgres() {
  local bin data
  bin="$(pg_bin)"
  [ -n "$bin" ] || die "PostgreSQL's server binaries (initdb, pg_ctl) are not installed; install the postgresql package, or set DATABASE_URL to a PostgreSQL server of your own."
  mkdir -p "$STACK_DIR"
  data="$(pg_data_dir)"
  prepare_pg_data_dir "$data"
  if [ "$data" != "$STACK_DIR/pg" ]; then
    log "the postgres user cannot reach $STACK_DIR: PostgreSQL data is in $data"
  fi
  echo "$data" >"$STACK_DIR/pg-data-dir"
  if [ ! -s "$data/PG_VERSION" ]; then
    log "initdb $data"
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "postgres already running on $PG_PORT"
  else
    log "starting postgres on 127.0.0.1:$PG_PORT"
    as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $data -c max_connections=200 -c shared_buffers=256MB -c fsync=$PG_FSYNC" >/dev/null \
      || die "PostgreSQL did not start on port $PG_PORT; its log is $data/server.log."
  fi
  "$(pg_tool psql)" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='$PG_DB'" | grep -q 1 \
    || "$(pg_tool createdb)" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$PG_DB"
}

stop_postgres() {
  local bin data
  bin="$(pg_bin)"
  data="$(cat "$STACK_DIR/pg-data-dir" 2>/dev/null || echo "$STACK_DIR/pg")"
  [ -s "$data/PG_VERSION" ] || return 0
  as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>"$STACK_DIR/pg_stop.err" \
    || log "postgres did not stop cleanly: $(cat "$STACK_DIR/pg_stop.err")"
}

start_redis() {
  local dir="$STACK_DIR/redis"
  mkdir -p "$dir"
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "redis already running on $REDIS_PORT"
    return 0
  fi
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  # BullMQ and Celery both need every key kept: AOF persistence and no eviction.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
    --save "" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  for _ in $(seq 1 50); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "redis did not start; see $dir/redis.log"
  return 1
}

stop_redis() {
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

stack_env() {
  # The URLs the Django settings read; Redis db 0 is Celery's, db 1 holds the BullMQ queues.
  echo "export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB"
  echo "export CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0"
  echo "export BULLMQ_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/1"
}

ensure_venv() {
  local venv="$ROOT/.venv" req="${1:-requirements.txt}" stamp
  if [ ! -x "$venv/bin/python" ]; then
    log "creating $venv"
    python3 -m venv "$venv"
  fi
  stamp="$venv/.installed-$(cat "$ROOT/requirements.txt" "$ROOT/$req" | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    log "installing $req"
    "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$ROOT/$req"
    touch "$stamp"
  fi
}

ensure_node_modules() {
  local dir="$ROOT/tests/node"
  if [ ! -d "$dir/node_modules/bullmq" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    log "npm ci in tests/node"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

start_test_stack() {
  # The test servers and environment, shared by `make test` and `make mutation`: installs what is
  # missing, starts PostgreSQL and Redis (stopped again when the calling script exits), exports the URLs.
  ensure_system_packages
  ensure_venv requirements-dev.txt
  ensure_node_modules
  # Exported: the fault tests restart this cluster with `start_postgres` in a child shell.
  export PG_FSYNC=off
  start_postgres
  start_redis
  trap 'stop_redis; stop_postgres' EXIT
  eval "$(stack_env)"
  export DJANGO_SETTINGS_MODULE=config.settings.test
  export PATH="$ROOT/.venv/bin:$PATH"
  cd "$ROOT"
}
