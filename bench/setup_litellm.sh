#!/usr/bin/env bash
# Installs LiteLLM's proxy into a venv outside the repo, for the benchmark's peer.
#
# Recent litellm releases pin a certifi newer than the index serves, so a plain
# `pip install 'litellm[proxy]'` fails; uv with an override file works (see
# shared/PEERS.md). prisma and opentelemetry-sdk are installed because without
# them LiteLLM answers 500s or retries a failing import on every request, which
# would measure a misconfiguration rather than the proxy.
#
# Usage: bench/setup_litellm.sh [VENV_DIR]   (default /opt/bench-venvs/litellm)
# Idempotent: a venv whose marker file exists is reused.
set -euo pipefail

VENV="${1:-${BENCH_LITELLM_VENV:-/opt/bench-venvs/litellm}}"
VERSION="${BENCH_LITELLM_VERSION:-1.108.7}"
MARKER="$VENV/.bench-installed-$VERSION"

if [ -f "$MARKER" ]; then
    echo "litellm $VERSION already installed in $VENV"
    exit 0
fi

python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip uv
overrides="$(mktemp)"
trap 'rm -f "$overrides"' EXIT
echo "certifi==2026.10.18" > "$overrides"
VIRTUAL_ENV="$VENV" "$VENV/bin/uv" pip install --python "$VENV/bin/python" \
    --override "$overrides" \
    "litellm[proxy]==$VERSION" prisma opentelemetry-api opentelemetry-sdk
LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/python" -c "import litellm.proxy.proxy_server" >/dev/null
touch "$MARKER"
echo "litellm $VERSION installed in $VENV"
