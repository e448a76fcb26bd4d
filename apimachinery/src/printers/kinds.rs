//! The columns and row cells of each built-in kind, following kubectl's server-side printers.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::Column;
use super::format::{
    age, at, bool_at, container_cells, dedup, first_non_empty, format_label_selector,
    format_labels, has, human_duration, int_at, int_or_string, join_host_port,
    label_selector_string, len_at, list_at, list_with_more, or_none, quantity, since, str_at,
    time_at,
};

/// The columns and the row function of one kind.
#[derive(Clone, Copy)]
pub(crate) struct Printer {
    pub columns: &'static [Column],
    pub row: RowFn,
}

/// Computes the cells of one object at a given time.
pub(crate) type RowFn = fn(&Value, Timestamp) -> Vec<Value>;

pub(crate) const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub(crate) const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";
const SELECTOR_DESC: &str = "A label query over the objects this one selects.";

const fn col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

pub(crate) const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESC,
    priority: 0,
};
const AGE: Column = col("Age", "string", AGE_DESC);
const CONTAINERS: Column = wide("Containers", "string", CONTAINERS_DESC);
const IMAGES: Column = wide("Images", "string", IMAGES_DESC);
const SELECTOR: Column = wide("Selector", "string", SELECTOR_DESC);

/// The printer of a kind, if it has one of its own.
pub(crate) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let (columns, row): (&'static [Column], RowFn) = match (group, kind) {
        ("", "Pod") => (POD, pod_row),
        ("", "PodTemplate") => (POD_TEMPLATE, pod_template_row),
        ("", "Node") => (NODE, node_row),
        ("", "Namespace") => (NAMESPACE, namespace_row),
        ("", "Service") => (SERVICE, service_row),
        ("", "Endpoints") => (ENDPOINTS, endpoints_row),
        ("", "ConfigMap") => (CONFIG_MAP, config_map_row),
        ("", "Secret") => (SECRET, secret_row),
        ("", "ServiceAccount") => (SERVICE_ACCOUNT, service_account_row),
        ("", "Event") => (EVENT, event_row),
        ("events.k8s.io", "Event") => (EVENT, events_v1_event_row),
        ("", "PersistentVolume") => (PERSISTENT_VOLUME, persistent_volume_row),
        ("", "PersistentVolumeClaim") => (PERSISTENT_VOLUME_CLAIM, pvc_row),
        ("", "ReplicationController") => (REPLICATION_CONTROLLER, replication_controller_row),
        ("", "ResourceQuota") => (RESOURCE_QUOTA, resource_quota_row),
        ("apps", "Deployment") => (DEPLOYMENT, deployment_row),
        ("apps", "ReplicaSet") => (REPLICA_SET, replica_set_row),
        ("apps", "DaemonSet") => (DAEMON_SET, daemon_set_row),
        ("apps", "StatefulSet") => (STATEFUL_SET, stateful_set_row),
        ("apps", "ControllerRevision") => (CONTROLLER_REVISION, controller_revision_row),
        ("batch", "Job") => (JOB, job_row),
        ("batch", "CronJob") => (CRON_JOB, cron_job_row),
        ("discovery.k8s.io", "EndpointSlice") => (ENDPOINT_SLICE, endpoint_slice_row),
        ("coordination.k8s.io", "Lease") => (LEASE, lease_row),
        ("storage.k8s.io", "StorageClass") => (STORAGE_CLASS, storage_class_row),
        ("storage.k8s.io", "CSIDriver") => (CSI_DRIVER, csi_driver_row),
        ("storage.k8s.io", "CSINode") => (CSI_NODE, csi_node_row),
        ("storage.k8s.io", "VolumeAttachment") => (VOLUME_ATTACHMENT, volume_attachment_row),
        ("scheduling.k8s.io", "PriorityClass") => (PRIORITY_CLASS, priority_class_row),
        ("rbac.authorization.k8s.io", "RoleBinding") => (ROLE_BINDING, binding_row),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => (CLUSTER_ROLE_BINDING, binding_row),
        ("certificates.k8s.io", "CertificateSigningRequest") => (CSR, csr_row),
        ("policy", "PodDisruptionBudget") => (PDB, pdb_row),
        ("networking.k8s.io", "Ingress") => (INGRESS, ingress_row),
        ("networking.k8s.io", "IngressClass") => (INGRESS_CLASS, ingress_class_row),
        ("networking.k8s.io", "NetworkPolicy") => (NETWORK_POLICY, network_policy_row),
        ("autoscaling", "HorizontalPodAutoscaler") => (HPA, hpa_row),
        ("node.k8s.io", "RuntimeClass") => (RUNTIME_CLASS, runtime_class_row),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
        | ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            (WEBHOOK_CONFIGURATION, webhook_configuration_row)
        }
        _ => return None,
    };
    Some(Printer { columns, row })
}

fn name(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

fn is_deleting(obj: &Value) -> bool {
    has(obj, &["metadata", "deletionTimestamp"])
}

// ---------------------------------------------------------------------------------------------
// Pods

static POD: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled.",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

/// Keeps the later of two optional times (a missing time is the earliest).
fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| str_at(c, &["type"]) == type_ && str_at(c, &["status"]) == "True")
}

