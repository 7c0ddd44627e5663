#!/usr/bin/env bash
# A real Redis for the Redis output tests (tests/outputs_redis.rs):
# Debian's redis-server (installed with apt when missing), no persistence,
# listening on 127.0.0.1 only.
#
#   .ci/redis.sh start   install if needed, start, wait until it answers, print URL
#   .ci/redis.sh stop    stop the server this script started
#   .ci/redis.sh status  print the URL if running, else exit 1
#
# Stdout carries only the URL (`APM_RS_REDIS_URL=$(.ci/redis.sh start)`);
# progress goes to stderr. State (pid, port, log) lives in $REDIS_STATE
# (default $HOME/.cache/apm-rs/redis).
set -euo pipefail
STATE="${REDIS_STATE:-$HOME/.cache/apm-rs/redis}"
PORT_BASE="${REDIS_PORT_BASE:-19380}"
mkdir -p "$STATE"

log() { echo "redis: $*" >&2; }

ensure_tools() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    log "installing redis-server with apt"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >&2
  fi
}

running_pid() {
  local pid
  pid=$(cat "$STATE/pid" 2>/dev/null) || return 1
  # Only our server: a stale pid file must never make `stop` kill another process.
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "redis-server 127.0.0.1:$(cat "$STATE/port")" \
    && echo "$pid"
}

url() { echo "redis://127.0.0.1:$(cat "$STATE/port")"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  if running_pid >/dev/null; then
    url
    return
  fi
  ensure_tools
  local port=$PORT_BASE
  while ! port_free "$port"; do
    port=$((port + 1))
    [ "$port" -lt $((PORT_BASE + 40)) ] || { log "no free port from $PORT_BASE"; exit 1; }
  done
  echo "$port" > "$STATE/port"
  setsid redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --dir "$STATE" --daemonize no > "$STATE/log" 2>&1 < /dev/null &
  echo $! > "$STATE/pid"
  for _ in $(seq 50); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
      log "ready at $(url) (pid $(cat "$STATE/pid"))"
      url
      return
    fi
    sleep 0.2
  done
  log "not ready; its log:"; tail -n 20 "$STATE/log" >&2 || true
  exit 1
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "stopped pid $pid"
  fi
  rm -f "$STATE/pid"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running_pid >/dev/null && url || exit 1 ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
