#!/usr/bin/env bash
# apiserver-lite benchmark, SQLite and etcd side by side in one run (release build).
# Usage: hack/bench/apiserver.sh [sqlite|etcd]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v etcd >/dev/null || { echo "needs etcd: apt-get install etcd-server" >&2; exit 1; }
cargo build --release -p apiserver-lite -p e2e --bin apiserver-lite --bin bench-apiserver
RUST_LOG="${RUST_LOG:-warn}" exec target/release/bench-apiserver "$@"
