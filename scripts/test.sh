#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotently), checks formatting and
# lints, and runs every test. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
rustc --version
# rustfmt and clippy come with the toolchain; add them if a minimal profile lacks them.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

echo "== format"
cargo fmt --all -- --check

echo "== lints"
cargo clippy --all-targets --locked -- -D warnings

echo "== tests"
cargo test --all-targets --locked
# Doc tests (not part of --all-targets).
cargo test --doc --locked
