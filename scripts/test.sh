#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotently), checks formatting and
# lints, and runs every test. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== test dependencies"
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

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
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Every crate of the workspace: the pure core (engine tests need no broker) and the service
# (integration tests against MockCluster and tansu).
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
cargo test --workspace --doc --locked 2>&1 | tee -a "$log"

# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log"
