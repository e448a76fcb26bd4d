#!/usr/bin/env bash
# A one-node cluster on this machine with one command: apiserver-lite (with its scheduler,
# controllers and cluster DNS), the cri runtime, the agent and netproxy (Services through
# nftables), all built in release mode, with data under
# DATA_DIR (default ./_output/local-up). The busybox and pause images are built from Debian
# packages and preloaded, so `kubectl create deployment web --image=busybox:1 -- httpd -f -p 8080`
# works offline. A local docker-registry on 127.0.0.1:REGISTRY_PORT serves them too (as
# library/busybox:latest and :1, and pause:3.10), and the runtime's registries file
# ($DATA_DIR/registries.yaml) sends docker.io and registry.k8s.io there, so
# `kubectl run x --image=busybox -- sleep 1d` (a :latest image, always pulled) works offline.
#
# Ctrl-C or SIGTERM stops everything and removes the containers, mounts, bridge and rules it
# created; a run after a crash first cleans up what the crashed one left. API objects persist
# in DATA_DIR across runs (delete the directory for a fresh cluster).
#
# Environment: DATA_DIR, LISTEN (127.0.0.1:6443), STORAGE (sqlite | etcd://host:port),
# NODE_NAME (the hostname), POD_CIDR (10.244.0.0/24), CLUSTER_CIDR (10.244.0.0/16),
# BRIDGE (cri0), PROFILE (release | debug), REGISTRY_PORT (5000), DNS_PORT (53).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

DATA_DIR="${DATA_DIR:-$root/_output/local-up}"
LISTEN="${LISTEN:-127.0.0.1:6443}"
STORAGE="${STORAGE:-sqlite}"
NODE_NAME="${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}"
POD_CIDR="${POD_CIDR:-10.244.0.0/24}"
CLUSTER_CIDR="${CLUSTER_CIDR:-10.244.0.0/16}"
BRIDGE="${BRIDGE:-cri0}"
REGISTRY_PORT="${REGISTRY_PORT:-5000}"

[[ $(id -u) == 0 ]] || { echo "local-up: run as root (namespaces, cgroups, mounts, nftables)" >&2; exit 1; }

packages=(protobuf-compiler libprotobuf-dev runc nftables iproute2 util-linux umoci skopeo busybox-static catatonit curl docker-registry)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "local-up: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v kubectl >/dev/null || echo "local-up: kubectl is not on PATH; install it to use the cluster" >&2

if [[ ${PROFILE:-release} == debug ]]; then
  cargo build -p apiserver-lite -p cri -p agent -p netproxy
  bin=$root/target/debug
else
  cargo build --release -p apiserver-lite -p cri -p agent -p netproxy
  bin=$root/target/release
fi

api_dir=$DATA_DIR/apiserver
cri_root=$DATA_DIR/cri
cri_state=$DATA_DIR/run/cri
agent_root=$DATA_DIR/agent
logs=$DATA_DIR/logs
socket=$DATA_DIR/run/cri.sock
cgroup_root=/local-up
mkdir -p "$api_dir" "$cri_root/preload" "$cri_state" "$agent_root" "$logs"

# The test images, preloaded into the runtime's store at its start.
hack/images "$DATA_DIR/images" >/dev/null
for image in busybox pause; do
  rm -rf "$cri_root/preload/$image"
  cp -r "$DATA_DIR/images/$image" "$cri_root/preload/$image"
done

