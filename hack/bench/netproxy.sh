#!/usr/bin/env bash
# Service proxy benchmark: full sync time and one-endpoint-change (delta) time for 1,000 and
# 10,000 services x 10 endpoints, TCP connect (first packet) latency p50/p99 to a cluster IP
# among them, and the RSS of the process holding that state. Runs the real `nft` inside a
# throwaway network namespace, removed at the end. Needs root.
# Usage: hack/bench/netproxy.sh [sizes...]   (default 1000 10000; NETPROXY_BENCH_PROFILE=debug
# to skip the release build)
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v nft >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y nftables >/dev/null
command -v conntrack >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y conntrack >/dev/null
profile="${NETPROXY_BENCH_PROFILE:-release}"
if [[ "$profile" == release ]]; then
  cargo build -j1 --release -p netproxy --bin netproxy-bench
else
  cargo build -j1 -p netproxy --bin netproxy-bench
fi
bin="${CARGO_TARGET_DIR:-target}/$profile/netproxy-bench"
ns="netproxy-bench-$$"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add 10.255.0.1/32 dev lo
# A default route, as a node has: cluster IPs are routed before the output hook DNATs them.
ip -n "$ns" link add bench0 type veth peer name bench1
ip -n "$ns" link set bench0 up
ip -n "$ns" link set bench1 up
ip -n "$ns" addr add 10.254.0.1/24 dev bench0
ip -n "$ns" route add default via 10.254.0.2 dev bench0
echo "profile: $profile; kernel $(uname -r); $(nft --version)"
ip netns exec "$ns" "$bin" "$@"
