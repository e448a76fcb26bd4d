#!/usr/bin/env bash
# A cluster on this machine with one command. For now: apiserver-lite in the foreground, its
# data under DATA_DIR (default ./_output/local-up); Ctrl-C or SIGTERM stops it cleanly.
# Later issues add the node (agent, cri, netproxy) here.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${DATA_DIR:-$PWD/_output/local-up}"
LISTEN="${LISTEN:-127.0.0.1:6443}"
STORAGE="${STORAGE:-sqlite}"
cargo build --release -p apiserver-lite
mkdir -p "$DATA_DIR"
echo "data dir: $DATA_DIR"
echo "when it is up: export KUBECONFIG=$DATA_DIR/admin.kubeconfig"
exec target/release/apiserver-lite --data-dir "$DATA_DIR" --listen "$LISTEN" --storage "$STORAGE" "$@"
