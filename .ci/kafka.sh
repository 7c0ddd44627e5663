#!/usr/bin/env bash
# A real Apache Kafka for the Kafka output tests (tests/outputs_kafka.rs):
# kafka_2.13 from Maven Central (kafka/pom.xml builds only the classpath),
# one combined broker+controller node in KRaft mode (no ZooKeeper), on
# 127.0.0.1: PLAINTEXT on PORT, the controller on PORT+1, SASL_PLAINTEXT
# (PLAIN, user `apm`, password `apm-secret`) on PORT+2. Topics are not
# created automatically: the tests create the ones they use.
#
#   .ci/kafka.sh start   build if needed, start, wait until ready, print host:port
#   .ci/kafka.sh spawn   build and start in the background (returns at once)
#   .ci/kafka.sh wait    wait (<= KAFKA_WAIT_SECS, default 180) for a spawned
#                        broker; prints host:port on stdout, logs on failure
#   .ci/kafka.sh stop    stop the broker this script started
#   .ci/kafka.sh status  print host:port if running, else exit 1
#   .ci/kafka.sh pause   freeze the broker (SIGSTOP): it accepts connections but
#                        answers nothing, like a broker that hangs or is cut off
#   .ci/kafka.sh resume  let a paused broker go on (SIGCONT)
#   .ci/kafka.sh topic NAME PARTITIONS   create a topic if it does not exist
#
# Stdout carries only the bootstrap address
# (`APM_RS_KAFKA_BOOTSTRAP=$(.ci/kafka.sh wait)`); progress goes to stderr.
# State (pid, port, log, data) lives in $KAFKA_STATE (default
# $HOME/.cache/apm-rs/kafka); Maven's repository in $KAFKA_M2 (default
# $HOME/.cache/apm-rs/m2, shared with the engine).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${KAFKA_STATE:-$HOME/.cache/apm-rs/kafka}"
M2="${KAFKA_M2:-$HOME/.cache/apm-rs/m2}"
PORT_BASE="${KAFKA_PORT_BASE:-19490}"
WAIT_SECS="${KAFKA_WAIT_SECS:-180}"
mkdir -p "$STATE" "$M2"

log() { echo "kafka: $*" >&2; }

ensure_tools() {
  local need=()
  if ! command -v java >/dev/null 2>&1 || ! java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])'; then
    need+=(openjdk-17-jdk-headless)
  fi
  command -v mvn >/dev/null 2>&1 || need+=(maven)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} with apt"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  fi
}

build() {
  ensure_tools
  local stamp="$ROOT/kafka/target/.built" cpfile="$ROOT/kafka/target/classpath.txt"
  if [ -f "$stamp" ] && [ -f "$cpfile" ] && [ "$(cat "$stamp")" = "$M2" ] \
     && [ -z "$(find "$ROOT/kafka/pom.xml" -newer "$stamp" -print -quit)" ] \
     && tr ':' '\n' < "$cpfile" | while read -r jar; do [ -f "$jar" ] || exit 1; done; then
    log "kafka/ is built"
    return
  fi
  log "resolving kafka/ with maven (repository $M2)"
  (cd "$ROOT/kafka" && mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$M2" package) >&2
  echo "$M2" > "$stamp"
}

running_pid() {
  local pid
  pid=$(cat "$STATE/pid" 2>/dev/null) || return 1
  # Only our broker: a stale pid file must never make `stop` kill another process.
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $STATE/server.properties" \
    && echo "$pid"
}

addr() { echo "127.0.0.1:$(cat "$STATE/port")"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

launch() {
  if running_pid >/dev/null; then
    log "already running at $(addr)"
    return
  fi
  build
  local port=$PORT_BASE
  while ! port_free "$port" || ! port_free $((port + 1)) || ! port_free $((port + 2)); do
    port=$((port + 3))
    [ "$port" -lt $((PORT_BASE + 60)) ] || { log "no free ports from $PORT_BASE"; exit 1; }
  done
  echo "$port" > "$STATE/port"
  rm -rf "$STATE/data"
  cat > "$STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((port + 1))
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1)),SASL_PLAINTEXT://127.0.0.1:$((port + 2))
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$((port + 2))
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="apm" password="apm-secret" user_apm="apm-secret";
log.dirs=$STATE/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=1048588
PROPS
  cat > "$STATE/log4j.properties" <<'LOG4J'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka=WARN
log4j.logger.kafka=INFO
LOG4J
  local cp; cp="$(cat "$ROOT/kafka/target/classpath.txt")"
  java -cp "$cp" kafka.tools.StorageTool format -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)" \
    -c "$STATE/server.properties" --ignore-formatted > "$STATE/format.log" 2>&1
  date +%s > "$STATE/started_at"
  # setsid: the broker must not get the terminal's signals; stop kills it by pid.
  setsid java -Xms256m -Xmx512m -XX:+UseSerialGC -Dlog4j.configuration="file:$STATE/log4j.properties" \
    -cp "$cp" kafka.Kafka "$STATE/server.properties" \
    > "$STATE/log" 2>&1 < /dev/null &
  echo $! > "$STATE/pid"
  log "started pid $! on port $port (log $STATE/log)"
}

wait_ready() {
  local deadline=$(( $(date +%s) + WAIT_SECS ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if ! running_pid >/dev/null; then
      if [ -f "$STATE/spawning" ]; then sleep 1; continue; fi
      log "broker is not running; its log:"; tail -n 40 "$STATE/log" >&2 2>/dev/null || true
      exit 1
    fi
    if grep -q "Kafka Server started" "$STATE/log" 2>/dev/null; then
      local t0; t0=$(cat "$STATE/started_at" 2>/dev/null || date +%s)
      log "ready at $(addr) ($(( $(date +%s) - t0 ))s after the JVM started)"
      addr
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
    ( trap 'rm -f "$STATE/spawning"' EXIT; launch ) > "$STATE/spawn.log" 2>&1 < /dev/null &
    log "spawning in the background (log $STATE/spawn.log)"
    ;;
  wait)
    if ! wait_ready; then cat "$STATE/spawn.log" >&2 2>/dev/null || true; exit 1; fi ;;
  stop) stop ;;
  status) running_pid >/dev/null && addr || exit 1 ;;
  pause) kill -STOP "$(running_pid)" ;;
  topic)
    java -cp "$(cat "$ROOT/kafka/target/classpath.txt")" org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$(addr)" --create --if-not-exists --topic "${2:?topic name}" \
      --partitions "${3:-1}" --replication-factor 1 >&2 ;;
  resume) kill -CONT "$(running_pid)" ;;
  *) echo "usage: $0 start|spawn|wait|stop|status|pause|resume|topic" >&2; exit 2 ;;
esac
