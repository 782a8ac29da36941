#!/usr/bin/env bash
# Runs evlog's standard benchmark matrix against fresh local three-node clusters and writes the
# results: every run as one JSON line (results.jsonl), and a markdown summary (summary.md) with
# the median of the runs of each case and the machine it ran on.
#
# Each case gets a fresh cluster (started with scripts/cluster.sh on free ports, its data under
# the results folder, so on the repository's disk rather than a possibly in-memory /tmp). The
# cluster is stopped when the case ends, and on any exit (trap). Data directories are removed
# after each case unless --keep-data; the nodes' logs are kept.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly CLUSTER_SH="$REPO_ROOT/scripts/cluster.sh"
readonly ALL_CASES="a,b,c,d,e,f,g,h,i,j,k,l,m,n"

usage() {
  cat <<EOF
Usage: scripts/bench.sh [OPTIONS]

Builds evlog (release), then for each case of the standard matrix starts a fresh local
three-node cluster, runs \`evlog bench\` RUNS times, stops the cluster, and at the end writes
and prints a summary with the median of each case's runs.

The matrix (all events of 100 B unless said; appends go to the leader):
  a  append,  1 client
  b  append,  128 clients
  c  append,  128 clients, 1 KiB events
  d  batched append, 100 events per append, 16 clients
  e  linearizable reads, 128 clients, spread over all nodes (10 streams preloaded with 100
     events each; each read asks for a page of 10)
  f  append,  128 clients, 1,000,000 streams instead of 10 (one append to each of them first,
     not measured, so the stream table holds them all)
  g  append,  128 clients, on a log of 10,000,000 events (filled first with batched appends,
     not measured); then node 3 is SIGKILLed and restarted, and the time until it serves a
     local read, and a linearizable one, is measured
  h  subscribe: one subscriber catches up over a log of 1,000,000 events (filled first with
     batched appends, not measured), batches of 4,096
  i  subscribe: 16 subscribers (spread over the nodes, from the head) while 128 clients
     append; delivery latency is append sent -> event delivered
  j  case i without the subscribers (the same appends): the baseline of its throughput
  k  append,  16 clients
  l  append,  16 clients, through the client library (one shared evlog-client, which
     coalesces concurrent appends into AppendMany calls: --via client)
  m  append,  128 clients, through the client library
  n  append,  128 clients, 1 KiB events, through the client library
Cases a-c, f, g and k send one unary Append per append (--via unary).

After each case, every node's resident memory (now, and its peak) is recorded. Every run
records the CPU time per op of the bench client and of each node, and the bytes the disk
wrote per op, over its measured window.

Options:
  --runs N          runs of each case (default 3); the summary shows their median
  --duration SECS   measured seconds of each run (default 10)
  --warmup SECS     warm-up of each run, not measured (default 1)
  --fill-streams N  streams case f writes to first (default 1000000)
  --fill-events N   events case g fills the log with first (default 10000000)
  --fill-catch-up N events case h fills the log with first (default 1000000)
  --quick           a short smoke: 1 run of 2 s, 0.5 s warm-up, fills of 10000 streams and
                    100000 events (overrides the five above)
  --cases LIST      the cases to run, comma-separated (default $ALL_CASES)
  --out DIR         where results go (default bench-results/<timestamp>)
  --keep-data       keep each case's node data directories (they are removed by default)
  --no-build        use the existing evlog binary instead of building it
  -h, --help        this help

Environment:
  EVLOG_BIN         the evlog binary (default: <repo>/target/release/evlog, built here)
  EVLOG_SERVE_ARGS  extra arguments for every \`evlog serve\` (see scripts/cluster.sh)
  EVLOG_BASE_PORT   gRPC port of node 1 (default: a free range found at start)

Output, in the results folder:
  results.jsonl     one line per run: {"case":..,"run":..} followed by \`evlog bench --json\`
                    (ops_per_sec, events_per_sec, bytes_per_sec, p50_us .. max_us, errors, ...)
  memory.jsonl      each node's RSS and peak RSS at the end of each case
  restart.jsonl     case g: milliseconds from the restart of a node holding the log until it
                    served a local read and a linearizable read
  summary.md        the machine, the parameters, and a table of the medians per case
  logs/<case>/      the nodes' logs of each case
EOF
}

die() {
  echo "bench.sh: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- options

runs=3
duration=10
fill_streams=1000000
fill_events=10000000
fill_catch_up=1000000
warmup=1
quick=0
cases="$ALL_CASES"
out=""
keep_data=0
build=1

while (($# > 0)); do
  case "$1" in
    --runs) runs="${2:?--runs needs a number}"; shift 2 ;;
    --duration) duration="${2:?--duration needs seconds}"; shift 2 ;;
    --warmup) warmup="${2:?--warmup needs seconds}"; shift 2 ;;
    --quick) quick=1; shift ;;
    --cases) cases="${2:?--cases needs a list}"; shift 2 ;;
    --fill-streams) fill_streams="${2:?--fill-streams needs a number}"; shift 2 ;;
    --fill-events) fill_events="${2:?--fill-events needs a number}"; shift 2 ;;
    --fill-catch-up) fill_catch_up="${2:?--fill-catch-up needs a number}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --keep-data) keep_data=1; shift ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

if ((quick)); then
  runs=1
  duration=2
  warmup=0.5
  fill_streams=10000
  fill_events=100000
  fill_catch_up=100000
fi
[[ "$fill_streams" =~ ^[1-9][0-9]*$ ]] || die "--fill-streams must be a whole number, got '$fill_streams'"
[[ "$fill_events" =~ ^[1-9][0-9]*00$ ]] || die "--fill-events must be a multiple of 100, got '$fill_events'"
[[ "$fill_catch_up" =~ ^[1-9][0-9]*00$ ]] || die "--fill-catch-up must be a multiple of 100, got '$fill_catch_up'"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a whole number of 1 or more, got '$runs'"
[[ "$duration" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--duration must be seconds, got '$duration'"
[[ "$warmup" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--warmup must be seconds, got '$warmup'"

# ---------------------------------------------------------------- the matrix

# The `evlog bench` arguments of each case.
case_args() {
  case "$1" in
    a) echo "--mode append --concurrency 1 --size 100" ;;
    b) echo "--mode append --concurrency 128 --size 100" ;;
    c) echo "--mode append --concurrency 128 --size 1024" ;;
    d) echo "--mode batch --batch 100 --concurrency 16 --size 100" ;;
    e) echo "--mode read --concurrency 128 --size 100 --preload 100 --page-size 10" ;;
    f) echo "--mode append --concurrency 128 --size 100 --streams 1000000" ;;
    g) echo "--mode append --concurrency 128 --size 100" ;;
    h) echo "--mode subscribe --concurrency 0 --subscribers 1 --subscribe-from beginning --subscribe-batch 4096 --size 100" ;;
    i) echo "--mode subscribe --concurrency 128 --subscribers 16 --size 100" ;;
    j) echo "--mode subscribe --concurrency 128 --subscribers 0 --size 100" ;;
    k) echo "--mode append --concurrency 16 --size 100" ;;
    l) echo "--mode append --concurrency 16 --size 100 --via client" ;;
    m) echo "--mode append --concurrency 128 --size 100 --via client" ;;
    n) echo "--mode append --concurrency 128 --size 1024 --via client" ;;
    *) return 1 ;;
  esac
}

# What a case writes before its measured runs (not measured): nothing, or `evlog bench` args.
case_fill() {
  case "$1" in
    f) echo "--mode append --concurrency 128 --size 100 --streams $fill_streams --count $fill_streams" ;;
    g) echo "--mode batch --batch 100 --concurrency 16 --size 100 --count $((fill_events / 100))" ;;
    h) echo "--mode batch --batch 100 --concurrency 16 --size 100 --count $((fill_catch_up / 100))" ;;
    *) echo "" ;;
  esac
}

case_title() {
  case "$1" in
    a) echo "append, 1 client, 100 B" ;;
    b) echo "append, 128 clients, 100 B" ;;
    c) echo "append, 128 clients, 1 KiB" ;;
    d) echo "batch 100x100 B, 16 clients" ;;
    e) echo "linearizable read (page of 10), 128 clients, all nodes" ;;
    f) echo "append, 128 clients, 100 B, $fill_streams streams" ;;
    g) echo "append, 128 clients, 100 B, log of $fill_events events" ;;
    h) echo "subscribe: 1 subscriber catching up over $fill_catch_up events" ;;
    i) echo "subscribe: 16 subscribers, 128 clients appending 100 B" ;;
    j) echo "case i without subscribers" ;;
    k) echo "append, 16 clients, 100 B" ;;
    l) echo "append, 16 clients, 100 B, via the client library" ;;
    m) echo "append, 128 clients, 100 B, via the client library" ;;
    n) echo "append, 128 clients, 1 KiB, via the client library" ;;
  esac
}

IFS=, read -r -a selected <<<"$cases"
for c in "${selected[@]}"; do
  case_args "$c" >/dev/null || die "unknown case '$c' (cases: $ALL_CASES)"
done

# ---------------------------------------------------------------- setup

if [[ -z "$out" ]]; then
  out="$REPO_ROOT/bench-results/$(date +%Y%m%dT%H%M%S)"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
readonly out results="$out/results.jsonl" summary="$out/summary.md"
readonly memory="$out/memory.jsonl" restarts="$out/restart.jsonl"
: >"$results"
: >"$memory"
: >"$restarts"

if [[ -n "${EVLOG_BIN:-}" ]]; then
  bin="$EVLOG_BIN"
else
  bin="$REPO_ROOT/target/release/evlog"
  if ((build)); then
    echo "bench.sh: building evlog (release)" >&2
    (cd "$REPO_ROOT" && cargo build --release -p evlog)
  fi
fi
[[ -x "$bin" ]] || die "no evlog binary at $bin (build it, or drop --no-build)"
export EVLOG_BIN="$bin"

# shellcheck source=scripts/ports.sh
source "$REPO_ROOT/scripts/ports.sh"

cluster_dir=""
stop_cluster() {
  if [[ -n "$cluster_dir" && -d "$cluster_dir" ]]; then
    EVLOG_CLUSTER_DIR="$cluster_dir" "$CLUSTER_SH" down >/dev/null 2>&1 || true
  fi
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the number under "key" in a one-line JSON object (top-level keys of evlog bench are
# unique, and no other key ends in "<quote>key").
json_number() {
  { grep -o "\"$2\":[-0-9.eE+]*" <<<"$1" || true; } | head -n 1 | cut -d: -f2
}

# The median of the numbers on stdin (the mean of the two middle ones for an even count),
# printed with the printf format $1.
median() {
  sort -g | awk -v format="$1" '{ v[NR] = $1 } END {
    if (NR == 0) { print ""; exit }
    if (NR % 2) { m = v[(NR + 1) / 2] } else { m = (v[NR / 2] + v[NR / 2 + 1]) / 2 }
    printf format "\n", m
  }'
}

# The median of "key" over the JSON lines in $lines, printed with the printf format $2
# (default: a whole number).
med() {
  local key="$1" format="${2:-%.0f}" line value
  while IFS= read -r line; do
    value="$(json_number "$line" "$key")"
    if [[ -n "$value" ]]; then echo "$value"; fi
  done <<<"$lines" | median "$format"
}

cpu_model() {
  grep -m1 -i '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' ||
    uname -m
}

# ---------------------------------------------------------------- the runs

# Appends each node's RSS and peak RSS (KiB, from /proc) to memory.jsonl.
record_memory() {
  local c="$1" n pid rss peak
  for n in 1 2 3; do
    pid="$(cat "$cluster_dir/pids/node-$n.pid" 2>/dev/null || true)"
    [[ -n "$pid" && -r "/proc/$pid/status" ]] || continue
    rss="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
    peak="$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")"
    echo "{\"case\":\"$c\",\"node\":$n,\"rss_kib\":${rss:-0},\"peak_rss_kib\":${peak:-0}}" >>"$memory"
  done
}

now_ms() { date +%s%3N; }

# CPU clock ticks (user + system, all threads; 100 per second) of nodes 1, 2 and 3.
node_ticks() {
  local n pid
  for n in 1 2 3; do
    pid="$(cat "$cluster_dir/pids/node-$n.pid" 2>/dev/null || true)"
    if [[ -n "$pid" && -r "/proc/$pid/stat" ]]; then
      sed 's/.*) //' "/proc/$pid/stat" | awk '{ printf "%d ", $12 + $13 }'
    else
      printf '0 '
    fi
  done
}

# "node1_cpu_us_per_op":..,"node2..":..,"node3..":..,"disk_bytes_per_op":..,"leader_node":N
# for a run's JSON line, the nodes' ticks before and after its measured window, and the
# device's written bytes before and after it.
node_cpu_json() {
  local line="$1" ops errors leader_port leader_node=0 n
  ops="$(json_number "$line" ops)"
  errors="$(json_number "$line" errors_total)"
  leader_port="$({ grep -o '"leader":"[^"]*"' <<<"$line" || true; } | grep -o '[0-9]*"$' | tr -d '"')"
  if [[ -n "$leader_port" ]]; then leader_node=$((leader_port - base_port + 1)); fi
  read -r -a before <<<"$2"
  read -r -a after <<<"$3"
  for n in 0 1 2; do
    awk -v b="${before[$n]:-0}" -v a="${after[$n]:-0}" -v ops="$((${ops:-0} + ${errors:-0}))" \
      -v node=$((n + 1)) 'BEGIN { printf "\"node%d_cpu_us_per_op\":%.1f,", node, (a - b) * 10000 / (ops > 0 ? ops : 1) }'
  done
  if [[ -n "$4" && -n "$5" ]]; then
    awk -v b="$4" -v a="$5" -v ops="$((${ops:-0} + ${errors:-0}))" \
      'BEGIN { printf "\"disk_bytes_per_op\":%.0f,", (a - b) / (ops > 0 ? ops : 1) }'
  fi
  echo "\"leader_node\":$leader_node"
}

# SIGKILLs node 3, starts it again, and records how long until it serves a local read and a
# linearizable one (each probe is one read with a 1 s deadline, retried until 60 s pass).
probe_restart() {
  local c="$1" endpoint="127.0.0.1:$((base_port + 2))" started local_ms="" linear_ms=""
  EVLOG_CLUSTER_DIR="$cluster_dir" EVLOG_BASE_PORT="$base_port" "$CLUSTER_SH" kill 3 >/dev/null
  started="$(now_ms)"
  EVLOG_CLUSTER_DIR="$cluster_dir" EVLOG_BASE_PORT="$base_port" "$CLUSTER_SH" start 3 >/dev/null
  while (($(now_ms) - started < 60000)); do
    if [[ -z "$local_ms" ]] && "$bin" read --endpoints "$endpoint" --all --max-count 1 \
      --consistency local --timeout-ms 1000 >/dev/null 2>&1; then
      local_ms=$(($(now_ms) - started))
    fi
    if [[ -n "$local_ms" ]] && "$bin" read --endpoints "$endpoint" --all --max-count 1 \
      --timeout-ms 1000 >/dev/null 2>&1; then
      linear_ms=$(($(now_ms) - started))
      break
    fi
    sleep 0.05
  done
  echo "{\"case\":\"$c\",\"local_read_ms\":${local_ms:-null},\"linearizable_read_ms\":${linear_ms:-null}}" >>"$restarts"
  echo "     restart of node 3: local read after ${local_ms:-never} ms, linearizable read after ${linear_ms:-never} ms" >&2
}

declare -A failed_runs=()
for c in "${selected[@]}"; do
  base_port="${EVLOG_BASE_PORT:-$(free_base_port || die "found no three free ports")}"
  cluster_dir="$out/cluster-$c"
  endpoints="127.0.0.1:$base_port,127.0.0.1:$((base_port + 1)),127.0.0.1:$((base_port + 2))"
  echo "==== case $c: $(case_title "$c") (ports $base_port-$((base_port + 2)))" >&2
  EVLOG_CLUSTER_DIR="$cluster_dir" EVLOG_BASE_PORT="$base_port" "$CLUSTER_SH" up >/dev/null
  read -r -a args <<<"$(case_args "$c")"
  failed_runs[$c]=0
  fill_args="$(case_fill "$c")"
  if [[ -n "$fill_args" ]]; then
    echo "     fill (not measured): evlog bench $fill_args" >&2
    read -r -a fill <<<"$fill_args"
    fill_started="$(now_ms)"
    "$bin" bench --endpoints "$endpoints" --json --warmup 0 --duration 7200 "${fill[@]}" \
      >"$out/fill-$c.json" || die "the fill of case $c failed"
    echo "     filled in $((($(now_ms) - fill_started) / 1000)) s" >&2
  fi
  for run in $(seq 1 "$runs"); do
    line=""
    # The nodes' CPU time over the measured window: sampled when the warm-up ends and when
    # the bench does (the bench reports its own).
    "$bin" bench --endpoints "$endpoints" --json --duration "$duration" \
      --warmup "$warmup" "${args[@]}" >"$out/run.json" &
    bench_pid=$!
    sleep "$warmup"
    cpu_before="$(node_ticks)"
    written_before="$(disk_written "$out")"
    if wait "$bench_pid"; then line="$(cat "$out/run.json")"; fi
    cpu_after="$(node_ticks)"
    written_after="$(disk_written "$out")"
    if [[ "$line" == "{"* ]]; then
      node_cpu="$(node_cpu_json "$line" "$cpu_before" "$cpu_after" "$written_before" "$written_after")"
      echo "{\"case\":\"$c\",\"run\":$run,$node_cpu,${line#\{}" >>"$results"
      echo "     run $run: $(json_number "$line" ops_per_sec) ops/s," \
        "p50 $(json_number "$line" p50_us) µs, p99 $(json_number "$line" p99_us) µs," \
        "$(json_number "$line" errors_total) errors; CPU µs/op: client" \
        "$(json_number "$line" client_cpu_us_per_op), nodes $(json_number "$node_cpu" node1_cpu_us_per_op)" \
        "$(json_number "$node_cpu" node2_cpu_us_per_op) $(json_number "$node_cpu" node3_cpu_us_per_op);" \
        "disk bytes/op: $(json_number "$node_cpu" disk_bytes_per_op)" >&2
    else
      failed_runs[$c]=$((failed_runs[$c] + 1))
      echo "     run $run: evlog bench failed" >&2
    fi
  done
  record_memory "$c"
  if [[ "$c" == g ]]; then
    probe_restart "$c"
  fi
  EVLOG_CLUSTER_DIR="$cluster_dir" "$CLUSTER_SH" down >/dev/null
  mkdir -p "$out/logs/$c"
  cp "$cluster_dir"/logs/*.log "$out/logs/$c/" 2>/dev/null || true
  if ((keep_data)); then
    cluster_dir=""
  else
    EVLOG_CLUSTER_DIR="$cluster_dir" "$CLUSTER_SH" clean >/dev/null
    cluster_dir=""
  fi
done

# ---------------------------------------------------------------- the summary

data_fs="$(df -PT "$out" 2>/dev/null | awk 'NR == 2 { print $2 " on " $1 }')"
commit="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  commit="$commit (with uncommitted changes)"
fi

{
  echo "# evlog benchmark, $(date '+%Y-%m-%d %H:%M:%S %z')"
  echo
  echo "- machine: $(nproc) CPUs, $(cpu_model), $(uname -sr)," \
    "$(awk '/^MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo 2>/dev/null)"
  echo "- data directories: $data_fs (every append is fsynced on a quorum before it is acknowledged)"
  echo "- evlog: $commit, $("$bin" --version 2>/dev/null || echo unknown)"
  echo "- runs: $runs per case, each ${duration} s measured after a ${warmup} s warm-up; the" \
    "table shows the median of the runs (each column on its own)"
  echo "- the cluster (three nodes) and the bench client share this machine"
  echo
  echo "| case | what | ops/s | events/s | MiB/s | p50 µs | p90 µs | p99 µs | p999 µs | max µs | errors | peak RSS MiB |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for c in "${selected[@]}"; do
    lines="$(grep "^{\"case\":\"$c\"," "$results" || true)"
    if [[ -z "$lines" ]]; then
      echo "| $c | $(case_title "$c") | failed | | | | | | | | | |"
      continue
    fi
    errors="$(while IFS= read -r line; do json_number "$line" errors_total; done <<<"$lines" |
      awk '{ s += $1 } END { print s + 0 }')"
    if ((failed_runs[$c] > 0)); then
      errors="$errors (+${failed_runs[$c]} failed runs)"
    fi
    mib="$(med bytes_per_sec | awk '{ printf "%.2f", $1 / 1048576 }')"
    peak="$({ grep "^{\"case\":\"$c\"," "$memory" || true; } | while IFS= read -r line; do
      json_number "$line" peak_rss_kib; done | awk '$1 > m { m = $1 } END { printf "%.0f", m / 1024 }')"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
      "$c" "$(case_title "$c")" "$(med ops_per_sec %.1f)" "$(med events_per_sec %.1f)" "$mib" \
      "$(med p50_us)" "$(med p90_us)" "$(med p99_us)" "$(med p999_us)" "$(med max_us)" "$errors" \
      "$peak"
  done
  if [[ -s "$restarts" ]]; then
    echo
    while IFS= read -r line; do
      echo "- case g, node 3 SIGKILLed and restarted on the $fill_events-event log: it served a" \
        "local read after $(json_number "$line" local_read_ms) ms and a linearizable read after" \
        "$(json_number "$line" linearizable_read_ms) ms"
    done <"$restarts"
  fi
  echo "- peak RSS: the largest VmHWM of the three nodes at the end of the case (memory.jsonl)"
  echo
  echo "| case | CPU µs/op: client | node 1 | node 2 | node 3 | all | leader | disk bytes/op |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for c in "${selected[@]}"; do
    lines="$(grep "^{\"case\":\"$c\"," "$results" || true)"
    [[ -n "$lines" ]] || continue
    all="$(while IFS= read -r line; do
      echo "$line" | grep -o '"\(client\|node[123]\)_cpu_us_per_op":[0-9.]*' | cut -d: -f2 |
        awk '{ s += $1 } END { print s }'
    done <<<"$lines" | median %.0f)"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$(med client_cpu_us_per_op)" \
      "$(med node1_cpu_us_per_op)" "$(med node2_cpu_us_per_op)" "$(med node3_cpu_us_per_op)" \
      "$all" "$(med leader_node)" "$(med disk_bytes_per_op)"
  done
  echo "- CPU µs/op: user + system CPU time of each process over the measured window, divided by" \
    "the requests it measured (medians of the runs); leader: the node appends went to (0: all)"
  echo "- disk bytes/op: what the device holding the data directories wrote over the measured" \
    "window (/proc/diskstats: the three nodes', and whatever else wrote to it meanwhile)," \
    "divided by the requests measured; against the device's bandwidth it tells whether the" \
    "disk is the bound"
  subscribed=()
  for c in "${selected[@]}"; do
    if [[ "$(case_args "$c")" == *"--mode subscribe"* ]]; then subscribed+=("$c"); fi
  done
  if ((${#subscribed[@]} > 0)); then
    echo
    echo "| case | subscribers | catch-up events/s | deliveries/s | delivery p50 µs | p99 µs | max µs | missing |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for c in "${subscribed[@]}"; do
      lines="$(grep "^{\"case\":\"$c\"," "$results" || true)"
      [[ -n "$lines" ]] || continue
      printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$(med subscribers)" \
        "$(med catch_up_events_per_sec)" "$(med deliveries_per_sec %.1f)" "$(med delivery_p50_us)" \
        "$(med delivery_p99_us)" "$(med delivery_max_us)" "$(med missing_deliveries)"
    done
    echo "- delivery: from an append's send to its event's delivery to a subscriber; missing:" \
      "events a subscriber did not get by the end (must be 0)"
  fi
  echo
  echo "Every run: \`results.jsonl\` (one \`evlog bench --json\` line each). Nodes' logs: \`logs/\`."
} >"$summary"

echo >&2
cat "$summary"
echo
echo "results: $out"
