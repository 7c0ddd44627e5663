#!/usr/bin/env bash
# A real Elasticsearch-compatible engine for the tests (issue 12): one
# OpenSearch 2.19 node started in-process by engine/ (Maven Central only),
# listening on 127.0.0.1. See engine/README.md.
#
#   .ci/engine.sh start   build if needed, start, wait until ready, print URL
#   .ci/engine.sh spawn   build and start in the background (returns at once)
#   .ci/engine.sh wait    wait (<= ENGINE_WAIT_SECS, default 180) for a spawned
#                         engine; prints its URL on stdout, logs on failure
#   .ci/engine.sh stop    stop the engine this script started
#   .ci/engine.sh status  print the URL if running, else exit 1
#
# Stdout carries only the URL (for `APM_RS_ENGINE_URL=$(.ci/engine.sh wait)`);
# progress goes to stderr. State (pid, port, log, node data) lives in
# $ENGINE_STATE (default $HOME/.cache/apm-rs/engine); Maven's repository in
# $ENGINE_M2 (default $HOME/.cache/apm-rs/m2, reused between runs).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${ENGINE_STATE:-$HOME/.cache/apm-rs/engine}"
M2="${ENGINE_M2:-$HOME/.cache/apm-rs/m2}"
PORT_BASE="${ENGINE_PORT_BASE:-19260}"
WAIT_SECS="${ENGINE_WAIT_SECS:-180}"
mkdir -p "$STATE" "$M2"

log() { echo "engine: $*" >&2; }

ensure_tools() {
  local need=()
  if ! command -v java >/dev/null 2>&1 || ! java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])'; then
    need+=(openjdk-17-jdk-headless)
  fi
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} with apt"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  fi
}

build() {
  ensure_tools
  local t0; t0=$(date +%s)
  # Rebuild only when engine/ changed since the last build, the Maven
  # repository is another one, or a jar of the classpath has gone.
  local stamp="$ROOT/engine/target/.built" cpfile="$ROOT/engine/target/classpath.txt"
  if [ -f "$stamp" ] && [ -f "$cpfile" ] && [ "$(cat "$stamp")" = "$M2" ] \
     && [ -z "$(find "$ROOT/engine/pom.xml" "$ROOT/engine/src" -newer "$stamp" -print -quit)" ] \
     && tr ':' '\n' < "$cpfile" | while read -r jar; do [ -f "$jar" ] || exit 1; done; then
    log "engine/ is built"
    return
  fi
  log "building engine/ with maven (repository $M2)"
  (cd "$ROOT/engine" && mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$M2" package) >&2
  echo "$M2" > "$stamp"
  log "build took $(( $(date +%s) - t0 ))s"
}

running_pid() {
  local pid
  pid=$(cat "$STATE/pid" 2>/dev/null) || return 1
  # Only our node: a stale pid file must never make `stop` kill another process.
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'apmrs.engine.EngineMain' \
    && echo "$pid"
}

url() { echo "http://127.0.0.1:$(cat "$STATE/port")"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

launch() {
  if running_pid >/dev/null; then
    log "already running at $(url)"
    return
  fi
  build
  local port=$PORT_BASE
  while ! port_free "$port" || ! port_free $((port + 100)); do
    port=$((port + 1))
    [ "$port" -lt $((PORT_BASE + 40)) ] || { log "no free port from $PORT_BASE"; exit 1; }
  done
  echo "$port" > "$STATE/port"
  rm -f "$STATE/ready"
  local cp; cp="$ROOT/engine/target/classes:$(cat "$ROOT/engine/target/classpath.txt")"
  date +%s > "$STATE/started_at"
  # setsid: the node must not get the terminal's signals; stop kills it by pid.
  setsid java -Xms512m -Xmx1g -XX:+UseSerialGC -cp "$cp" apmrs.engine.EngineMain \
    "$port" "$STATE/node" > "$STATE/log" 2>&1 < /dev/null &
  echo $! > "$STATE/pid"
  log "started pid $! on port $port (log $STATE/log)"
}

wait_ready() {
  local deadline=$(( $(date +%s) + WAIT_SECS ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! running_pid >/dev/null; then
      # spawn may still be building (its build runs before the pid exists).
      if [ -f "$STATE/spawning" ]; then sleep 1; continue; fi
      log "engine is not running; its log:"; tail -n 40 "$STATE/log" >&2 2>/dev/null || true
      exit 1
    fi
    if grep -q "ENGINE READY" "$STATE/log" 2>/dev/null \
       && curl -fsS "$(url)/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1; then
      local t0; t0=$(cat "$STATE/started_at" 2>/dev/null || date +%s)
      log "ready at $(url) ($(( $(date +%s) - t0 ))s after the JVM started)"
      url
      return
    fi
    sleep 1
  done
  log "not ready after ${WAIT_SECS}s; its log:"; tail -n 40 "$STATE/log" >&2 2>/dev/null || true
  exit 1
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    log "stopped pid $pid"
  fi
  rm -f "$STATE/pid" "$STATE/spawning"
}

case "${1:-}" in
  start) launch; wait_ready ;;
  spawn)
    touch "$STATE/spawning"
    # Build and launch in the background so the JVM boots while CI lints.
    ( trap 'rm -f "$STATE/spawning"' EXIT; launch ) > "$STATE/spawn.log" 2>&1 < /dev/null &
    log "spawning in the background (log $STATE/spawn.log)"
    ;;
  wait)
    if ! wait_ready; then cat "$STATE/spawn.log" >&2 2>/dev/null || true; exit 1; fi ;;
  stop) stop ;;
  status) running_pid >/dev/null && url || exit 1 ;;
  *) echo "usage: $0 start|spawn|wait|stop|status" >&2; exit 2 ;;
esac