/// The STATUS, READY and RESTARTS of a pod, as kubectl works them out.
pub(crate) struct PodSummary {
    pub ready: usize,
    pub total: usize,
    pub reason: String,
    pub restarts: i64,
    pub last_restart: Option<Timestamp>,
}

pub(crate) fn pod_summary(pod: &Value) -> PodSummary {
    let spec = at(pod, &["spec"]);
    let status = at(pod, &["status"]);
    let phase = str_at(status, &["phase"]);
    let conditions = list_at(status, &["conditions"]);
    let init_specs = list_at(spec, &["initContainers"]);

    let mut reason = first_non_empty(&[str_at(status, &["reason"]), phase]).to_string();
    for c in conditions {
        if str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let is_sidecar = |container_name: &str| {
        init_specs.iter().any(|c| {
            str_at(c, &["name"]) == container_name && str_at(c, &["restartPolicy"]) == "Always"
        })
    };
    let total = list_at(spec, &["containers"]).len()
        + init_specs
            .iter()
            .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let mut initializing = false;
    let init_statuses = list_at(status, &["initContainerStatuses"]);
    for (i, cs) in init_statuses.iter().enumerate() {
        let count = int_at(cs, &["restartCount"]);
        let finished = time_at(cs, &["lastState", "terminated", "finishedAt"]);
        restarts += count;
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(str_at(cs, &["name"]));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let terminated = at(cs, &["state", "terminated"]);
        let waiting = at(cs, &["state", "waiting"]);
        if terminated.is_object() && int_at(terminated, &["exitCode"]) == 0 {
            continue;
        }
        if sidecar && bool_at(cs, &["started"]) {
            if bool_at(cs, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        if terminated.is_object() {
            let why = str_at(terminated, &["reason"]);
            reason = if !why.is_empty() {
                format!("Init:{why}")
            } else if int_at(terminated, &["signal"]) != 0 {
                format!("Init:Signal:{}", int_at(terminated, &["signal"]))
            } else {
                format!("Init:ExitCode:{}", int_at(terminated, &["exitCode"]))
            };
        } else if waiting.is_object()
            && !str_at(waiting, &["reason"]).is_empty()
            && str_at(waiting, &["reason"]) != "PodInitializing"
        {
            reason = format!("Init:{}", str_at(waiting, &["reason"]));
        } else {
            reason = format!("Init:{}/{}", i, init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in list_at(status, &["containerStatuses"]).iter().rev() {
            restarts += int_at(cs, &["restartCount"]);
            last_restart = later(
                last_restart,
                time_at(cs, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting = at(cs, &["state", "waiting"]);
            let terminated = at(cs, &["state", "terminated"]);
            if waiting.is_object() && !str_at(waiting, &["reason"]).is_empty() {
                reason = str_at(waiting, &["reason"]).to_string();
            } else if terminated.is_object() && !str_at(terminated, &["reason"]).is_empty() {
                reason = str_at(terminated, &["reason"]).to_string();
            } else if terminated.is_object() {
                reason = if int_at(terminated, &["signal"]) != 0 {
                    format!("Signal:{}", int_at(terminated, &["signal"]))
                } else {
                    format!("ExitCode:{}", int_at(terminated, &["exitCode"]))
                };
            } else if bool_at(cs, &["ready"]) && at(cs, &["state", "running"]).is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(conditions, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if is_deleting(pod) && str_at(status, &["reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if is_deleting(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }
    PodSummary {
        ready,
        total,
        reason,
        restarts,
        last_restart,
    }
}

fn pod_row(pod: &Value, now: Timestamp) -> Vec<Value> {
    let summary = pod_summary(pod);
    let restarts = match summary.last_restart {
        Some(t) if summary.restarts != 0 => {
            format!("{} ({} ago)", summary.restarts, since(Some(t), now))
        }
        _ => summary.restarts.to_string(),
    };
    let status = at(pod, &["status"]);
    let ip = list_at(status, &["podIPs"])
        .first()
        .map(|p| str_at(p, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| str_at(status, &["podIP"]));
    let gates = list_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = list_at(status, &["conditions"]);
        let passing = gates
            .iter()
            .filter(|g| {
                let wanted = str_at(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == wanted)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };
    vec![
        name(pod),
        json!(format!("{}/{}", summary.ready, summary.total)),
        json!(summary.reason),
        json!(restarts),
        json!(age(pod, now)),
        json!(or_none(ip)),
        json!(or_none(str_at(pod, &["spec", "nodeName"]))),
        json!(or_none(str_at(status, &["nominatedNodeName"]))),
        json!(readiness_gates),
    ]
}

/// Row conditions of a pod: finished pods are marked Completed, as upstream does.
pub(crate) fn pod_row_conditions(pod: &Value) -> Option<Value> {
    match str_at(pod, &["status", "phase"]) {
        "Succeeded" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully."
        }])),
        "Failed" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Failed",
            "message": "The pod failed."
        }])),
        _ => None,
    }
}

static POD_TEMPLATE: &[Column] = &[
    NAME,
    col("Containers", "string", CONTAINERS_DESC),
    col("Images", "string", IMAGES_DESC),
    col("Pod Labels", "string", "The labels for the pod template."),
];

fn pod_template_row(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(obj, &["template", "spec"]));
    vec![
        name(obj),
        json!(names),
        json!(images),
        json!(format_labels(at(obj, &["template", "metadata", "labels"]))),
    ]
}

// ---------------------------------------------------------------------------------------------
// Nodes and namespaces

static NODE: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

/// The roles of a node from its `node-role.kubernetes.io/<role>` and `kubernetes.io/role`
/// labels, sorted.
pub fn node_roles(node: &Value) -> Vec<String> {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = at(node, &["metadata", "labels"]).as_object() {
        for (k, v) in labels {
            let role = if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                role
            } else if k == "kubernetes.io/role" {
                v.as_str().unwrap_or("")
            } else {
                ""
            };
            if !role.is_empty() && !roles.iter().any(|r| r == role) {
                roles.push(role.to_string());
            }
        }
    }
    roles.sort();
    roles
}

fn node_address(node: &Value, type_: &str) -> String {
    list_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == type_)
        .map(|a| str_at(a, &["address"]).to_string())
        .unwrap_or_else(|| "<none>".to_string())
}

fn node_row(node: &Value, now: Timestamp) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = list_at(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
    {
        status.push(if str_at(c, &["status"]) == "True" {
            "Ready".to_string()
        } else {
            "NotReady".to_string()
        });
    }
    if status.is_empty() {
        status.push("Unknown".to_string());
    }
    if bool_at(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled".to_string());
    }
    let roles = node_roles(node).join(",");
    let info = at(node, &["status", "nodeInfo"]);
    let unknown = |s: &str| {
        if s.is_empty() {
            "<unknown>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        name(node),
        json!(status.join(",")),
        json!(or_none(&roles)),
        json!(age(node, now)),
        json!(str_at(info, &["kubeletVersion"])),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(unknown(str_at(info, &["osImage"]))),
        json!(unknown(str_at(info, &["kernelVersion"]))),
        json!(unknown(str_at(info, &["containerRuntimeVersion"]))),
    ]
}

static NAMESPACE: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

fn namespace_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(str_at(obj, &["status", "phase"])),
        json!(age(obj, now)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Services and endpoints

static SERVICE: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP.",
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

/// The PORT(S) cell of a service: `80/TCP`, or `80:30080/TCP` with a node port.
pub fn service_ports(svc: &Value) -> String {
    list_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = str_at(p, &["protocol"]);
            let node_port = int_at(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn load_balancer_ingress(status: &Value) -> Vec<String> {
    dedup(
        list_at(status, &["ingress"])
            .iter()
            .filter_map(|i| {
                let ip = str_at(i, &["ip"]);
                let host = str_at(i, &["hostname"]);
                let v = first_non_empty(&[ip, host]);
                (!v.is_empty()).then(|| v.to_string())
            })
            .collect(),
    )
}

/// The EXTERNAL-IP cell of a service.
pub fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = list_at(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match str_at(svc, &["spec", "type"]) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let mut all = load_balancer_ingress(at(svc, &["status", "loadBalancer"]));
            if !external.is_empty() {
                all.extend(external.iter().map(|s| s.to_string()));
                return all.join(",");
            }
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_row(svc: &Value, now: Timestamp) -> Vec<Value> {
    let cluster_ip = list_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(svc, &["spec", "clusterIP"]));
    let ports = service_ports(svc);
    vec![
        name(svc),
        json!(str_at(svc, &["spec", "type"])),
        json!(or_none(cluster_ip)),
        json!(service_external_ip(svc)),
        json!(or_none(&ports)),
        json!(age(svc, now)),
        json!(format_labels(at(svc, &["spec", "selector"]))),
    ]
}

static ENDPOINTS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

/// The ENDPOINTS cell: up to three `ip:port`s, then `" + N more..."`; `"<none>"` without subsets.
pub fn format_endpoints(endpoints: &Value) -> String {
    let subsets = list_at(endpoints, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut shown: Vec<String> = Vec::new();
    let mut count = 0usize;
    let mut more = false;
    for subset in subsets {
        let addresses = list_at(subset, &["addresses"]);
        let ports = list_at(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(join_host_port(str_at(a, &["ip"]), int_at(port, &["port"])));
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoints_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(format_endpoints(obj)),
        json!(age(obj, now)),
    ]
}

static ENDPOINT_SLICE: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

fn endpoint_slice_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = list_at(obj, &["ports"])
        .iter()
        .map(|p| {
            if has(p, &["port"]) {
                int_at(p, &["port"]).to_string()
            } else if has(p, &["name"]) {
                str_at(p, &["name"]).to_string()
            } else {
                "*".to_string()
            }
        })
        .collect();
    let addresses: Vec<String> = list_at(obj, &["endpoints"])
        .iter()
        .flat_map(|e| list_at(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        name(obj),
        json!(str_at(obj, &["addressType"])),
        json!(list_with_more(&ports, ports.len())),
        json!(list_with_more(&addresses, addresses.len())),
        json!(age(obj, now)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Config

static CONFIG_MAP: &[Column] = &[
    NAME,
    col("Data", "string", "Data contains the configuration data."),
    AGE,
];

fn config_map_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let n = len_at(obj, &["data"]) + len_at(obj, &["binaryData"]);
    vec![name(obj), json!(n), json!(age(obj, now))]
}

static SECRET: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", "Data contains the secret data."),
    AGE,
];

fn secret_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(str_at(obj, &["type"])),
        json!(len_at(obj, &["data"])),
        json!(age(obj, now)),
    ]
}

static SERVICE_ACCOUNT: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

fn service_account_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(len_at(obj, &["secrets"])),
        json!(age(obj, now)),
    ]
}

static RESOURCE_QUOTA: &[Column] = &[
    NAME,
    AGE,
    col(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
];

fn resource_quota_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let hard = at(obj, &["status", "hard"]);
    let used = at(obj, &["status", "used"]);
    let mut resources: Vec<&String> = hard
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    resources.sort();
    let mut requests: Vec<String> = Vec::new();
    let mut limits: Vec<String> = Vec::new();
    for r in resources {
        let text = format!(
            "{r}: {}/{}",
            quantity(at(used, &[r.as_str()])),
            quantity(at(hard, &[r.as_str()]))
        );
        let mut pieces = r.split('.');
        let first = pieces.next().unwrap_or("");
        if pieces.next().is_some() && first == "limits" {
            limits.push(text);
        } else {
            requests.push(text);
        }
    }
    vec![
        name(obj),
        json!(age(obj, now)),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
    ]
}

// ---------------------------------------------------------------------------------------------
// Events

static EVENT: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: NAME_DESC,
        priority: 1,
    },
];

fn event_row(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = match time_at(ev, &["firstTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => since(time_at(ev, &["eventTime"]), now),
    };
    let mut last = match time_at(ev, &["lastTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int_at(ev, &["count"]);
    if has(ev, &["series"]) {
        last = since(time_at(ev, &["series", "lastObservedTime"]), now);
        count = int_at(ev, &["series", "count"]);
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(ev, &["involvedObject", "kind"]).to_lowercase();
    let object_name = str_at(ev, &["involvedObject", "name"]);
    let target = if object_name.is_empty() {
        kind
    } else {
        format!("{kind}/{object_name}")
    };
    let component = first_non_empty(&[
        str_at(ev, &["source", "component"]),
        str_at(ev, &["reportingComponent"]),
    ]);
    let instance = first_non_empty(&[
        str_at(ev, &["source", "host"]),
        str_at(ev, &["reportingInstance"]),
    ]);
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(str_at(ev, &["type"])),
        json!(str_at(ev, &["reason"])),
        json!(target),
        json!(str_at(ev, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(str_at(ev, &["message"]).trim()),
        json!(first),
        json!(count),
        name(ev),
    ]
}

/// An events.k8s.io/v1 Event in the core v1 shape, as the API server converts it.
pub(crate) fn events_v1_as_core(ev: &Value) -> Value {
    let mut core = serde_json::Map::new();
    let mut copy = |from: &str, to: &str| {
        if let Some(v) = ev.get(from).filter(|v| !v.is_null()) {
            core.insert(to.to_string(), v.clone());
        }
    };
    copy("metadata", "metadata");
    copy("regarding", "involvedObject");
    copy("related", "related");
    copy("note", "message");
    copy("reason", "reason");
    copy("type", "type");
    copy("deprecatedSource", "source");
    copy("deprecatedFirstTimestamp", "firstTimestamp");
    copy("deprecatedLastTimestamp", "lastTimestamp");
    copy("deprecatedCount", "count");
    copy("series", "series");
    copy("eventTime", "eventTime");
    copy("action", "action");
    copy("reportingController", "reportingComponent");
    copy("reportingInstance", "reportingInstance");
    Value::Object(core)
}

fn events_v1_event_row(ev: &Value, now: Timestamp) -> Vec<Value> {
    event_row(&events_v1_as_core(ev), now)
}

// ---------------------------------------------------------------------------------------------
// Storage

static PERSISTENT_VOLUME: &[Column] = &[
    NAME,
    col(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted.",
    ),
    col(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
    ),
    col(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim.",
    ),
    col(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
    ),
    col("StorageClass", "string", "StorageClass of the pv"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
    ),
    col(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
    ),
];

/// Access modes in kubectl's short form, e.g. `RWO,RWX`.
pub fn access_modes(modes: &[Value]) -> String {
    let has_mode = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(long, _)| has_mode(long))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn storage_class_of(obj: &Value) -> String {
    let beta = str_at(
        obj,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    );
    if !beta.is_empty() {
        return beta.to_string();
    }
    str_at(obj, &["spec", "storageClassName"]).to_string()
}

fn unset_or(v: &Value) -> String {
    v.as_str().unwrap_or("<unset>").to_string()
}

fn persistent_volume_row(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = if has(pv, &["spec", "claimRef"]) {
        format!(
            "{}/{}",
            str_at(pv, &["spec", "claimRef", "namespace"]),
            str_at(pv, &["spec", "claimRef", "name"])
        )
    } else {
        String::new()
    };
    let phase = if is_deleting(pv) {
        "Terminating"
    } else {
        str_at(pv, &["status", "phase"])
    };
    vec![
        name(pv),
        json!(quantity(at(pv, &["spec", "capacity", "storage"]))),
        json!(access_modes(list_at(pv, &["spec", "accessModes"]))),
        json!(str_at(pv, &["spec", "persistentVolumeReclaimPolicy"])),
        json!(phase),
        json!(claim),
        json!(storage_class_of(pv)),
        json!(unset_or(at(pv, &["spec", "volumeAttributesClassName"]))),
        json!(str_at(pv, &["status", "reason"])),
        json!(age(pv, now)),
        json!(unset_or(at(pv, &["spec", "volumeMode"]))),
    ]
}

static PERSISTENT_VOLUME_CLAIM: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    col(
        "Volume",
        "string",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    col(
        "Capacity",
        "string",
        "capacity represents the actual resources of the underlying volume.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has.",
    ),
    col("StorageClass", "string", "StorageClass of the pvc"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim.",
    ),
];

fn pvc_row(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if is_deleting(pvc) {
        "Terminating"
    } else {
        str_at(pvc, &["status", "phase"])
    };
    let volume = str_at(pvc, &["spec", "volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(at(pvc, &["status", "capacity", "storage"])),
            access_modes(list_at(pvc, &["status", "accessModes"])),
        )
    };
    vec![
        name(pvc),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class_of(pvc)),
        json!(unset_or(at(pvc, &["spec", "volumeAttributesClassName"]))),
        json!(age(pvc, now)),
        json!(unset_or(at(pvc, &["spec", "volumeMode"]))),
    ]
}

static STORAGE_CLASS: &[Column] = &[
    NAME,
    col(
        "Provisioner",
        "string",
        "provisioner indicates the type of the provisioner.",
    ),
    col(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE,
];

fn storage_class_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let annotations = at(obj, &["metadata", "annotations"]);
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| str_at(annotations, &[k]) == "true");
    let mut shown = str_at(obj, &["metadata", "name"]).to_string();
    if is_default {
        shown.push_str(" (default)");
    }
    vec![
        json!(shown),
        json!(str_at(obj, &["provisioner"])),
        json!(first_non_empty(&[
            str_at(obj, &["reclaimPolicy"]),
            "Delete"
        ])),
        json!(first_non_empty(&[
            str_at(obj, &["volumeBindingMode"]),
            "Immediate"
        ])),
        json!(bool_at(obj, &["allowVolumeExpansion"])),
        json!(age(obj, now)),
    ]
}

static CSI_DRIVER: &[Column] = &[
    NAME,
    col(
        "AttachRequired",
        "boolean",
        "attachRequired indicates this CSI volume driver requires an attach operation.",
    ),
    col(
        "PodInfoOnMount",
        "boolean",
        "podInfoOnMount indicates this CSI volume driver requires additional pod information during mount operations.",
    ),
    col(
        "StorageCapacity",
        "boolean",
        "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity.",
    ),
    col(
        "TokenRequests",
        "string",
        "tokenRequests indicates the CSI driver needs pods' service account tokens.",
    ),
    col(
        "RequiresRepublish",
        "boolean",
        "requiresRepublish indicates the CSI driver wants NodePublishVolume being periodically called.",
    ),
    col(
        "Modes",
        "string",
        "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports.",
    ),
    AGE,
];

fn csi_driver_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let spec = at(obj, &["spec"]);
    let attach_required = at(spec, &["attachRequired"]).as_bool().unwrap_or(true);
    let modes: Vec<&str> = list_at(spec, &["volumeLifecycleModes"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let token_requests = match at(spec, &["tokenRequests"]).as_array() {
        Some(list) => list
            .iter()
            .map(|t| str_at(t, &["audience"]))
            .collect::<Vec<_>>()
            .join(","),
        None => "<unset>".to_string(),
    };
    vec![
        name(obj),
        json!(attach_required),
        json!(bool_at(spec, &["podInfoOnMount"])),
        json!(bool_at(spec, &["storageCapacity"])),
        json!(token_requests),
        json!(bool_at(spec, &["requiresRepublish"])),
        json!(or_none(&modes.join(","))),
        json!(age(obj, now)),
    ]
}

static CSI_NODE: &[Column] = &[
    NAME,
    col(
        "Drivers",
        "integer",
        "Drivers indicates the number of CSI drivers registered on the node",
    ),
    AGE,
];

fn csi_node_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(len_at(obj, &["spec", "drivers"])),
        json!(age(obj, now)),
    ]
}

static VOLUME_ATTACHMENT: &[Column] = &[
    NAME,
    Column {
        name: "Attacher",
        type_: "string",
        format: "name",
        description: "attacher indicates the name of the volume driver that MUST handle this request.",
        priority: 0,
    },
    col(
        "PV",
        "string",
        "persistentVolumeName represents the name of the persistent volume to attach.",
    ),
    col(
        "Node",
        "string",
        "nodeName represents the node that the volume should be attached to.",
    ),
    col(
        "Attached",
        "boolean",
        "attached indicates the volume is successfully attached.",
    ),
    AGE,
];

fn volume_attachment_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(str_at(obj, &["spec", "attacher"])),
        json!(str_at(obj, &["spec", "source", "persistentVolumeName"])),
        json!(str_at(obj, &["spec", "nodeName"])),
        json!(bool_at(obj, &["status", "attached"])),
        json!(age(obj, now)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Workloads

static DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn deployment_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(obj, &["spec", "template", "spec"]));
    let selector = match label_selector_string(at(obj, &["spec", "selector"])) {
        Ok(s) => s,
        Err(_) => "<invalid>".to_string(),
    };
    vec![
        name(obj),
        json!(format!(
            "{}/{}",
            int_at(obj, &["status", "readyReplicas"]),
            int_at(obj, &["spec", "replicas"])
        )),
        json!(int_at(obj, &["status", "updatedReplicas"])),
        json!(int_at(obj, &["status", "availableReplicas"])),
        json!(age(obj, now)),
        json!(names),
        json!(images),
        json!(selector),
    ]
}

static REPLICA_SET: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired pods.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of non-terminating pods.",
    ),
    col(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replica_set_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(obj, &["spec", "template", "spec"]));
    vec![
        name(obj),
        json!(int_at(obj, &["spec", "replicas"])),
        json!(int_at(obj, &["status", "replicas"])),
        json!(int_at(obj, &["status", "readyReplicas"])),
        json!(age(obj, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(obj, &["spec", "selector"]))),
    ]
}

static REPLICATION_CONTROLLER: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replication controller.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replication_controller_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(obj, &["spec", "template", "spec"]));
    vec![
        name(obj),
        json!(int_at(obj, &["spec", "replicas"])),
        json!(int_at(obj, &["status", "replicas"])),
        json!(int_at(obj, &["status", "readyReplicas"])),
        json!(age(obj, now)),
        json!(names),
        json!(images),
        json!(format_labels(at(obj, &["spec", "selector"]))),
    ]
}

static DAEMON_SET: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod.",
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    col(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
    ),
    col(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemon_set_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(obj, &["spec", "template", "spec"]));
    vec![
        name(obj),
        json!(int_at(obj, &["status", "desiredNumberScheduled"])),
        json!(int_at(obj, &["status", "currentNumberScheduled"])),
        json!(int_at(obj, &["status", "numberReady"])),
        json!(int_at(obj, &["status", "updatedNumberScheduled"])),
        json!(int_at(obj, &["status", "numberAvailable"])),
        json!(format_labels(at(
            obj,
            &["spec", "template", "spec", "nodeSelector"]
        ))),
        json!(age(obj, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(obj, &["spec", "selector"]))),
    ]
}

