#!/usr/bin/env bash
# CRI benchmark: cri-lite (release build) and Debian's containerd 1.6 side by side in one run,
# through the same CRI client: RunPodSandbox + CreateContainer + StartContainer p50/p99 over 50
# pods in sequence, the wall time of 100 pods started at once, daemon and monitor/shim RSS with
# those 100 pods. Each runtime runs in its own network namespace with its own local registry;
# everything is removed at the end. Needs root.
# Usage: hack/bench/cri.sh   (CRI_BENCH_SEQUENTIAL=N CRI_BENCH_PARALLEL=M for a quick check)
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
for pair in containerd:containerd runc:runc docker-registry:docker-registry skopeo:skopeo \
  umoci:umoci nsenter:util-linux; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
if [[ ${#missing[@]} -gt 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
fi
# The bench profile is the release profile: the daemon it starts is the release `cri`; the
# test images are built by hack/images on first use.
exec cargo bench -p cri --bench cri "$@"
