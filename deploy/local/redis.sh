#!/usr/bin/env bash
# The local Redis `make run` uses: AOF persistence under $TOKENWARDEN_DATA_DIR/redis (./var/redis),
# listening on 127.0.0.1:${TOKENWARDEN_LOCAL_REDIS_PORT:-6379} only.
#   redis.sh start    start it unless it already runs (idempotent)
#   redis.sh stop     stop it, flushing the AOF
#   redis.sh status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
data_dir=${TOKENWARDEN_DATA_DIR:-./var}
dir=$(mkdir -p "$data_dir/redis" && cd "$data_dir/redis" && pwd)
port=${TOKENWARDEN_LOCAL_REDIS_PORT:-6379}
pidfile="$dir/redis.pid"

ours_running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
answering() { redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; }

case "${1:-}" in
  start)
    if ours_running; then echo "local Redis already running on 127.0.0.1:$port" >&2; exit 0; fi
    if answering; then
      echo "error: another Redis already listens on 127.0.0.1:$port; stop it (systemctl stop" \
           "redis-server), or set REDIS_URL=redis://127.0.0.1:$port/0 to use it," \
           "or TOKENWARDEN_LOCAL_REDIS_PORT to start ours elsewhere" >&2
      exit 1
    fi
    redis-server "$here/redis.conf" --port "$port" --dir "$dir" --pidfile "$pidfile" \
      --logfile "$dir/redis.log" --daemonize yes
    for _ in $(seq 1 50); do answering && break; sleep 0.1; done
    answering || { echo "error: Redis did not start; see $dir/redis.log" >&2; exit 1; }
    echo "local Redis on 127.0.0.1:$port, data in $dir" >&2
    ;;
  stop)
    if answering; then redis-cli -h 127.0.0.1 -p "$port" shutdown >/dev/null 2>&1 || true; fi
    for _ in $(seq 1 50); do ours_running || break; sleep 0.1; done
    rm -f "$pidfile"
    ;;
  status)
    if ours_running; then echo "running (pid $(cat "$pidfile"), port $port)"; else echo "stopped"; exit 1; fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