static STATEFUL_SET: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

fn stateful_set_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(at(obj, &["spec", "template", "spec"]));
    vec![
        name(obj),
        json!(format!(
            "{}/{}",
            int_at(obj, &["status", "readyReplicas"]),
            int_at(obj, &["spec", "replicas"])
        )),
        json!(age(obj, now)),
        json!(names),
        json!(images),
    ]
}

static CONTROLLER_REVISION: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

fn controller_revision_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let controller = list_at(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| bool_at(r, &["controller"]));
    let controller_name = match controller {
        None => "<none>".to_string(),
        Some(r) => {
            let api_version = str_at(r, &["apiVersion"]);
            let group = match api_version.split_once('/') {
                Some((g, _)) => g,
                None => "",
            };
            let kind = str_at(r, &["kind"]);
            let ref_name = str_at(r, &["name"]);
            let group_kind = if group.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}.{group}")
            };
            if group_kind.is_empty() {
                ref_name.to_string()
            } else {
                format!("{}/{ref_name}", group_kind.to_lowercase())
            }
        }
    };
    vec![
        name(obj),
        json!(controller_name),
        json!(int_at(obj, &["revision"])),
        json!(age(obj, now)),
    ]
}

static JOB: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// The STATUS cell of a job.
pub fn job_status(job: &Value) -> &'static str {
    let conditions = list_at(job, &["status", "conditions"]);
    // Upstream looks at the first condition of each type only.
    let is = |type_: &str| {
        conditions
            .iter()
            .find(|c| str_at(c, &["type"]) == type_)
            .is_some_and(|c| str_at(c, &["status"]) == "True")
    };
    if is("Complete") {
        "Complete"
    } else if is("Failed") {
        "Failed"
    } else if is_deleting(job) {
        "Terminating"
    } else if is("Suspended") {
        "Suspended"
    } else if is("FailureTarget") {
        "FailureTarget"
    } else if is("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

fn job_row(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int_at(job, &["status", "succeeded"]);
    let completions = if has(job, &["spec", "completions"]) {
        format!("{succeeded}/{}", int_at(job, &["spec", "completions"]))
    } else {
        let parallelism = int_at(job, &["spec", "parallelism"]);
        if parallelism > 1 {
            format!("{succeeded}/1 of {parallelism}")
        } else {
            format!("{succeeded}/1")
        }
    };
    let duration = match (
        time_at(job, &["status", "startTime"]),
        time_at(job, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => since(Some(start), now),
        (Some(start), Some(end)) => human_duration(end.duration_since(start)),
    };
    let (names, images) = container_cells(at(job, &["spec", "template", "spec"]));
    vec![
        name(job),
        json!(job_status(job)),
        json!(completions),
        json!(duration),
        json!(age(job, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(job, &["spec", "selector"]))),
    ]
}

static CRON_JOB: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
    ),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn bool_word(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "True".to_string(),
        Some(false) => "False".to_string(),
        None => "<unset>".to_string(),
    }
}

