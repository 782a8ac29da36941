#!/usr/bin/env bash
# Compares evlog binaries on one benchmark case, alternating them in one run, since this machine
# is shared and noisy and only ratios taken together mean something.
#
#   scripts/ab.sh ROUNDS "BENCH ARGS" BIN [BIN ...]
#   scripts/ab.sh 3 "--mode append --concurrency 128 --size 100 --duration 10" old/evlog new/evlog
#
# For each round and each binary: a fresh three-node cluster (scripts/cluster.sh, in a temporary
# folder, on free ports), one `evlog bench ... --json` against it, the cluster stopped and removed.
# Prints a line per run: ops/s, events/s, latency percentiles, errors, CPU time per op of the
# bench client and of each node, and bytes the disk wrote per op (from /proc, over the whole
# run, warm-up included; the disk's figure is the whole machine's writes to that device).
# Quote the median of the rounds.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT

if [[ $# -lt 3 || ! "$1" =~ ^[0-9]+$ ]]; then
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
rounds=$1
read -r -a bench_args <<<"$2"
shift 2

work="$(mktemp -d)"
export EVLOG_CLUSTER_DIR="$work/cluster"
trap '"$REPO_ROOT/scripts/cluster.sh" clean >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# shellcheck source=scripts/ports.sh
source "$REPO_ROOT/scripts/ports.sh"

# CPU ticks (user + system) of a process, all threads.
ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

for _round in $(seq "$rounds"); do
  for bin in "$@"; do
    base="$(free_base_port)" || { echo "found no three free ports" >&2; exit 1; }
    export EVLOG_BIN="$bin" EVLOG_BASE_PORT="$base"
    "$REPO_ROOT/scripts/cluster.sh" clean >/dev/null 2>&1 || true
    if ! "$REPO_ROOT/scripts/cluster.sh" up >/dev/null 2>&1; then
      echo "$bin: the cluster did not start (logs: $EVLOG_CLUSTER_DIR/logs)"
      continue
    fi
    pids=()
    for n in 1 2 3; do pids+=("$(cat "$EVLOG_CLUSTER_DIR/pids/node-$n.pid")"); done
    before=()
    for pid in "${pids[@]}"; do before+=("$(ticks "$pid")"); done
    written_before="$(disk_written "$work")"
    endpoints="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
    /usr/bin/time -f "%U %S" -o "$work/time" \
      "$bin" bench --endpoints "$endpoints" "${bench_args[@]}" --json >"$work/bench.json" 2>/dev/null || true
    after=()
    for pid in "${pids[@]}"; do after+=("$(ticks "$pid")"); done
    written_after="$(disk_written "$work")"
    "$REPO_ROOT/scripts/cluster.sh" clean >/dev/null 2>&1 || true
    BIN="$bin" BEFORE="${before[*]}" AFTER="${after[*]}" WRITTEN_BEFORE="$written_before" \
      WRITTEN_AFTER="$written_after" WORK="$work" python3 - <<'EOF'
import json, os
work = os.environ["WORK"]
try:
    d = json.load(open(f"{work}/bench.json"))
except (OSError, ValueError):
    print(f"{os.environ['BIN']}: the bench printed no result")
    raise SystemExit
ops = max(d["ops"], 1)
tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
nodes = " ".join(
    f"{(int(a) - int(b)) * tick_us / ops:.0f}"
    for b, a in zip(os.environ["BEFORE"].split(), os.environ["AFTER"].split())
)
try:
    written = f"{(int(os.environ['WRITTEN_AFTER']) - int(os.environ['WRITTEN_BEFORE'])) / ops:.0f}"
except ValueError:
    written = "?"
client = sum(map(float, open(f"{work}/time").read().split())) * 1e6 / ops
print(
    f"{os.environ['BIN']}: ops/s {d['ops_per_sec']:.0f} events/s {d['events_per_sec']:.0f} "
    f"p50 {d['p50_us']} p99 {d['p99_us']} p999 {d['p999_us']} max {d['max_us']} "
    f"errors {d['errors_total']} | CPU µs/op: client {client:.0f}, nodes {nodes}"
    f" | disk bytes/op: {written}"
)
EOF
  done
done
