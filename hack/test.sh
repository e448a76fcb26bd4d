#!/usr/bin/env bash
# Everything the tests need, then every test: system packages (idempotent), build, formatting
# and lint checks, unit tests, end-to-end tests against the real binaries, kubectl and etcd.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(protobuf-compiler libprotobuf-dev etcd-server sqlite3 ca-certificates
  runc docker-registry skopeo umoci busybox-static catatonit nftables conntrack iptables iproute2 util-linux python3
  containerd containernetworking-plugins)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's etcd package may start a system service; the tests run their own instances.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now etcd >/dev/null 2>&1 || true; fi
pkill -x etcd -u etcd >/dev/null 2>&1 || true
# The same for the registry: tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi
# And for containerd: the agent's containerd test runs its own instance with its own config.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now containerd >/dev/null 2>&1 || true; fi
command -v kubectl >/dev/null || { echo "kubectl is required at /usr/bin/kubectl" >&2; exit 1; }

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo build --workspace --all-targets --locked
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
