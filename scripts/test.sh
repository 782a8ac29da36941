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

# The status page test drives a real browser (Debian's chromium), and the metrics test parses
# /metrics with the Prometheus project's own parser (python3-prometheus-client, for the
# system's /usr/bin/python3): installed here when missing, as CI's clean machine needs.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need+=(python3 python3-prometheus-client)
if ((${#need[@]})); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: the tests need ${need[*]} (Debian package names); install them first" >&2
    exit 1
  fi
  sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
  echo "test.sh: installing ${need[*]} with apt-get" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The tests run the binary built with the crash points of the chaos tests compiled in (they do
# nothing unless `FAILPOINTS` arms them); one feature set for both commands, so one build.
features=(--features evlog/failpoints)
cargo build --workspace --bins "${features[@]}"
cargo nextest run --workspace --no-fail-fast "${features[@]}" "$@"
