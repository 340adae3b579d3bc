#!/usr/bin/env bash
# `make run`: start the local Redis unless REDIS_URL is set, then tokenwarden in the foreground.
# Ctrl-C stops tokenwarden, then the Redis this script started.
set -euo pipefail
cd "$(dirname "$0")/../.."
started_redis=
if [ -z "${REDIS_URL:-}" ]; then
  deploy/local/redis.sh start
  started_redis=1
  export REDIS_URL="redis://127.0.0.1:${TOKENWARDEN_LOCAL_REDIS_PORT:-6379}/0"
fi
stop_redis() { [ -n "$started_redis" ] && deploy/local/redis.sh stop || true; }
trap stop_redis EXIT
trap 'exit 130' INT TERM
status=0
.venv/bin/tokenwarden run || status=$?
exit "$status"
