#!/usr/bin/env bash
# Emulated hosts for tests and benchmarks: K network namespaces joined to one switch.
#
#   netns.sh up K [RATE]   create hosts <p>-h0 .. <p>-h(K-1), each with eth0 = 198.18.0.(i+1)/24,
#                          linked by a veth pair to a bridge in namespace <p>-sw; with RATE
#                          (e.g. 1gbit) every link is shaped in both directions by tbf
#   netns.sh down          remove every namespace of the set (and with it every link)
#   netns.sh exec I CMD... run CMD inside host I
#   netns.sh addr I        print host I's address
#   netns.sh ns I          print host I's namespace name
#   netns.sh check         exit 0 when namespaces can be made here, 77 when not
#   netns.sh status        list the set's namespaces
#
# <p> is $OBCCL_NETNS_PREFIX (default "obccl"); concurrent users pick distinct prefixes.
# $OBCCL_NETNS_BURST sets the tbf burst (default 256kb). Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
# Exit status: 0 done, 1 failed, 2 usage, 77 network namespaces cannot be made here (tests skip).
# Addresses come from 198.18.0.0/15, the range set aside for benchmarking; nothing is routed
# outside the namespaces.
set -euo pipefail

readonly PREFIX="${OBCCL_NETNS_PREFIX:-obccl}"
readonly BURST="${OBCCL_NETNS_BURST:-256kb}"
readonly SWITCH="${PREFIX}-sw"
readonly MAX_HOSTS=200
readonly EXIT_UNSUPPORTED=77

die() { echo "netns.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
host_ns() { echo "${PREFIX}-h$1"; }
host_addr() { echo "198.18.0.$(($1 + 1))"; }

# Namespaces of this set, hosts first.
set_members() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}-(h[0-9]+|sw)\$" || true
}

unsupported() {
  echo "netns.sh: network namespaces cannot be made here: $*" >&2
  exit "$EXIT_UNSUPPORTED"
}

check() {
  command -v ip >/dev/null || unsupported "the ip command (iproute2) is missing"
  [[ $(id -u) -eq 0 ]] || unsupported "not root"
  local probe="${PREFIX}-probe-$$"
  ip netns add "$probe" 2>/dev/null || unsupported "'ip netns add' failed (no CAP_SYS_ADMIN?)"
  local ok=1
  ip -n "$probe" link add p0 type veth peer name p1 2>/dev/null || ok=0
  ip netns del "$probe" 2>/dev/null || true
  [[ $ok -eq 1 ]] || unsupported "veth links cannot be created"
}

down() {
  local ns
  for ns in $(set_members); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

# Shapes the egress of one interface in namespace $1.
shape() {
  local ns=$1 dev=$2 rate=$3
  ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "$rate" burst "$BURST" \
    latency 100ms || die "tc tbf rate $rate on $dev in $ns failed"
}

up() {
  local k=$1 rate=${2:-}
  [[ $k =~ ^[0-9]+$ ]] && ((k >= 1 && k <= MAX_HOSTS)) || die "K must be 1..$MAX_HOSTS, got '$k'"
  check
  down
  # A failure half way leaves nothing behind.
  trap 'rc=$?; if [[ $rc -ne 0 ]]; then down; fi; exit $rc' EXIT
  ip netns add "$SWITCH"
  ip -n "$SWITCH" link set lo up
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  local i ns
  for ((i = 0; i < k; i++)); do
    ns=$(host_ns "$i")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Created inside the namespaces, so no name is ever taken in the caller's namespace.
    ip link add eth0 netns "$ns" type veth peer name "p$i" netns "$SWITCH"
    ip -n "$ns" addr add "$(host_addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$SWITCH" link set "p$i" master br0
    ip -n "$SWITCH" link set "p$i" up
    if [[ -n $rate ]]; then
      shape "$ns" eth0 "$rate"
      shape "$SWITCH" "p$i" "$rate"
    fi
  done
  trap - EXIT
  echo "netns.sh: $k host(s) up (${PREFIX}-h0..${PREFIX}-h$((k - 1)), 198.18.0.1..$(host_addr $((k - 1)))${rate:+, $rate per link})"
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd=$1
  shift
  case "$cmd" in
    up) [[ $# -ge 1 && $# -le 2 ]] || usage; up "$@" ;;
    down) down ;;
    check) check ;;
    status) set_members ;;
    addr) [[ $# -eq 1 ]] || usage; host_addr "$1" ;;
    ns) [[ $# -eq 1 ]] || usage; host_ns "$1" ;;
    exec)
      [[ $# -ge 2 ]] || usage
      local ns
      ns=$(host_ns "$1")
      shift
      exec ip netns exec "$ns" "$@"
      ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
