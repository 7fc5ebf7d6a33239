#!/usr/bin/env bash
# `make up`: the whole system for a newcomer, under honcho. Ctrl-C stops everything.
# Set DATABASE_URL, CELERY_BROKER_URL or BULLMQ_REDIS_URL to use your own servers instead.
set -euo pipefail
source "$(dirname "$0")/stack.sh"

ensure_system_packages
ensure_venv requirements-dev.txt  # honcho is a development requirement
export PATH="$ROOT/.venv/bin:$PATH"
cd "$ROOT"

own_pg="" own_redis=""
if [ -z "${DATABASE_URL:-}" ]; then
  start_postgres; own_pg=1
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$PG_DB"
fi
if [ -z "${CELERY_BROKER_URL:-}" ] || [ -z "${BULLMQ_REDIS_URL:-}" ]; then
  start_redis; own_redis=1
  export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:$REDIS_PORT/0}"
  export BULLMQ_REDIS_URL="${BULLMQ_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/1}"
fi
cleanup() {
  # A second Ctrl-C, or the terminal closing, must not leave the servers running.
  trap '' INT TERM HUP
  log "stopping the servers this command started"
  if [ -n "$own_pg" ]; then stop_postgres; fi
  if [ -n "$own_redis" ]; then stop_redis; fi
  log "servers stopped"
}
trap cleanup EXIT
# Ctrl-C reaches honcho too, which stops every process; then leave through the EXIT trap.
trap 'exit 130' INT TERM HUP

export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-config.settings.local}"
export FLOWER_BASIC_AUTH="${FLOWER_BASIC_AUTH:-admin:admin}"
export PORT="${PORT:-8000}"
export FLOWER_PORT="${FLOWER_PORT:-5555}"

python manage.py migrate --noinput
python manage.py ensure_demo_superuser
python manage.py publish_demo_events || log "demo events not published (see above)"

cat <<MSG

  Admin:   http://127.0.0.1:$PORT/admin/   user: admin  password: admin
  Flower:  http://127.0.0.1:$FLOWER_PORT/       basic auth: $FLOWER_BASIC_AUTH
  Queue status: .venv/bin/python manage.py bridge_status
  Ctrl-C stops every process.

MSG
# honcho forwards SIGINT/SIGTERM to every process and waits for them.
honcho -f Procfile.dev start  # runserver reloads on change; the Procfile runs gunicorn
