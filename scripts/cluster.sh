#!/usr/bin/env bash
# Runs a local evlog cluster (three nodes, or $EVLOG_NODES) for development: start it, stop
# it, restart it node by node, hurt one node.
#
# Everything it owns lives under one folder ($EVLOG_CLUSTER_DIR, default ./.cluster in the
# repository root): data/node-N (each node's data directory), logs/node-N.log (its stderr and
# stdout), pids/node-N.pid, and the base port and node count it was created with. It signals
# only the processes it started: a recorded pid is used only while it still names an
# `evlog serve` process on that node's data directory.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
# shellcheck source=scripts/ports.sh
source "$REPO_ROOT/scripts/ports.sh"
readonly STARTUP_TIMEOUT_S="${EVLOG_STARTUP_TIMEOUT_S:-60}"
readonly STOP_TIMEOUT_S="${EVLOG_STOP_TIMEOUT_S:-30}"
readonly MARKER=".evlog-cluster"
# How long a started process may take to become `evlog` (the shell forked by `nohup … &`
# execs it a moment later).
readonly EXEC_TIMEOUT_S=10
# The HTTP port (status page, metrics) of a node is its gRPC port plus this (evlog's default).
readonly HTTP_PORT_OFFSET=1000
# The peer port (Raft traffic between the nodes) of a node is its gRPC port plus this (evlog's
# default too, given explicitly with --peer-listen).
readonly PEER_PORT_OFFSET=2000
# How long a node that could not bind its port is started again: a client that kept dialing
# the port while the node was down can have connected to itself on it (the port is in the
# kernel's ephemeral range), and that socket holds the port in TIME_WAIT for 60 s.
readonly BIND_RETRY_S=75

