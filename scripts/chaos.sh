#!/usr/bin/env bash
# Runs a chaos campaign against local clusters it starts (README "Chaos testing"): builds the
# debug `evlog` binary, with its failpoints when the node crate has the `failpoints` feature
# (the crash-* faults need them and are skipped otherwise), and the campaign runner, then runs
# it with the arguments given. `scripts/chaos.sh --help` lists the options;
# `scripts/chaos.sh --quick` is the short campaign CI runs. Exits non-zero on any violation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

describe_only=0
for arg in "$@"; do
  case "$arg" in
    -h | --help | --list) describe_only=1 ;;
  esac
done

cargo build -p evlog-cluster-tests --bin chaos
if [[ $describe_only == 1 ]]; then
  exec target/debug/chaos "$@"
fi

mkdir -p target/chaos
if grep -Eq '^[[:space:]]*failpoints[[:space:]]*=' node/Cargo.toml; then
  cargo build -p evlog --bin evlog --features failpoints
  # A copy, so that the next plain build of target/debug/evlog does not replace it mid-run.
  binary=target/chaos/evlog-failpoints
else
  echo "chaos.sh: node/Cargo.toml has no failpoints feature; the crash-* faults are skipped" >&2
  cargo build -p evlog --bin evlog
  binary=target/chaos/evlog
fi
cp target/debug/evlog "$binary"

EVLOG_BIN="$PWD/$binary" exec target/debug/chaos "$@"