fn cron_job_row(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = if has(cj, &["status", "lastScheduleTime"]) {
        since(time_at(cj, &["status", "lastScheduleTime"]), now)
    } else {
        "<none>".to_string()
    };
    let time_zone = at(cj, &["spec", "timeZone"])
        .as_str()
        .unwrap_or("<none>")
        .to_string();
    let job_spec = at(cj, &["spec", "jobTemplate", "spec"]);
    let (names, images) = container_cells(at(job_spec, &["template", "spec"]));
    vec![
        name(cj),
        json!(str_at(cj, &["spec", "schedule"])),
        json!(time_zone),
        json!(bool_word(at(cj, &["spec", "suspend"]))),
        json!(len_at(cj, &["status", "active"])),
        json!(last_schedule),
        json!(age(cj, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(at(job_spec, &["selector"]))),
    ]
}

static PDB: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

fn pdb_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let or_na = |v: &Value| {
        if v.is_null() {
            "N/A".to_string()
        } else {
            int_or_string(v)
        }
    };
    vec![
        name(obj),
        json!(or_na(at(obj, &["spec", "minAvailable"]))),
        json!(or_na(at(obj, &["spec", "maxUnavailable"]))),
        json!(int_at(obj, &["status", "disruptionsAllowed"])),
        json!(age(obj, now)),
    ]
}

