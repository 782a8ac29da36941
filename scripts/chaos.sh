#!/usr/bin/env bash
# Runs a chaos campaign against local clusters it starts (README "Chaos testing"): builds the
# debug binaries with the store's crash points compiled in (the same build as scripts/test.sh,
# so CI builds once), then runs the campaign runner with the arguments given.
# `scripts/chaos.sh --help` lists the options; `scripts/chaos.sh --quick` is the short campaign
# CI runs. Exits non-zero on any violation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --workspace --bins --features evlog/failpoints
target="${CARGO_TARGET_DIR:-$PWD/target}"
EVLOG_BIN="$target/debug/evlog" exec "$target/debug/chaos" "$@"
