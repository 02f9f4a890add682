#!/usr/bin/env bash
# Installs what the tests need, skipping whatever is already there:
# - tansu 0.6 (a Kafka-API broker in Rust, a real separate process for end-to-end tests),
# - kafka-python (an independent, pure-Python Kafka client for those tests),
# - promtool (from Debian's prometheus package: checks our /metrics output).
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v tansu >/dev/null 2>&1 || ! tansu --version 2>/dev/null | grep -q '^tansu 0\.6'; then
  echo "== installing tansu 0.6 (about 15 minutes on 2 cores)"
  cargo install tansu --version '^0.6' --locked --features dynostore
fi
echo "tansu: $(tansu --version)"

if ! python3 -c 'import kafka' >/dev/null 2>&1; then
  echo "== installing kafka-python"
  python3 -m pip install --quiet 'kafka-python>=2.0.2'
fi
echo "kafka-python: $(python3 -c 'import kafka; print(kafka.__version__)')"

if ! command -v promtool >/dev/null 2>&1; then
  echo "== installing promtool (Debian package prometheus)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
echo "promtool: $(promtool --version 2>&1 | head -1)"