static HPA: &[Column] = &[
    NAME,
    col(
        "Reference",
        "string",
        "scaleTargetRef points to the target resource to scale.",
    ),
    col(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count.",
    ),
    col(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
    ),
    col(
        "MaxPods",
        "string",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
    ),
    col(
        "Replicas",
        "string",
        "currentReplicas is current number of replicas of pods managed by this autoscaler.",
    ),
    AGE,
];

fn hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let q = |v: &Value| {
        if v.is_null() {
            "<nil>".to_string()
        } else {
            quantity(v)
        }
    };
    let percent = |v: &Value| v.as_i64().map(|n| format!("{n}%"));
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let current_of = |source: &str, field: &str| -> Option<&Value> {
            status
                .map(|s| at(s, &[source]))
                .filter(|s| !s.is_null())
                .map(|s| at(s, &["current", field]))
        };
        let item = match str_at(spec, &["type"]) {
            "External" | "Object" => {
                let source = if str_at(spec, &["type"]) == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = at(spec, &[source, "target"]);
                if has(target, &["averageValue"]) {
                    let current = current_of(source, "averageValue")
                        .filter(|v| !v.is_null())
                        .map(quantity)
                        .unwrap_or_else(|| "<unknown>".to_string());
                    format!("{current}/{} (avg)", q(at(target, &["averageValue"])))
                } else {
                    let current = current_of(source, "value")
                        .map(q)
                        .unwrap_or_else(|| "<unknown>".to_string());
                    format!("{current}/{}", q(at(target, &["value"])))
                }
            }
            "Pods" => {
                let current = current_of("pods", "averageValue")
                    .map(q)
                    .unwrap_or_else(|| "<unknown>".to_string());
                format!(
                    "{current}/{}",
                    q(at(spec, &["pods", "target", "averageValue"]))
                )
            }
            "Resource" | "ContainerResource" => {
                let source = if str_at(spec, &["type"]) == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let resource = str_at(spec, &[source, "name"]);
                let target = at(spec, &[source, "target"]);
                if has(target, &["averageValue"]) {
                    let current = current_of(source, "averageValue")
                        .map(q)
                        .unwrap_or_else(|| "<unknown>".to_string());
                    format!("{resource}: {current}/{}", q(at(target, &["averageValue"])))
                } else {
                    let current = current_of(source, "averageUtilization")
                        .and_then(percent)
                        .unwrap_or_else(|| "<unknown>".to_string());
                    let target = percent(at(target, &["averageUtilization"]))
                        .unwrap_or_else(|| "<auto>".to_string());
                    format!("{resource}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(item);
    }
    const MAX: usize = 2;
    let count = list.len();
    if count > MAX {
        format!("{} + {} more...", list[..MAX].join(", "), count - MAX)
    } else {
        list.join(", ")
    }
}

fn hpa_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(obj, &["spec", "scaleTargetRef", "kind"]),
        str_at(obj, &["spec", "scaleTargetRef", "name"])
    );
    let min_pods = if has(obj, &["spec", "minReplicas"]) {
        int_at(obj, &["spec", "minReplicas"]).to_string()
    } else {
        "<unset>".to_string()
    };
    vec![
        name(obj),
        json!(reference),
        json!(hpa_metrics(
            list_at(obj, &["spec", "metrics"]),
            list_at(obj, &["status", "currentMetrics"])
        )),
        json!(min_pods),
        json!(int_at(obj, &["spec", "maxReplicas"])),
        json!(int_at(obj, &["status", "currentReplicas"])),
        json!(age(obj, now)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Networking

static INGRESS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

fn ingress_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let class = at(obj, &["spec", "ingressClassName"])
        .as_str()
        .unwrap_or("<none>")
        .to_string();
    let rules = list_at(obj, &["spec", "rules"]);
    const MAX: usize = 3;
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    };
    let address = load_balancer_ingress(at(obj, &["status", "loadBalancer"])).join(",");
    let ports = if list_at(obj, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj),
        json!(class),
        json!(hosts),
        json!(address),
        json!(ports),
        json!(age(obj, now)),
    ]
}

