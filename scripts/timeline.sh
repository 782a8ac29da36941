#!/usr/bin/env bash
# What a lone append waits for, step by step: a fresh three-node cluster (scripts/cluster.sh,
# a temporary folder, free ports), `perf trace` on the leader and one follower (the syscalls
# that move an append: reads and writes of sockets, page writes, fdatasync) while one client
# appends 100 B events for a few seconds, then the median and p90 of each step between the
# client's request and its answer (scripts/timeline.py). Needs `perf` (linux-perf) and root.
#
#   scripts/timeline.sh [SECONDS]        EVLOG_BIN: the evlog binary [target/release/evlog]
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
seconds="${1:-2}"
bin="${EVLOG_BIN:-$REPO_ROOT/target/release/evlog}"
command -v perf >/dev/null || { echo "timeline.sh needs perf (apt-get install linux-perf)" >&2; exit 2; }
[[ -x "$bin" ]] || { echo "no evlog binary at $bin (cargo build --release, or EVLOG_BIN)" >&2; exit 2; }
work="$(mktemp -d)"
export EVLOG_CLUSTER_DIR="$work/cluster" EVLOG_BIN="$bin"
trap '"$REPO_ROOT/scripts/cluster.sh" clean >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# shellcheck source=scripts/ports.sh
source "$REPO_ROOT/scripts/ports.sh"
base="$(free_base_port)" || { echo "found no three free ports" >&2; exit 1; }
export EVLOG_BASE_PORT="$base"
"$REPO_ROOT/scripts/cluster.sh" up >/dev/null
endpoints="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
leader="$("$bin" status --endpoints "$endpoints" --json 2>/dev/null |
  python3 -c 'import json, sys
print(next(d["node_id"] for d in map(json.loads, sys.stdin) if d.get("role") == "leader"))')"
follower=$((leader % 3 + 1))
calls=fdatasync,writev,recvfrom,pwrite64
perf trace -T -e "$calls" -o "$work/leader.trace" -p "$(cat "$EVLOG_CLUSTER_DIR/pids/node-$leader.pid")" &
leader_trace=$!
perf trace -T -e "$calls" -o "$work/follower.trace" -p "$(cat "$EVLOG_CLUSTER_DIR/pids/node-$follower.pid")" &
follower_trace=$!
sleep 1
"$bin" bench --endpoints "127.0.0.1:$((base + leader - 1))" --mode append --concurrency 1 \
  --size 100 --duration "$seconds" --json >"$work/bench.json" 2>/dev/null || true
kill -INT "$leader_trace" "$follower_trace"
wait "$leader_trace" "$follower_trace" 2>/dev/null || true
echo "leader node $leader, traced follower node $follower; the traced run:"
python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print("  %.0f appends/s, p50 %s us, p99 %s us" % (d["ops_per_sec"], d["p50_us"], d["p99_us"]))' "$work/bench.json"
python3 "$REPO_ROOT/scripts/timeline.py" "$work"
