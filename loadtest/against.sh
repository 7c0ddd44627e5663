#!/usr/bin/env bash
# loadtest/against.sh URL — the run.sh load against any running APM server on
# this machine (apm-rs, or Elastic's apm-server for comparison). The server's
# CPU and memory are not measured here (it may not be ours); only what a
# client sees: events/s, MB/s, latency percentiles and status counts.
#
# Phases (PHASES, default "max half"): max rate with STREAMS streams, then a
# fixed rate at half the measured max (p99 at half load). "overload" offers
# 10×STREAMS streams at the measured max rate.
# Environment: DURATION (20s), STREAMS (16), EPR (100), MIX (node | intake |
# rum-v2 | rum-v3), POOL (400), SECRET_TOKEN, API_KEY, OUT (target/loadtest-against),
# CPU_LOAD (pin the generator to this CPU; empty = no pinning), APM_CORPUS.
set -euo pipefail
URL=${1:?usage: loadtest/against.sh URL   (e.g. http://127.0.0.1:8200)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-20s}
STREAMS=${STREAMS:-16}
EPR=${EPR:-100}
MIX=${MIX:-node}
POOL=${POOL:-400}
PHASES=${PHASES:-max half}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/loadtest-against}
CORPUS=${APM_CORPUS:-$ROOT/../shared/corpus}
mkdir -p "$OUT"
cargo build --release -q -p loadtest
GEN=("$TARGET/release/apm-loadgen")
[ -n "${CPU_LOAD:-}" ] && GEN=(taskset -c "$CPU_LOAD" "${GEN[@]}")
AUTH=()
[ -n "${SECRET_TOKEN:-}" ] && AUTH+=(--secret-token "$SECRET_TOKEN")
[ -n "${API_KEY:-}" ] && AUTH+=(--api-key "$API_KEY")

phase() {
  local name=$1
  shift
  echo "== $name: $*"
  "${GEN[@]}" --url "$URL" --corpus "$CORPUS" --mix "$MIX" --events-per-request "$EPR" \
    --pool "$POOL" --duration "$DURATION" "${AUTH[@]}" \
    --json "$OUT/$name.json" --plot "$OUT/$name.png" "$@"
}

MAX_RATE=${MAX_RATE:-}
for p in $PHASES; do
  case $p in
    max)
      phase max --streams "$STREAMS"
      MAX_RATE=$(jq -r '.accepted_per_s|floor' "$OUT/max.json")
      ;;
    half) phase half --streams "$STREAMS" --rate $(( ${MAX_RATE:?run max first or set MAX_RATE} / 2 )) ;;
    overload) phase overload --streams $((STREAMS * 10)) --rate "${MAX_RATE:?}" --timeout 20s ;;
    *) echo "unknown phase $p" >&2; exit 2 ;;
  esac
done
echo "reports and plots in $OUT"