static INGRESS_CLASS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

fn ingress_class_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let params = at(obj, &["spec", "parameters"]);
    let parameters = if params.is_null() {
        "<none>".to_string()
    } else {
        let mut p = str_at(params, &["kind"]).to_string();
        if let Some(group) = at(params, &["apiGroup"]).as_str() {
            p.push('.');
            p.push_str(group);
        }
        format!("{p}/{}", str_at(params, &["name"]))
    };
    vec![
        name(obj),
        json!(str_at(obj, &["spec", "controller"])),
        json!(parameters),
        json!(age(obj, now)),
    ]
}

static NETWORK_POLICY: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "podSelector selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

fn network_policy_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(format_label_selector(at(obj, &["spec", "podSelector"]))),
        json!(age(obj, now)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Cluster-wide odds and ends

static LEASE: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

fn lease_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(str_at(obj, &["spec", "holderIdentity"])),
        json!(age(obj, now)),
    ]
}

static PRIORITY_CLASS: &[Column] = &[
    NAME,
    col(
        "Value",
        "integer",
        "value represents the integer value of this priority class.",
    ),
    col(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority.",
    ),
];

fn priority_class_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(int_at(obj, &["value"])),
        json!(bool_at(obj, &["globalDefault"])),
        json!(age(obj, now)),
        json!(str_at(obj, &["preemptionPolicy"])),
    ]
}

