# Loopback port helpers, sourced by the scripts that start clusters (cluster.sh, bench.sh, ab.sh),
# and the disk counter the benchmarks read.

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

# Prints the bytes the device holding folder $1 has written since boot (/proc/diskstats, in
# sectors of 512 bytes): the whole machine's writes to that device. Prints nothing when the
# device cannot be told; never fails.
disk_written() {
  local device
  device="$(df -P "$1" 2>/dev/null | awk 'NR == 2 { print $1 }')" || return 0
  device="$(readlink -f "$device" 2>/dev/null)" || return 0
  awk -v name="${device##*/}" '$3 == name { printf "%.0f\n", $10 * 512 }' /proc/diskstats \
    2>/dev/null || true
}
