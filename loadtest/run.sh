#!/usr/bin/env bash
# loadtest/run.sh [PROFILE] — measure apm-rs on this machine.
#
# Builds release binaries, then for each phase starts a fresh ES double
# (fast mode: counts bulk documents only) and a fresh apm-rs with the pipeline
# PROFILE (default: default), apm-rs pinned to CPU 0 and the generator plus the
# double pinned to CPU 1, and prints:
#   * events per server CPU-second (accepted events / Δ(utime+stime) of the
#     apm-rs process, measured from before the load until every accepted event
#     is indexed, so draining the pipeline is paid for);
#   * peak RSS (VmHWM) of apm-rs;
#   * request latency percentiles (from apm-loadgen);
#   * the accounting check: sent = accepted + rejected (generator),
#     accepted (generator) = indexed (ES double), and the server's own
#     counters from its /metrics listener (received = rejected + accepted,
#     accepted = indexed + failed, accepted = the generator's accepted).
#
# Phases (PHASES, default "max half overload"):
#   max       max rate, STREAMS streams                       → capacity
#   half      fixed rate at half the measured max              → p99 latency
#   overload  10×STREAMS streams at the measured max rate while the ES double
#             answers every request OVERLOAD_ES_LATENCY_MS late, which cuts the
#             server's drain rate to roughly a tenth: offered ≈ 10× capacity
#             → 503 within queue_wait, RSS bounded by the memory budget.
#
# Environment: DURATION (20s, per phase), STREAMS (16), EPR (events per
# request, 100), MIX (node; otlp = OTLP/HTTP protobuf), OTLP_GRPC (set, with
# MIX=otlp: the exports go over OTLP/gRPC to the server's gRPC listener on
# GRPC_PORT, default 24317), POOL (400 pre-built bodies; 0 = fresh body per
# request), APM_PORT (28200), ES_PORT (29200), OUT (target/loadtest),
# HALF_RATE / MAX_RATE (skip measuring), OVERLOAD_ES_LATENCY_MS (2000),
# CARGO_TARGET_DIR (target), SKIP_BUILD (set: use the binaries as built), APM_CORPUS (../shared/corpus), EXTRA_E (extra
# `-E k=v` settings for apm-rs, space separated), METRICS_PORT (29201, the
# apm-rs /metrics listener), APM_PRELOAD (a library to LD_PRELOAD into apm-rs
# only, e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 to try an allocator),
# OUTPUT (elasticsearch | kafka: with kafka, apm-rs writes to the broker of
# `.ci/kafka.sh start` (topic KAFKA_TOPIC, default apm-loadtest, KAFKA_PARTITIONS
# partitions, default 4) instead of the ES double, and "indexed" is the
# server's own events_indexed counter, i.e. records the broker acknowledged;
# the overload phase needs the ES double and is skipped).
set -euo pipefail

PROFILE=${1:-default}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-20s}
STREAMS=${STREAMS:-16}
EPR=${EPR:-100}
MIX=${MIX:-node}
POOL=${POOL:-400}
APM_PORT=${APM_PORT:-28200}
ES_PORT=${ES_PORT:-29200}
METRICS_PORT=${METRICS_PORT:-29201}
GRPC_PORT=${GRPC_PORT:-24317}
GRPC_E=()
GRPC_ARGS=()
if [ -n "${OTLP_GRPC:-}" ]; then
  [ "$MIX" = otlp ] || { echo "OTLP_GRPC needs MIX=otlp" >&2; exit 2; }
  GRPC_E=(-E "apm-server.otlp.grpc.host=127.0.0.1:$GRPC_PORT")
  GRPC_ARGS=(--grpc "http://127.0.0.1:$GRPC_PORT")
fi
PHASES=${PHASES:-max half overload}
OVERLOAD_ES_LATENCY_MS=${OVERLOAD_ES_LATENCY_MS:-2000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/loadtest}
CORPUS=${APM_CORPUS:-$ROOT/../shared/corpus}
CPU_SERVER=${CPU_SERVER:-0}
CPU_LOAD=${CPU_LOAD:-1}
OUTPUT=${OUTPUT:-elasticsearch}
KAFKA_TOPIC=${KAFKA_TOPIC:-apm-loadtest}
KAFKA_PARTITIONS=${KAFKA_PARTITIONS:-4}
mkdir -p "$OUT"
if [ "$OUTPUT" = kafka ]; then
  KAFKA_BOOTSTRAP=$("$ROOT/.ci/kafka.sh" start)
  "$ROOT/.ci/kafka.sh" topic "$KAFKA_TOPIC" "$KAFKA_PARTITIONS"
  PHASES=${PHASES/overload/}
fi

if [ -z "${SKIP_BUILD:-}" ]; then
  # note: build.rs embeds the git commit, so every commit relinks apm-rs
  echo "== building release (apm-rs, es-double, apm-loadgen)"
  cargo build --release -q -p apm-rs -p es-double -p loadtest