static RUNTIME_CLASS: &[Column] = &[
    NAME,
    col(
        "Handler",
        "string",
        "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class.",
    ),
    AGE,
];

fn runtime_class_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(str_at(obj, &["handler"])),
        json!(age(obj, now)),
    ]
}

static WEBHOOK_CONFIGURATION: &[Column] = &[
    NAME,
    col(
        "Webhooks",
        "integer",
        "Webhooks indicates the number of webhooks registered in this configuration",
    ),
    AGE,
];

fn webhook_configuration_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        json!(len_at(obj, &["webhooks"])),
        json!(age(obj, now)),
    ]
}

static ROLE_BINDING: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
    ),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
    ),
];

static CLUSTER_ROLE_BINDING: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        "RoleRef can only reference a ClusterRole in the global namespace.",
    ),
    AGE,
    wide("Users", "string", "Users in the clusterRoleBinding"),
    wide("Groups", "string", "Groups in the clusterRoleBinding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the clusterRoleBinding",
    ),
];

fn binding_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        str_at(obj, &["roleRef", "kind"]),
        str_at(obj, &["roleRef", "name"])
    );
    let mut users: Vec<String> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    let mut service_accounts: Vec<String> = Vec::new();
    for s in list_at(obj, &["subjects"]) {
        let subject = str_at(s, &["name"]).to_string();
        match str_at(s, &["kind"]) {
            "User" => users.push(subject),
            "Group" => groups.push(subject),
            "ServiceAccount" => {
                service_accounts.push(format!("{}/{subject}", str_at(s, &["namespace"])))
            }
            _ => {}
        }
    }
    vec![
        name(obj),
        json!(role),
        json!(age(obj, now)),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(service_accounts.join(", ")),
    ]
}

