#!/usr/bin/env bash
# Runs the whole test suite: unit and storage tests, and the cluster tests, which start the
# real `evlog` binary (so it is built first: `cargo nextest` builds test targets only).
# Extra arguments go to `cargo nextest run`, e.g. `scripts/test.sh -E 'package(evlog-cluster-tests)'`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: cargo-nextest is missing; install it with: cargo install cargo-nextest --locked" >&2
  exit 1
fi

# The tests run the binary built with the crash points of the chaos tests compiled in (they do
# nothing unless `FAILPOINTS` arms them); one feature set for both commands, so one build.
features=(--features evlog/failpoints)
cargo build --workspace --bins "${features[@]}"
cargo nextest run --workspace --no-fail-fast "${features[@]}" "$@"
