# Loopback port helpers, sourced by the scripts that start clusters (cluster.sh, bench.sh, ab.sh).

# True when something listens on 127.0.0.1:$1.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a base port whose three client gRPC ports (base, base+1, base+2), their HTTP ports
# (the same + 1000) and their peer ports (the same + 2000) nothing listens on; fails after 50
# tries.
free_base_port() {
  local base offset busy
  for _ in $(seq 1 50); do
    base=$((20000 + RANDOM % 30000))
    busy=0
    for offset in 0 1 2 1000 1001 1002 2000 2001 2002; do
      if port_in_use $((base + offset)); then busy=1; break; fi
    done
    if ((busy == 0)); then
      echo "$base"
      return 0
    fi
  done
  return 1
}