static CSR: &[Column] = &[
    NAME,
    AGE,
    col(
        "SignerName",
        "string",
        "signerName indicates the requested signer, and is a qualified name.",
    ),
    col(
        "Requestor",
        "string",
        "request contains an x509 certificate signing request encoded in a \"CERTIFICATE REQUEST\" PEM block.",
    ),
    col(
        "RequestedDuration",
        "string",
        "expirationSeconds is the requested duration of validity of the issued certificate.",
    ),
    col(
        "Condition",
        "string",
        "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\".",
    ),
];

/// The CONDITION cell of a CertificateSigningRequest, e.g. `Approved,Issued`.
pub fn csr_condition(csr: &Value) -> String {
    let conditions = list_at(csr, &["status", "conditions"]);
    let seen = |t: &str| conditions.iter().any(|c| str_at(c, &["type"]) == t);
    let mut status = if seen("Denied") {
        "Denied".to_string()
    } else if seen("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if seen("Failed") {
        status.push_str(",Failed");
    }
    if !str_at(csr, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    status
}

fn csr_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let requested = if has(obj, &["spec", "expirationSeconds"]) {
        human_duration(jiff::SignedDuration::from_secs(int_at(
            obj,
            &["spec", "expirationSeconds"],
        )))
    } else {
        "<none>".to_string()
    };
    vec![
        name(obj),
        json!(age(obj, now)),
        json!(or_none(str_at(obj, &["spec", "signerName"]))),
        json!(str_at(obj, &["spec", "username"])),
        json!(requested),
        json!(csr_condition(obj)),
    ]
}