fi
BIN=$TARGET/release
CLK=$(getconf CLK_TCK)

PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# metric NAME: sum of a Prometheus series (all label sets) from apm-rs /metrics
metric() {
  curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null |
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%d", s}'
}
es_docs() {
  if [ "$OUTPUT" = kafka ]; then
    metric apm_rs_events_indexed_total
  else
    curl -fsS "http://127.0.0.1:$ES_PORT/_double/stats" | jq -r .docs
  fi
}
wait_http() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

start_es() {
  taskset -c "$CPU_LOAD" "$BIN/es-double" --listen "127.0.0.1:$ES_PORT" --fast --workers 1 \
    >"$OUT/es-double.log" 2>&1 &
  ES_PID=$!
  PIDS+=("$ES_PID")
  wait_http "http://127.0.0.1:$ES_PORT/_double/stats"
}

start_apm() {
  local extra=()
  for kv in ${EXTRA_E:-}; do extra+=(-E "$kv"); done
  local output=(-E "output.elasticsearch.hosts=[\"http://127.0.0.1:$ES_PORT\"]")
  if [ "$OUTPUT" = kafka ]; then
    output=(-E "output.kafka.hosts=[\"$KAFKA_BOOTSTRAP\"]" -E "output.kafka.topic=$KAFKA_TOPIC")
  fi
  env ${APM_PRELOAD:+LD_PRELOAD=$APM_PRELOAD} \
    taskset -c "$CPU_SERVER" "$BIN/apm-rs" --pipeline "$PROFILE" \
    -E "apm-server.host=127.0.0.1:$APM_PORT" \
    "${output[@]}" \
    -E "monitoring.metrics_host=127.0.0.1:$METRICS_PORT" \
    "${GRPC_E[@]}" "${extra[@]}" >"$OUT/apm-rs-$1.log" 2>&1 &
  APM_PID=$!
  PIDS+=("$APM_PID")
  wait_http "http://127.0.0.1:$APM_PORT/"
}

stop_all() {
  kill -TERM "$APM_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$APM_PID" 2>/dev/null || break; sleep 0.1; done
  kill "$ES_PID" 2>/dev/null || true
  wait "$APM_PID" 2>/dev/null || true
  wait "$ES_PID" 2>/dev/null || true
}

