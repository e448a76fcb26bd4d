#!/usr/bin/env bash
# Agent benchmark (release builds): pod startup latency p50/p99 for 100 pods created at 10/s,
# the time until 110 pods are all Running, the agent's RSS and CPU with them idle.
# AGENT_BENCH_PODS and AGENT_BENCH_DENSITY shrink it for a quick check. Runs as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p apiserver-lite -p cri -p agent -p e2e --bin apiserver-lite --bin cri --bin cri-monitor --bin agent --bin bench-agent
RUST_LOG="${RUST_LOG:-warn}" exec target/release/bench-agent "$@"
