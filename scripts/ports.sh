# Loopback port helpers, sourced by the scripts that start clusters (cluster.sh, bench.sh, ab.sh).

# True when something listens on 127.0.0.1:$1.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a base port whose three ports (base, base+1, base+2) nothing listens on; fails after
# 50 tries.
free_base_port() {
  local base
  for _ in $(seq 1 50); do
    base=$((20000 + RANDOM % 30000))
    if ! port_in_use "$base" && ! port_in_use $((base + 1)) && ! port_in_use $((base + 2)); then
      echo "$base"
      return 0
    fi
  done
  return 1
}
