#!/usr/bin/env bash
# Installs the published Elastic agents that tests/agents.rs runs against
# apm-rs: Python elastic-apm (venv), Node.js elastic-apm-node and the browser
# agent @elastic/apm-rum with playwright-core (npm ci), and Debian's chromium;
# and for tests/otlp_sdk.rs the OpenTelemetry Python SDK (venv) and Node.js SDK
# (npm ci).
# Everything goes under $APM_RS_AGENTS_DIR (default $HOME/.cache/apm-rs/agents);
# a stamp per agent skips the reinstall while its pinned lock file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DIR="${APM_RS_AGENTS_DIR:-$HOME/.cache/apm-rs/agents}"
NPM_CACHE="${NPM_CONFIG_CACHE:-$HOME/.cache/apm-rs/npm}"
mkdir -p "$DIR"

stamp_ok() { # <stamp file> <lock files...>: true when the installed set matches the locks
  local stamp=$1; shift
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(cat "$@" | sha256sum)" ]
}
stamp_write() { local stamp=$1; shift; cat "$@" | sha256sum >"$stamp"; }

# --- system packages: Chromium (for the RUM agent), and Node.js / Python
# from Debian only where the machine has none ----------------------------------
CHROMIUM="${APM_RS_CHROMIUM:-/usr/bin/chromium}"
APT=()
[ -x "$CHROMIUM" ] || APT+=(chromium)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || APT+=(nodejs npm)
command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null || APT+=(python3 python3-venv)
if [ ${#APT[@]} -gt 0 ]; then
  echo "installing from Debian: ${APT[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT[@]}" >/dev/null
fi
"$CHROMIUM" --version 2>/dev/null  # its wrapper script prints shell noise on stderr

# --- Python agent -------------------------------------------------------------
PY_LOCK="$REPO/agents/python/requirements.txt"
VENV="$DIR/venv"
if stamp_ok "$VENV/.stamp" "$PY_LOCK"; then
  echo "python agent: up to date"
else
  echo "python agent: installing"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    --cache-dir "${PIP_CACHE_DIR:-$HOME/.cache/apm-rs/pip}" -r "$PY_LOCK"
  stamp_write "$VENV/.stamp" "$PY_LOCK"
fi
"$VENV/bin/python" -c 'import elasticapm; print("elastic-apm", elasticapm.VERSION)'

# --- OpenTelemetry Python SDK (OTLP/HTTP exporter), its own venv -------------
OTEL_LOCK="$REPO/agents/otel-python/requirements.txt"
OTEL_VENV="$DIR/otel-python"
if stamp_ok "$OTEL_VENV/.stamp" "$OTEL_LOCK"; then
  echo "opentelemetry python sdk: up to date"
else
  echo "opentelemetry python sdk: installing"
  rm -rf "$OTEL_VENV"
  python3 -m venv "$OTEL_VENV"
  "$OTEL_VENV/bin/pip" install -q --disable-pip-version-check \
    --cache-dir "${PIP_CACHE_DIR:-$HOME/.cache/apm-rs/pip}" -r "$OTEL_LOCK"
  stamp_write "$OTEL_VENV/.stamp" "$OTEL_LOCK"
fi
"$OTEL_VENV/bin/python" -c 'from opentelemetry.sdk.version import __version__ as v; print("opentelemetry-sdk", v)'

# --- npm agents (Node.js, RUM + playwright-core, OpenTelemetry Node.js SDK) -----
for a in node rum otel-node; do
  src="$REPO/agents/$a"; dst="$DIR/$a"
  if stamp_ok "$dst/.stamp" "$src/package.json" "$src/package-lock.json" && [ -d "$dst/node_modules" ]; then
    echo "$a agent: up to date"
    continue
  fi
  echo "$a agent: installing"
  rm -rf "$dst"; mkdir -p "$dst"
  cp "$src/package.json" "$src/package-lock.json" "$dst/"
  (cd "$dst" && npm ci --cache "$NPM_CACHE" --no-audit --no-fund --loglevel=error >/dev/null)
  stamp_write "$dst/.stamp" "$src/package.json" "$src/package-lock.json"
done
node -e 'console.log("elastic-apm-node", require(process.argv[1] + "/node/node_modules/elastic-apm-node/package.json").version)' "$DIR"
node -e 'console.log("@opentelemetry/sdk-trace-base", require(process.argv[1] + "/otel-node/node_modules/@opentelemetry/sdk-trace-base/package.json").version)' "$DIR"
node -e 'for (const p of ["@elastic/apm-rum", "playwright-core"]) console.log(p, require(process.argv[1] + "/rum/node_modules/" + p + "/package.json").version)' "$DIR"
echo "agents installed in $DIR"
