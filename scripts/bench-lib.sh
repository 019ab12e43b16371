# Helpers shared by the sections of scripts/bench (sourced, not run).
#
# Every process a section starts is registered with `bench_track PID` and killed (by PID) when
# the script exits, whatever the reason. Scratch files live under $BENCH_TMP, removed at exit.

BENCH_PIDS=()
BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")

bench_cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$BENCH_TMP"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_track() { BENCH_PIDS+=("$1"); }

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "bench: $*" >&2; exit 1; }

# Succeeds when something accepts TCP on 127.0.0.1:$1.
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits (10 s max) until 127.0.0.1:$1 accepts connections.
wait_tcp() {
  local _
  for _ in $(seq 200); do
    tcp_open "$1" && return 0
    sleep 0.05
  done
  return 1
}

# Prints a loopback port nobody listens on (random in 20000-59999).
free_port() {
  local p _
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    tcp_open "$p" || { echo "$p"; return 0; }
  done
  die "no free port found"
}

now_ns() { date +%s%N; }

# median of the numbers given as arguments
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "nan"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# "min-max" of the numbers given as arguments
spread() {
  printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) print lo "-" hi; else print "nan" }'
}

# MB/s (10^6 bytes) for $1 bytes in $2 nanoseconds, one decimal.
mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.1f", b / 1e6 / (ns / 1e9) }'; }

# ratio $1/$2, two decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }

# The packages the benchmarks need (installed only when missing), and the release binaries.
bench_prepare() {
  local need=() p
  # package:command pairs; gcc and libc6-dev build ring and the bundled SQLite.
  for p in openssh-client:sftp openssh-server:/usr/sbin/sshd gcc:gcc libc6-dev:/usr/include/stdio.h \
    ca-certificates:/etc/ssl/certs/ca-certificates.crt; do
    [ -e "${p#*:}" ] || command -v "${p#*:}" >/dev/null 2>&1 || need+=("${p%%:*}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}" </dev/null >&2
  fi
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup) first"
  say "building release binaries"
  cargo build --release -p registry >&2
}
