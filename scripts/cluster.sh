#!/usr/bin/env bash
# Runs a local three-node evlog cluster for development: start it, stop it, hurt one node.
#
# Everything it owns lives under one folder ($EVLOG_CLUSTER_DIR, default ./.cluster in the
# repository root): data/node-N (each node's data directory), logs/node-N.log (its stderr and
# stdout), pids/node-N.pid. It signals only the processes it started: a recorded pid is used
# only while it still names an `evlog serve` process on that node's data directory.
set -euo pipefail

readonly NODES=(1 2 3)
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
# shellcheck source=scripts/ports.sh
source "$REPO_ROOT/scripts/ports.sh"
readonly STARTUP_TIMEOUT_S="${EVLOG_STARTUP_TIMEOUT_S:-60}"
readonly STOP_TIMEOUT_S="${EVLOG_STOP_TIMEOUT_S:-30}"
readonly MARKER=".evlog-cluster"

usage() {
  cat <<EOF
Usage: scripts/cluster.sh COMMAND [ARGS]

Runs a local three-node evlog cluster on 127.0.0.1.

Commands:
  up          build evlog (release) if missing or stale, start the nodes that are not
              running, wait until a leader is elected, print the endpoints; when none of
              the cluster's data folders exists, the nodes found it (--bootstrap)
  down        stop every node: SIGTERM, then SIGKILL after ${STOP_TIMEOUT_S}s
  status [ARGS]
              which nodes run, then \`evlog status\` (ARGS are passed on, e.g. --json)
  kill N      SIGKILL node N (1-3)
  start N     start node N again on its data (a node whose folder was emptied waits to be
              caught up by the leader and votes only then)
  pause N     stop node N with SIGSTOP (it keeps its sockets but answers nothing)
  resume N    continue node N with SIGCONT
  logs N [LINES]
              print the last LINES (default 50) lines of node N's log
  clean       down, then remove the cluster folder
  -h, --help  this help

Environment:
  EVLOG_CLUSTER_DIR   folder for data, logs and pids (default: <repo>/.cluster)
  EVLOG_BASE_PORT     gRPC port of node 1; node N uses BASE+N-1 (default: 50051, or the
                      port the cluster folder was created with)
  EVLOG_BIN           evlog binary to run (default: <repo>/target/release/evlog, built here)
  EVLOG_SERVE_ARGS    extra arguments for every \`evlog serve\`, e.g.
                      "--snapshot-threshold 1000"
  EVLOG_STARTUP_TIMEOUT_S, EVLOG_STOP_TIMEOUT_S
                      how long to wait for a leader (default 60) and for a node to stop
                      (default 30)
EOF
}

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- layout

cluster_dir() {
  local dir="${EVLOG_CLUSTER_DIR:-$REPO_ROOT/.cluster}"
  case "$dir" in
    /*) echo "$dir" ;;
    *) echo "$PWD/$dir" ;;
  esac
}

CLUSTER_DIR="$(cluster_dir)"
readonly CLUSTER_DIR

# The ports are those the cluster was created with (remembered in the folder), so `start N`
# after `EVLOG_BASE_PORT=... up` needs no variable; a different EVLOG_BASE_PORT is refused.
base_port() {
  local remembered=""
  if [[ -r "$CLUSTER_DIR/base-port" ]]; then remembered="$(<"$CLUSTER_DIR/base-port")"; fi
  if [[ -n "${EVLOG_BASE_PORT:-}" && -n "$remembered" && "$EVLOG_BASE_PORT" != "$remembered" ]]; then
    die "$CLUSTER_DIR was created with EVLOG_BASE_PORT=$remembered, not $EVLOG_BASE_PORT"
  fi
  echo "${EVLOG_BASE_PORT:-${remembered:-50051}}"
}
BASE_PORT="$(base_port)"
readonly BASE_PORT

port_of() { echo $((BASE_PORT + $1 - 1)); }
address_of() { echo "127.0.0.1:$(port_of "$1")"; }
data_dir_of() { echo "$CLUSTER_DIR/data/node-$1"; }
log_of() { echo "$CLUSTER_DIR/logs/node-$1.log"; }
pid_file_of() { echo "$CLUSTER_DIR/pids/node-$1.pid"; }

endpoints() {
  local n list=()
  for n in "${NODES[@]}"; do list+=("$(address_of "$n")"); done
  (IFS=,; echo "${list[*]}")
}

peers() {
  local n list=()
  for n in "${NODES[@]}"; do list+=("$n=$(address_of "$n")"); done
  (IFS=,; echo "${list[*]}")
}

check_node() {
  local n="${1:-}"
  if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > ${#NODES[@]})); then
    die "expected a node number from 1 to ${#NODES[@]}, got '${n}'"
  fi
}

# ---------------------------------------------------------------- the binary

binary() { echo "${EVLOG_BIN:-$REPO_ROOT/target/release/evlog}"; }

# Prints the first source file newer than the binary, if any.
newer_source() {
  local bin="$1"
  find "$REPO_ROOT/node" "$REPO_ROOT/raft-store" "$REPO_ROOT/proto" \
    "$REPO_ROOT/Cargo.toml" "$REPO_ROOT/Cargo.lock" \
    -type f -newer "$bin" \
    \( -name '*.rs' -o -name '*.proto' -o -name 'Cargo.toml' -o -name 'Cargo.lock' \) \
    -print -quit 2>/dev/null
}

ensure_binary() {
  local bin
  bin="$(binary)"
  if [[ -n "${EVLOG_BIN:-}" ]]; then
    [[ -x "$bin" ]] || die "EVLOG_BIN=$bin is not an executable file"
    return 0
  fi
  if [[ ! -x "$bin" ]]; then
    echo "cluster.sh: building evlog (release): $bin is missing" >&2
  elif [[ -n "$(newer_source "$bin")" ]]; then
    echo "cluster.sh: building evlog (release): sources changed since $bin was built" >&2
  else
    return 0
  fi
  (cd "$REPO_ROOT" && cargo build --release --bin evlog)
  [[ -x "$bin" ]] || die "the build did not produce $bin"
}

# ---------------------------------------------------------------- processes

# Prints node N's pid if the recorded pid is still the evlog process this script started for
# node N (same binary name, `serve`, same data directory); fails otherwise.
node_pid() {
  local n="$1" pid_file pid comm args
  pid_file="$(pid_file_of "$n")"
  [[ -r "$pid_file" ]] || return 1
  pid="$(<"$pid_file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  comm="$(ps -o comm= -p "$pid" 2>/dev/null)" || return 1
  [[ "$comm" == evlog* ]] || return 1
  args="$(ps -ww -o args= -p "$pid" 2>/dev/null)" || return 1
  [[ "$args" == *" serve "* && "$args" == *"--data-dir $(data_dir_of "$n")"* ]] || return 1
  echo "$pid"
}

is_paused() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ "$state" == T* ]]
}

log_tail() {
  local log
  log="$(log_of "$1")"
  echo "---- last lines of $log ----" >&2
  tail -n "${2:-20}" "$log" >&2 2>/dev/null || true
}

# Starts node N. With "found" as the second argument (`up` creating the cluster's folders), the
# node founds the cluster (--bootstrap). Otherwise a node with an empty data folder, emptied or
# removed, waits to be caught up by a leader and votes only then: it may have lost entries the
# cluster acknowledged.
start_node() {
  local n="$1" mode="${2:-}" pid bin port extra=() bootstrap=()
  if pid="$(node_pid "$n")"; then
    echo "node $n is already running (pid $pid)"
    return
  fi
  bin="$(binary)"
  port="$(port_of "$n")"
  port_in_use "$port" && die "port $port (node $n) is already in use by another process"
  # (A binary older than --bootstrap, compared with scripts/ab.sh, founds without it.)
  if [[ "$mode" == found ]] && "$bin" serve --help 2>/dev/null | grep -q -- '--bootstrap'; then
    bootstrap=(--bootstrap)
  fi
  mkdir -p "$CLUSTER_DIR/data" "$CLUSTER_DIR/logs" "$CLUSTER_DIR/pids"
  touch "$CLUSTER_DIR/$MARKER"
  echo "$BASE_PORT" >"$CLUSTER_DIR/base-port"
  read -r -a extra <<<"${EVLOG_SERVE_ARGS:-}"
  echo "==== $(date '+%Y-%m-%dT%H:%M:%S%z') cluster.sh starts node $n ====" >>"$(log_of "$n")"
  nohup "$bin" serve \
    --id "$n" \
    --listen "$(address_of "$n")" \
    --data-dir "$(data_dir_of "$n")" \
    --peers "$(peers)" \
    ${bootstrap[@]+"${bootstrap[@]}"} \
    ${extra[@]+"${extra[@]}"} \
    </dev/null >>"$(log_of "$n")" 2>&1 &
  echo $! >"$(pid_file_of "$n")"
  echo "node $n: pid $!, $(address_of "$n"), log $(log_of "$n")"
}

# Waits until every node in "$@" is gone; prints the ones still alive at the deadline.
wait_gone() {
  local deadline=$((SECONDS + STOP_TIMEOUT_S)) pid alive
  while :; do
    alive=()
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null && alive+=("$pid")
    done
    if ((${#alive[@]} == 0)) || ((SECONDS >= deadline)); then
      echo "${alive[@]+"${alive[@]}"}"
      return
    fi
    sleep 0.1
  done
}

# Succeeds when `evlog status --json` names a leader (a non-zero leader_id).
leader_known() {
  local out
  out="$("$(binary)" status --endpoints "$(endpoints)" --json 2>/dev/null)" || return 1
  if command -v jq >/dev/null; then
    jq -e '[.. | objects | .leader_id? // empty | tonumber? // empty | select(. != 0)]
           | length > 0' <<<"$out" >/dev/null 2>&1
  else
    grep -Eq '"leader_id"[[:space:]]*:[[:space:]]*"?[1-9]' <<<"$out"
  fi
}

wait_for_leader() {
  local deadline=$((SECONDS + STARTUP_TIMEOUT_S)) n
  while ((SECONDS < deadline)); do
    for n in "${NODES[@]}"; do
      if ! node_pid "$n" >/dev/null; then
        log_tail "$n"
        die "node $n exited while waiting for a leader"
      fi
    done
    if leader_known; then
      return
    fi
    sleep 0.2
  done
  for n in "${NODES[@]}"; do log_tail "$n"; done
  die "no leader within ${STARTUP_TIMEOUT_S}s; logs are in $CLUSTER_DIR/logs"
}

# ---------------------------------------------------------------- commands

cmd_up() {
  ensure_binary
  local n mode=found
  # The cluster is founded only when none of its data folders exists: a folder that exists
  # (or one that is missing beside others that exist) belongs to a cluster already.
  for n in "${NODES[@]}"; do
    if [[ -e "$(data_dir_of "$n")" ]]; then mode=""; fi
  done
  for n in "${NODES[@]}"; do start_node "$n" "$mode"; done
  wait_for_leader
  cat <<EOF
evlog cluster is up.
  endpoints: $(endpoints)
  data:      $CLUSTER_DIR/data
  logs:      $CLUSTER_DIR/logs
try:
  $(binary) append --endpoints $(endpoints) demo "hello"
  $(binary) read --endpoints $(endpoints) --stream demo
  scripts/cluster.sh status
EOF
}

cmd_down() {
  local n pid pids=() left
  for n in "${NODES[@]}"; do
    if pid="$(node_pid "$n")"; then
      kill -TERM "$pid" 2>/dev/null || true
      # A stopped process handles SIGTERM only once continued.
      if is_paused "$pid"; then
        kill -CONT "$pid" 2>/dev/null || true
      fi
      pids+=("$pid")
      echo "node $n: SIGTERM (pid $pid)"
    fi
  done
  if ((${#pids[@]} > 0)); then
    left="$(wait_gone "${pids[@]}")"
    for pid in $left; do
      echo "pid $pid did not stop within ${STOP_TIMEOUT_S}s: SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  rm -f "$CLUSTER_DIR"/pids/node-*.pid
  echo "evlog cluster is down."
}

cmd_status() {
  local n pid any=0
  for n in "${NODES[@]}"; do
    if pid="$(node_pid "$n")"; then
      any=1
      if is_paused "$pid"; then
        echo "node $n: paused  (pid $pid) $(address_of "$n")"
      else
        echo "node $n: running (pid $pid) $(address_of "$n")"
      fi
    else
      echo "node $n: stopped          $(address_of "$n")"
    fi
  done
  if ((any)) && [[ -x "$(binary)" ]]; then
    "$(binary)" status --endpoints "$(endpoints)" "$@" || true
  fi
}

cmd_kill() {
  check_node "${1:-}"
  local pid
  pid="$(node_pid "$1")" || die "node $1 is not running"
  kill -KILL "$pid"
  [[ -z "$(wait_gone "$pid")" ]] || die "node $1 (pid $pid) survived SIGKILL"
  rm -f "$(pid_file_of "$1")"
  echo "node $1: SIGKILL (pid $pid)"
}

cmd_start() {
  check_node "${1:-}"
  ensure_binary
  start_node "$1"
}

cmd_signal() {
  local signal="$1" n="${2:-}" pid
  check_node "$n"
  pid="$(node_pid "$n")" || die "node $n is not running"
  kill "-$signal" "$pid"
  echo "node $n: SIG$signal (pid $pid)"
}

cmd_logs() {
  check_node "${1:-}"
  local log
  log="$(log_of "$1")"
  [[ -r "$log" ]] || die "no log for node $1 at $log"
  echo "---- $log ----"
  tail -n "${2:-50}" "$log"
}

cmd_clean() {
  cmd_down
  [[ -d "$CLUSTER_DIR" ]] || return 0
  # Remove only a folder this script made.
  [[ -e "$CLUSTER_DIR/$MARKER" ]] ||
    die "$CLUSTER_DIR has no $MARKER marker: not removing a folder this script did not make"
  rm -rf -- "$CLUSTER_DIR"
  echo "removed $CLUSTER_DIR"
}

main() {
  local command="${1:-}"
  (($# > 0)) && shift
  case "$command" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status "$@" ;;
    kill) cmd_kill "$@" ;;
    start) cmd_start "$@" ;;
    pause) cmd_signal STOP "$@" ;;
    resume) cmd_signal CONT "$@" ;;
    logs) cmd_logs "$@" ;;
    clean) cmd_clean ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "cluster.sh: unknown command '$command'" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