# run_phase NAME GENERATOR-ARGS... ; sets ACCEPTED, EPS_CPU
run_phase() {
  local name=$1
  shift
  echo
  echo "== phase $name (profile $PROFILE): apm-loadgen $*"
  start_es
  start_apm "$name"
  if [ "$name" = overload ]; then
    curl -fsS -XPOST "http://127.0.0.1:$ES_PORT/_double/faults" \
      -H 'content-type: application/json' -d "{\"latency_ms\": $OVERLOAD_ES_LATENCY_MS}" >/dev/null
  fi
  local t0 c0 t1 c1 docs waited
  c0=$(cpu_ticks "$APM_PID")
  t0=$(date +%s.%N)
  taskset -c "$CPU_LOAD" "$BIN/apm-loadgen" --url "http://127.0.0.1:$APM_PORT" \
    --corpus "$CORPUS" --mix "$MIX" --events-per-request "$EPR" --pool "$POOL" \
    --duration "$DURATION" --json "$OUT/$name.json" --plot "$OUT/$name.png" "${GRPC_ARGS[@]}" "$@"
  ACCEPTED=$(jq -r .events_accepted "$OUT/$name.json")
  if [ "$name" = overload ]; then
    curl -fsS -XPOST "http://127.0.0.1:$ES_PORT/_double/faults" \
      -H 'content-type: application/json' -d '{}' >/dev/null
  fi
  # wait (≤ 30 s) until every accepted event and every metric document
  # harvested so far is indexed (a harvest may end while waiting)
  waited=0
  docs=$(es_docs)
  while [ "$docs" -lt $((ACCEPTED - $(metric apm_rs_events_discarded_total) + $(metric apm_rs_aggregation_documents_total))) ] && [ "$waited" -lt 300 ]; do
    sleep 0.1
    waited=$((waited + 1))
    docs=$(es_docs)
  done
  c1=$(cpu_ticks "$APM_PID")
  local m_recv m_acc m_rej m_idx m_fail m_budget m_disc m_agg
  m_recv=$(metric apm_rs_events_received_total)
  m_disc=$(metric apm_rs_events_discarded_total)
  m_agg=$(metric apm_rs_aggregation_documents_total)
  m_acc=$(metric apm_rs_events_accepted_total)
  m_rej=$(metric apm_rs_events_rejected_total)
  m_idx=$(metric apm_rs_events_indexed_total)
  m_fail=$(metric apm_rs_events_failed_total)
  m_budget=$(metric apm_rs_memory_budget_limit_bytes)
  local m_body m_raw
  m_body=$(metric apm_rs_output_es_bulk_body_bytes_total)
  m_raw=$(metric apm_rs_output_es_bulk_raw_bytes_total)
  t1=$(date +%s.%N)
  local hwm
  hwm=$(hwm_kb "$APM_PID")
  stop_all
  local server_line
  server_line=$(grep -a "shutdown complete" "$OUT/apm-rs-$name.log" | tail -1 || true)
  local cpu_s wall_s
  cpu_s=$(echo "($c1 - $c0) / $CLK" | bc -l)
  wall_s=$(echo "$t1 - $t0" | bc -l)
  EPS_CPU=$(echo "if ($cpu_s > 0) $ACCEPTED / $cpu_s else 0" | bc -l)
  jq -r '"  generator: sent \(.events_sent) accepted \(.events_accepted) in \(.elapsed_s|floor)s = \(.accepted_per_s|floor) events/s, \(.wire_mb_per_s*100|floor/100) MB/s gzip (\(.raw_mb_per_s*100|floor/100) MB/s ndjson)\n  latency ms: p50 \(.latency_ms.p50) p90 \(.latency_ms.p90) p99 \(.latency_ms.p99) p99.9 \(.latency_ms.p999) max \(.latency_ms.max)\n  status: \(.status|tostring)"' "$OUT/$name.json"
  printf '  server CPU: %.2f s over %.1f s wall (%.0f%% of one core) → %.0f events per server CPU-second\n' \
    "$cpu_s" "$wall_s" "$(echo "100 * $cpu_s / $wall_s" | bc -l)" "$EPS_CPU"
  printf '  server peak RSS (VmHWM): %.1f MiB\n' "$(echo "$hwm / 1024" | bc -l)"
  if [ "${m_idx:-0}" -gt 0 ] && [ "${m_body:-0}" -gt 0 ]; then
    printf '  bulk bytes per indexed document: %.0f sent (%.0f uncompressed, %.1f×)\n' \
      "$(echo "$m_body / $m_idx" | bc -l)" "$(echo "$m_raw / $m_idx" | bc -l)" "$(echo "$m_raw / $m_body" | bc -l)"
  fi
  local sent rejected ok=yes
  sent=$(jq -r .events_sent "$OUT/$name.json")
  rejected=$(jq -r .events_not_accepted "$OUT/$name.json")
  # the double also holds the aggregated metric documents written so far
  # (intervals that ended during the phase) and lacks discarded events
  [ "$docs" -eq $((ACCEPTED - m_disc + m_agg)) ] || ok=NO
  echo "  accounting: sent $sent = accepted $ACCEPTED + not accepted $rejected; indexed ($OUTPUT) $docs (= accepted − discarded $m_disc + aggregated $m_agg) → $( [ $ok = yes ] && echo OK || echo MISMATCH)"
  echo "  /metrics: received $m_recv = rejected $m_rej + accepted $m_acc; accepted $m_acc + aggregated $m_agg = indexed $m_idx + failed $m_fail + discarded $m_disc → $( [ "$m_recv" -eq $((m_rej + m_acc)) ] && [ $((m_acc + m_agg)) -eq $((m_idx + m_fail + m_disc)) ] && [ "$m_acc" -eq "$ACCEPTED" ] && echo "OK (= generator's accepted)" || echo MISMATCH); memory budget $((m_budget / 1048576)) MiB"
  echo "  server log: ${server_line:-<no shutdown line in $OUT/apm-rs-$name.log>}" | sed -E 's/\x1b\[[0-9;]*m//g'
  jq -n --arg phase "$name" --arg profile "$PROFILE" --argjson cpu "$cpu_s" --argjson wall "$wall_s" \
    --argjson hwm "$hwm" --argjson docs "$docs" --argjson eps "$EPS_CPU" \
    '{phase:$phase, profile:$profile, server_cpu_s:$cpu, wall_s:$wall, server_vmhwm_kib:$hwm, es_docs:$docs, events_per_server_cpu_s:$eps}' \
    >"$OUT/$name.server.json"
}

echo "commit: $(git rev-parse --short HEAD)  profile: $PROFILE  mix: $MIX${OTLP_GRPC:+ (OTLP/gRPC)}  output: $OUTPUT  out: $OUT"
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
MAX_RATE=${MAX_RATE:-}
for phase in $PHASES; do
  case $phase in
    max)
      run_phase max --streams "$STREAMS"
      MAX_RATE=$(jq -r '.accepted_per_s|floor' "$OUT/max.json")
      ;;
    half)
      : "${MAX_RATE:?run the max phase first or set MAX_RATE}"
      HALF_RATE=${HALF_RATE:-$((MAX_RATE / 2))}
      run_phase half --streams "$STREAMS" --rate "$HALF_RATE"
      ;;
    overload)
      : "${MAX_RATE:?run the max phase first or set MAX_RATE}"
      run_phase overload --streams $((STREAMS * 10)) --rate "$MAX_RATE" --timeout 20s
      ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
echo
echo "reports, plots and logs in $OUT"