usage() {
  cat <<EOF
Usage: scripts/cluster.sh COMMAND [ARGS]

Runs a local evlog cluster on 127.0.0.1: three nodes, or EVLOG_NODES.

Commands:
  up [--tls] [--auth]
              build evlog (release) if missing or stale, start the nodes that are not
              running, wait until a leader is elected and every node serves, print the
              endpoints and status pages; when none of the cluster's data folders exists,
              the nodes found it (--bootstrap). Safe to repeat.
              --tls: TLS on both gRPC ports (mutual TLS between nodes), with a throwaway CA
              and certificates that \`evlog dev-certs\` writes to <cluster folder>/certs; the
              cluster stays TLS from then on (every command here passes its CA: EVLOG_CA)
              --auth: access control on (every call needs a token): a bootstrap token with
              ADMIN is written to <cluster folder>/bootstrap-token, and every command here
              sends it (EVLOG_TOKEN); create real tokens with \`evlog access\`
  down        stop every node: SIGTERM (a leader first hands its leadership to a
              follower), then SIGKILL after ${STOP_TIMEOUT_S}s. Safe to repeat.
  status [ARGS]
              which nodes run, then \`evlog status\` (ARGS are passed on, e.g. --json)
  rolling-restart
              restart every node in turn, followers first, then the leader after handing
              its leadership away (\`evlog cluster transfer-leader\`); each node must serve
              again, caught up with the leader, before the next one stops
  kill N      SIGKILL node N
  start N     start node N again on its data, and wait until it serves (a node whose folder
              was emptied waits to be caught up by the leader and votes only then); safe to
              repeat
  pause N     stop node N with SIGSTOP (it keeps its sockets but answers nothing)
  resume N    continue node N with SIGCONT
  logs N [LINES]
              print the last LINES (default 50) lines of node N's log
  clean       down, then remove the cluster folder
  -h, --help  this help

Environment:
  EVLOG_CLUSTER_DIR   folder for data, logs and pids (default: <repo>/.cluster)
  EVLOG_BASE_PORT     client gRPC port of node 1; node N uses BASE+N-1 (default: 50051, or
                      the port the cluster folder was created with); its peer port is the
                      gRPC port + $PEER_PORT_OFFSET, its status page is at
                      http://127.0.0.1:<gRPC port + $HTTP_PORT_OFFSET>/status
  EVLOG_NODES         how many nodes (default: 3, or the count the cluster folder was
                      created with); 5 survives two failures
  EVLOG_BIN           evlog binary to run (default: <repo>/target/release/evlog, or
                      \$CARGO_TARGET_DIR/release/evlog; built here)
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

# The node count, remembered in the folder like the base port.
node_count() {
  local remembered=""
  if [[ -r "$CLUSTER_DIR/nodes" ]]; then remembered="$(<"$CLUSTER_DIR/nodes")"; fi
  if [[ -n "${EVLOG_NODES:-}" && -n "$remembered" && "$EVLOG_NODES" != "$remembered" ]]; then
    die "$CLUSTER_DIR was created with EVLOG_NODES=$remembered, not $EVLOG_NODES"
  fi
  local count="${EVLOG_NODES:-${remembered:-3}}"
  [[ "$count" =~ ^[0-9]+$ ]] && ((count >= 1 && count <= 9)) ||
    die "EVLOG_NODES must be a node count from 1 to 9, got '$count'"
  echo "$count"
}
NODE_COUNT="$(node_count)"
readonly NODE_COUNT
mapfile -t NODES < <(seq 1 "$NODE_COUNT")
readonly NODES

port_of() { echo $((BASE_PORT + $1 - 1)); }
address_of() { echo "127.0.0.1:$(port_of "$1")"; }
peer_port_of() { echo $(($(port_of "$1") + PEER_PORT_OFFSET)); }
peer_address_of() { echo "127.0.0.1:$(peer_port_of "$1")"; }
status_url_of() { echo "http://127.0.0.1:$(($(port_of "$1") + HTTP_PORT_OFFSET))/status"; }
data_dir_of() { echo "$CLUSTER_DIR/data/node-$1"; }
log_of() { echo "$CLUSTER_DIR/logs/node-$1.log"; }
pid_file_of() { echo "$CLUSTER_DIR/pids/node-$1.pid"; }

# TLS is on for a cluster whose folder holds the CA `up --tls` made.
ca_file() { echo "$CLUSTER_DIR/certs/ca.pem"; }
tls_on() { [[ -f "$(ca_file)" ]]; }
# Access control is on for a cluster whose folder holds the token `up --auth` made.
token_file() { echo "$CLUSTER_DIR/bootstrap-token"; }
auth_on() { [[ -f "$(token_file)" ]]; }

# The endpoints as a user types them: https:// with TLS.
shown_endpoints() {
  if tls_on; then
    sed -e 's|^|https://|' -e 's|,|,https://|g' <<<"$(endpoints)"
  else
    endpoints
  fi
}

endpoints() {
  local n list=()
  for n in "${NODES[@]}"; do list+=("$(address_of "$n")"); done
  (IFS=,; echo "${list[*]}")
}

# The --peers value: every node's client and peer address (a binary older than the peer port,
# compared with scripts/ab.sh, gets client addresses only).
peers() {
  local n list=() with_peer="${1:-yes}"
  for n in "${NODES[@]}"; do
    if [[ "$with_peer" == yes ]]; then
      list+=("$n=$(address_of "$n")/$(peer_address_of "$n")")
    else
      list+=("$n=$(address_of "$n")")
    fi
  done
  (IFS=,; echo "${list[*]}")
}

check_node() {
  local n="${1:-}"
  if ! [[ "$n" =~ ^[0-9]+$ ]] || ((n < 1 || n > ${#NODES[@]})); then
    die "expected a node number from 1 to ${#NODES[@]}, got '${n}'"
  fi
}

# ---------------------------------------------------------------- the binary

binary() { echo "${EVLOG_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/evlog}"; }

# Prints the first source file newer than the binary, if any.
newer_source() {
  local bin="$1"
  find "$REPO_ROOT/node" "$REPO_ROOT/raft-store" "$REPO_ROOT/proto" "$REPO_ROOT/client" \
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
# node N (an evlog binary's name, or the name EVLOG_BIN gives it; `serve`, same data
# directory); fails otherwise.
node_pid() {
  local n="$1" pid_file pid comm args named
  pid_file="$(pid_file_of "$n")"
  [[ -r "$pid_file" ]] || return 1
  pid="$(<"$pid_file")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  comm="$(ps -o comm= -p "$pid" 2>/dev/null)" || return 1
  # The kernel keeps 15 characters of a process's name.
  named="$(basename -- "$(binary)")"
  [[ "$comm" == evlog* || "$comm" == "${named:0:15}" ]] || return 1
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
  local n="$1" mode="${2:-}" pid bin port extra=() bootstrap=() peer=() tls=() auth=()
  if pid="$(node_pid "$n")"; then
    echo "node $n is already running (pid $pid)"
    return
  fi
  bin="$(binary)"
  port="$(port_of "$n")"
  port_in_use "$port" && die "port $port (node $n) is already in use by another process"
  # (A binary older than --bootstrap, compared with scripts/ab.sh, founds without it; one
  # older than the peer port serves peers on its gRPC port.)
  if [[ "$mode" == found ]] && "$bin" serve --help 2>/dev/null | grep -q -- '--bootstrap'; then
    bootstrap=(--bootstrap)
  fi
  if "$bin" serve --help 2>/dev/null | grep -q -- '--peer-listen'; then
    port_in_use "$(peer_port_of "$n")" &&
      die "peer port $(peer_port_of "$n") (node $n) is already in use by another process"
    peer=(--peer-listen "$(peer_address_of "$n")" --peers "$(peers yes)")
  else
    peer=(--peers "$(peers no)")
  fi
  if tls_on; then
    local certs="$CLUSTER_DIR/certs"
    tls=(--tls-cert "$certs/node-$n.pem" --tls-key "$certs/node-$n.key"
      --peer-cert "$certs/node-$n.pem" --peer-key "$certs/node-$n.key" --peer-ca "$(ca_file)")
  fi
  if auth_on; then
    auth=(--auth --bootstrap-token-file "$(token_file)")
  fi
  mkdir -p "$CLUSTER_DIR/data" "$CLUSTER_DIR/logs" "$CLUSTER_DIR/pids"
  touch "$CLUSTER_DIR/$MARKER"
  echo "$BASE_PORT" >"$CLUSTER_DIR/base-port"
  echo "$NODE_COUNT" >"$CLUSTER_DIR/nodes"
  read -r -a extra <<<"${EVLOG_SERVE_ARGS:-}"
  local deadline=$((SECONDS + BIND_RETRY_S))
  while :; do
    launch_node "$n" "$bin" "${peer[@]}" ${tls[@]+"${tls[@]}"} ${auth[@]+"${auth[@]}"} ${bootstrap[@]+"${bootstrap[@]}"} ${extra[@]+"${extra[@]}"}
    pid="$(<"$(pid_file_of "$n")")"
    wait_exec "$n" "$pid" && break
    if tail -n 3 "$(log_of "$n")" | grep -q "Address already in use" && ((SECONDS < deadline)); then
      echo "node $n: port $port or its peer port is held (in TIME_WAIT?); starting it again in 1s" >&2
      sleep 1
      continue
    fi
    log_tail "$n"
    die "node $n (pid $pid) exited at start; its log is $(log_of "$n")"
  done
  echo "node $n: pid $pid, $(address_of "$n") (peers: $(peer_address_of "$n")), log $(log_of "$n")"
}

# Starts `evlog serve` for node N in the background with binary $2 and the extra arguments
# after it; records its pid.
launch_node() {
  local n="$1" bin="$2"
  shift 2
  echo "==== $(date '+%Y-%m-%dT%H:%M:%S%z') cluster.sh starts node $n ====" >>"$(log_of "$n")"
  nohup "$bin" serve \
    --id "$n" \
    --listen "$(address_of "$n")" \
    --data-dir "$(data_dir_of "$n")" \
    "$@" \
    </dev/null >>"$(log_of "$n")" 2>&1 &
  echo $! >"$(pid_file_of "$n")"
}

# Waits until the process started for node N (pid $2) is the evlog node: the shell that
# `nohup … &` forks is still `bash` for a moment before it execs. Fails when it exits first.
wait_exec() {
  local n="$1" pid="$2" deadline=$((SECONDS + EXEC_TIMEOUT_S))
  while ! node_pid "$n" >/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.05
  done
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

# Node N's own view (\`evlog status --json\` of its endpoint alone); fails when it does not
# answer.
node_status() {
  "$(binary)" status --endpoints "$(address_of "$1")" --json --timeout-ms 2000 2>/dev/null
}

# The value of the numeric field $2 in the JSON object $1 (the CLI prints one per line).
json_number() {
  grep -o "\"$2\":[0-9]*" <<<"$1" | head -n 1 | cut -d: -f2
}

# Succeeds when node N serves (caught up with a leader since it started) and knows a leader.
node_ready() {
  local out leader
  out="$(node_status "$1")" || return 1
  grep -q '"serving":true' <<<"$out" || return 1
  leader="$(json_number "$out" leader_id)"
  [[ -n "$leader" && "$leader" != 0 ]]
}

# Waits until every node of "$@" serves and knows a leader; dies when one exits (its own
# process, the pid this script started, not a process name read while it may still be a
# shell) or at the deadline.
wait_ready() {
  local deadline=$((SECONDS + STARTUP_TIMEOUT_S)) n waiting
  while ((SECONDS < deadline)); do
    waiting=()
    for n in "$@"; do
      if ! node_pid "$n" >/dev/null; then
        log_tail "$n"
        die "node $n exited while waiting for it to serve"
      fi
      node_ready "$n" || waiting+=("$n")
    done
    ((${#waiting[@]} == 0)) && return
    sleep 0.1
  done
  for n in "${waiting[@]}"; do log_tail "$n"; done
  die "node(s) ${waiting[*]} did not serve with a leader within ${STARTUP_TIMEOUT_S}s; logs are in $CLUSTER_DIR/logs"
}

# The leader's id as node N sees it (empty when none is known or N does not answer).
leader_of() {
  local out leader
  out="$(node_status "$1")" || return 0
  leader="$(json_number "$out" leader_id)"
  [[ "$leader" != 0 ]] && echo "$leader"
  return 0
}

# The leader as the running nodes see it (the first that names one).
current_leader() {
  local n leader
  for n in "${NODES[@]}"; do
    leader="$(leader_of "$n")"
    if [[ -n "$leader" ]]; then
      echo "$leader"
      return 0
    fi
  done
  return 1
}

# Succeeds when node N has applied everything the leader L had committed when asked.
caught_up_with() {
  local n="$1" leader="$2" leader_out node_out committed applied
  leader_out="$(node_status "$leader")" || return 1
  committed="$(json_number "$leader_out" committed_index)"
  node_out="$(node_status "$n")" || return 1
  grep -q '"serving":true' <<<"$node_out" || return 1
  applied="$(json_number "$node_out" applied_index)"
  [[ -n "$committed" && -n "$applied" ]] && ((applied >= committed))
}

# Waits (bounded) until node N serves and has applied what the leader had committed.
wait_caught_up() {
  local n="$1" deadline=$((SECONDS + STARTUP_TIMEOUT_S)) leader
  while ((SECONDS < deadline)); do
    node_pid "$n" >/dev/null || { log_tail "$n"; die "node $n exited while catching up"; }
    leader="$(current_leader)" || leader=""
    if [[ -n "$leader" ]] && caught_up_with "$n" "$leader"; then
      return
    fi
    sleep 0.1
  done
  log_tail "$n"
  die "node $n did not catch up with the leader within ${STARTUP_TIMEOUT_S}s"
}

# SIGTERMs node N (continuing it if paused) and waits until it is gone (SIGKILL after the
# stop timeout).
stop_node() {
  local n="$1" pid left
  pid="$(node_pid "$n")" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  if is_paused "$pid"; then kill -CONT "$pid" 2>/dev/null || true; fi
  left="$(wait_gone "$pid")"
  if [[ -n "$left" ]]; then
    echo "node $n (pid $pid) did not stop within ${STOP_TIMEOUT_S}s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" >/dev/null
  fi
  rm -f "$(pid_file_of "$n")"
}

# ---------------------------------------------------------------- commands

# Fails if a node runs: it was started without WHAT, which `up` is about to turn on.
refuse_running() {
  local n
  for n in "${NODES[@]}"; do
    node_pid "$n" >/dev/null && die "node $n runs without $1: stop the cluster first (scripts/cluster.sh down)"
  done
  return 0
}

cmd_up() {
  ensure_binary
  local n mode=found arg
  for arg in "$@"; do
    case "$arg" in
      --tls)
        tls_on && continue
        refuse_running "TLS"
        mkdir -p "$CLUSTER_DIR"
        "$(binary)" dev-certs --out "$CLUSTER_DIR/certs" --nodes "$NODE_COUNT" >/dev/null ||
          die "could not write certificates to $CLUSTER_DIR/certs"
        export EVLOG_CA="$(ca_file)"
        ;;
      --auth)
        auth_on && continue
        refuse_running "--auth"
        mkdir -p "$CLUSTER_DIR"
        (umask 077 && "$(binary)" access new-bootstrap-token >"$(token_file)") ||
          die "could not write $(token_file)"
        export EVLOG_TOKEN="$(<"$(token_file)")"
        ;;
      *) die "up takes --tls, --auth or nothing, got '$arg'" ;;
    esac
  done
  # The cluster is founded only when none of its data folders exists: a folder that exists
  # (or one that is missing beside others that exist) belongs to a cluster already.
  for n in "${NODES[@]}"; do
    if [[ -e "$(data_dir_of "$n")" ]]; then mode=""; fi
  done
  for n in "${NODES[@]}"; do start_node "$n" "$mode"; done
  wait_ready "${NODES[@]}"
  echo "evlog cluster is up ($NODE_COUNT nodes, leader: node $(current_leader || echo '?'))."
  for n in "${NODES[@]}"; do
    echo "  node $n: $(address_of "$n")  peer port $(peer_address_of "$n")  status page $(status_url_of "$n")"
  done
  local ca=""
  if tls_on; then
    ca=" --ca $(ca_file)"
    echo "  TLS: CA $(ca_file); node and client certificates beside it (never for production)"
  fi
  if auth_on; then
    echo "  access control: on; the bootstrap token (ADMIN) is in $(token_file):"
    echo "    export EVLOG_TOKEN=\$(cat $(token_file))"
  fi
  cat <<EOF
  endpoints: $(shown_endpoints)
  data:      $CLUSTER_DIR/data
  logs:      $CLUSTER_DIR/logs
try:
  $(binary) append --endpoints $(shown_endpoints)$ca demo "hello"
  $(binary) read --endpoints $(shown_endpoints)$ca --stream demo
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
        echo "node $n: paused  (pid $pid) $(address_of "$n")  peers $(peer_address_of "$n")  $(status_url_of "$n")"
      else
        echo "node $n: running (pid $pid) $(address_of "$n")  peers $(peer_address_of "$n")  $(status_url_of "$n")"
      fi
    else
      echo "node $n: stopped          $(address_of "$n")  peers $(peer_address_of "$n")  $(status_url_of "$n")"
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
  wait_ready "$1"
  echo "node $1 serves: $(address_of "$1")  peer port $(peer_address_of "$1")  status page $(status_url_of "$1")"
}

# Restarts node N (SIGTERM, start on its data) and waits until it serves, caught up.
restart_node() {
  local n="$1" started=$SECONDS
  stop_node "$n"
  start_node "$n" >/dev/null
  wait_ready "$n"
  wait_caught_up "$n"
  echo "node $n: restarted, serving and caught up in $((SECONDS - started))s"
}

cmd_rolling_restart() {
  ensure_binary
  local n leader followers=() new_leader
  for n in "${NODES[@]}"; do
    node_pid "$n" >/dev/null || die "node $n is not running: start it first (scripts/cluster.sh start $n)"
  done
  leader="$(current_leader)" || die "no leader is known: is the cluster up?"
  for n in "${NODES[@]}"; do
    [[ "$n" != "$leader" ]] && followers+=("$n")
  done
  echo "rolling restart: followers ${followers[*]:-none}, then the leader (node $leader)"
  for n in ${followers[@]+"${followers[@]}"}; do restart_node "$n"; done
  if ((${#followers[@]} > 0)); then
    "$(binary)" cluster --endpoints "$(endpoints)" transfer-leader ||
      die "could not hand the leadership away from node $leader"
    new_leader="$(leader_of "$leader")"
    [[ -n "$new_leader" && "$new_leader" != "$leader" ]] ||
      die "node $leader still leads after the transfer"
  fi
  restart_node "$leader"
  echo "rolling restart done; leader: node $(current_leader || echo '?')"
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
  # A TLS cluster: every evlog client command this script runs trusts its CA.
  if tls_on; then export EVLOG_CA="$(ca_file)"; fi
  # With access control: every command here sends the bootstrap token.
  if auth_on; then export EVLOG_TOKEN="$(<"$(token_file)")"; fi
  case "$command" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    rolling-restart) cmd_rolling_restart ;;
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