pids=()
cleanup_runtime() {
  # Whatever a previous run (or this one) left: sandboxes through the daemon when it answers,
  # then mounts under the state directory, the bridge, the rules and the cgroups.
  if [[ -S $socket ]]; then "$bin/cri" reset --listen "$socket" >/dev/null 2>&1 || true; fi
  if [[ -d $cri_state/runc ]]; then
    for c in $(ls "$cri_state/runc" 2>/dev/null); do runc --root "$cri_state/runc" delete --force "$c" >/dev/null 2>&1 || true; done
  fi
  { grep -o " $DATA_DIR/run/[^ ]*" /proc/self/mountinfo 2>/dev/null || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link del "$BRIDGE" 2>/dev/null || true
  nft delete table ip "cri-lite-$BRIDGE" 2>/dev/null || true
  for h in /sys/fs/cgroup/*/; do
    [[ -d $h${cgroup_root#/} ]] && find "$h${cgroup_root#/}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

stop_all() {
  trap - INT TERM EXIT
  echo
  echo "local-up: stopping"
  [[ -n ${agent_pid:-} ]] && kill -TERM "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [[ -n ${proxy_pid:-} ]] && kill -TERM "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null || true
  "$bin/netproxy" --cleanup >/dev/null 2>&1 || true
  cleanup_runtime
  [[ -n ${cri_pid:-} ]] && kill -TERM "$cri_pid" 2>/dev/null && wait "$cri_pid" 2>/dev/null || true
  [[ -n ${api_pid:-} ]] && kill -TERM "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null || true
  [[ -n ${registry_pid:-} ]] && kill -TERM "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null || true
  echo "local-up: stopped; data kept in $DATA_DIR"
}

# A crashed earlier run: start its runtime once to remove what it left, then clean the rest.
if [[ -d $cri_state/runc || -S $socket ]]; then
  echo "local-up: cleaning up after an earlier run"
  "$bin/cri" serve --listen "$socket" --root "$cri_root" --state "$cri_state" --bridge "$BRIDGE" \
    --cluster-cidr "$CLUSTER_CIDR" --pod-cidr "$POD_CIDR" --cgroup-root "$cgroup_root" \
    >>"$logs/cri.log" 2>&1 &
  old=$!
  for _ in $(seq 50); do [[ -S $socket ]] && break; sleep 0.1; done
  cleanup_runtime
  kill -TERM "$old" 2>/dev/null; wait "$old" 2>/dev/null || true
  cleanup_runtime
fi

trap stop_all INT TERM EXIT

# The local registry, and the registries file that sends Docker Hub and registry.k8s.io to it.
registry_dir=$DATA_DIR/registry
registry=127.0.0.1:$REGISTRY_PORT
mkdir -p "$registry_dir"
cat >"$registry_dir/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $registry_dir/data}}
http: {addr: $registry}
EOF
docker-registry serve "$registry_dir/config.yml" >>"$logs/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  curl -sf "http://$registry/v2/" >/dev/null 2>&1 && break
  kill -0 "$registry_pid" 2>/dev/null || { echo "docker-registry exited (port $REGISTRY_PORT taken? set REGISTRY_PORT); see $logs/registry.log" >&2; tail -5 "$logs/registry.log" >&2; exit 1; }
  sleep 0.1
done
push() { skopeo copy --quiet --dest-tls-verify=false "oci:$DATA_DIR/images/$1:$1:1" "docker://$registry/$2"; }
push busybox library/busybox:latest
push busybox library/busybox:1
push pause pause:3.10
registries=$DATA_DIR/registries.yaml
cat >"$registries" <<EOF
# Written by hack/local-up.sh: Docker Hub and registry.k8s.io names come from the local registry.
mirrors:
  docker.io:
    endpoint: ["http://$registry"]
  registry.k8s.io:
    endpoint: ["http://$registry"]
EOF

node_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '/src/ {for (i=1;i<=NF;i++) if ($i=="src") print $(i+1)}')
[[ -n $node_ip ]] || node_ip=$(hostname -I 2>/dev/null | awk '{print $1}')
# The cluster DNS listens on the node's address (DNS_PORT, 53 by default), which pods reach
# through the kube-dns Service (10.96.0.10) that netproxy routes.
"$bin/apiserver-lite" --data-dir "$api_dir" --listen "$LISTEN" --storage "$STORAGE" \
  --cluster-cidr "$CLUSTER_CIDR" ${node_ip:+--dns-bind-address "$node_ip:${DNS_PORT:-53}"} >>"$logs/apiserver.log" 2>&1 &
api_pid=$!
for _ in $(seq 100); do
  curl -ksf "https://$LISTEN/readyz" >/dev/null 2>&1 && break
  kill -0 "$api_pid" 2>/dev/null || { echo "apiserver-lite exited; see $logs/apiserver.log" >&2; tail -5 "$logs/apiserver.log" >&2; exit 1; }
  sleep 0.1
done

"$bin/cri" serve --listen "$socket" --root "$cri_root" --state "$cri_state" --bridge "$BRIDGE" \
  --cluster-cidr "$CLUSTER_CIDR" --pod-cidr "$POD_CIDR" --cgroup-root "$cgroup_root" \
  --registries "$registries" >>"$logs/cri.log" 2>&1 &
cri_pid=$!
for _ in $(seq 100); do [[ -S $socket ]] && break; sleep 0.1; done
[[ -S $socket ]] || { echo "cri did not start; see $logs/cri.log" >&2; tail -5 "$logs/cri.log" >&2; exit 1; }

# After a crash the netproxy table may still be there; the new netproxy replaces it at start.
"$bin/netproxy" --kubeconfig "$api_dir/admin.kubeconfig" --hostname-override "$NODE_NAME" \
  --cluster-cidr "$CLUSTER_CIDR" >>"$logs/netproxy.log" 2>&1 &
proxy_pid=$!

"$bin/agent" --kubeconfig "$api_dir/admin.kubeconfig" --node-name "$NODE_NAME" \
  --runtime-endpoint "unix://$socket" --root-dir "$agent_root" --pod-log-dir "$logs/pods" \
  --pod-cidr "$POD_CIDR" --cgroup-root "$cgroup_root/kubepods" ${node_ip:+--node-ip "$node_ip"} \
  --cluster-dns 10.96.0.10 --cluster-domain cluster.local \
  >>"$logs/agent.log" 2>&1 &
agent_pid=$!

export KUBECONFIG=$api_dir/admin.kubeconfig
for _ in $(seq 300); do
  ready=$(kubectl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  [[ $ready == True ]] && break
  kill -0 "$agent_pid" 2>/dev/null || { echo "the agent exited; see $logs/agent.log" >&2; tail -5 "$logs/agent.log" >&2; exit 1; }
  sleep 0.1
done
[[ ${ready:-} == True ]] || { echo "the node did not become Ready; see $logs/agent.log" >&2; exit 1; }

cat <<EOF

A one-node cluster is up (node $NODE_NAME, pods in $POD_CIDR). In another shell:

  export KUBECONFIG=$api_dir/admin.kubeconfig
  kubectl get nodes
  kubectl create deployment web --image=busybox:1 -- httpd -f -p 8080 -h /etc
  kubectl run x --image=busybox -- sleep 1d     # pulled through $registries
  kubectl rollout status deployment/web
  kubectl get pods -o wide
  kubectl logs deployment/web; kubectl exec deploy/web -- hostname
  kubectl expose deployment web --port 80 --target-port 8080
  kubectl exec x -- wget -qO- web.default.svc.cluster.local/hostname   # DNS + Service
  kubectl port-forward svc/web 18080:80

Logs: $logs/{apiserver,cri,agent,netproxy,registry}.log. Ctrl-C stops the cluster and removes its containers.
EOF
wait "$api_pid" "$cri_pid" "$agent_pid" "$proxy_pid"
