//! Server-side printing: the meta.k8s.io Table columns and row cells of each kind, as the
//! upstream API server prints them (kubectl shows whatever the server sends, so `kubectl get`
//! output matches upstream). Kinds without a printer get upstream's default: Name and
//! Created At.

use jiff::Timestamp;
use serde_json::{Map, Value, json};

/// One column definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header, e.g. `Name` (kubectl upper-cases it).
    pub name: &'static str,
    /// OpenAPI type: string, integer, number, boolean, date.
    pub type_: &'static str,
    /// Format, e.g. `name` for the name column.
    pub format: &'static str,
    /// Description.
    pub description: &'static str,
    /// 0 for default columns, 1 for `-o wide` ones.
    pub priority: i32,
}

const fn col(name: &'static str, type_: &'static str, priority: i32) -> Column {
    Column {
        name,
        type_,
        format: "",
        description: "",
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
};
const AGE: Column = Column {
    name: "Age",
    type_: "string",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
    priority: 0,
};

/// The columns of a kind.
pub fn columns(group: &str, kind: &str) -> Vec<Column> {
    let s = |n| col(n, "string", 0);
    let i = |n| col(n, "integer", 0);
    let wide = |n| col(n, "string", 1);
    let mut c = vec![NAME];
    match (group, kind) {
        ("", "Pod") => c.extend([s("Ready"), s("Status"), s("Restarts"), AGE, wide("IP"), wide("Node"), wide("Nominated Node"), wide("Readiness Gates")]),
        ("", "Node") => c.extend([s("Status"), s("Roles"), AGE, s("Version"), wide("Internal-IP"), wide("External-IP"), wide("OS-Image"), wide("Kernel-Version"), wide("Container-Runtime")]),
        ("", "Namespace") => c.extend([s("Status"), AGE]),
        ("", "Service") => c.extend([s("Type"), s("Cluster-IP"), s("External-IP"), s("Port(s)"), AGE, wide("Selector")]),
        ("", "Endpoints") => c.extend([s("Endpoints"), AGE]),
        ("", "ConfigMap") => c.extend([i("Data"), AGE]),
        ("", "Secret") => c.extend([s("Type"), i("Data"), AGE]),
        ("", "ServiceAccount") => c.extend([i("Secrets"), AGE]),
        ("", "Event") | ("events.k8s.io", "Event") => {
            c = vec![s("Last Seen"), s("Type"), s("Reason"), s("Object"), wide("Subobject"), wide("Source"), s("Message"), wide("First Seen"), col("Count", "integer", 1), col("Name", "string", 1)];
        }
        ("", "PersistentVolume") => c.extend([s("Capacity"), s("Access Modes"), s("Reclaim Policy"), s("Status"), s("Claim"), s("StorageClass"), s("VolumeAttributesClass"), s("Reason"), AGE, wide("VolumeMode")]),
        ("", "PersistentVolumeClaim") => c.extend([s("Status"), s("Volume"), s("Capacity"), s("Access Modes"), s("StorageClass"), s("VolumeAttributesClass"), AGE, wide("VolumeMode")]),
        ("apps", "Deployment") => c.extend([s("Ready"), i("Up-to-date"), i("Available"), AGE, wide("Containers"), wide("Images"), wide("Selector")]),
        ("apps", "ReplicaSet") => c.extend([i("Desired"), i("Current"), i("Ready"), AGE, wide("Containers"), wide("Images"), wide("Selector")]),
        ("apps", "DaemonSet") => c.extend([i("Desired"), i("Current"), i("Ready"), i("Up-to-date"), i("Available"), s("Node Selector"), AGE, wide("Containers"), wide("Images"), wide("Selector")]),
        ("apps", "StatefulSet") => c.extend([s("Ready"), AGE, wide("Containers"), wide("Images")]),
        ("apps", "ControllerRevision") => c.extend([s("Controller"), i("Revision"), AGE]),
        ("batch", "Job") => c.extend([s("Status"), s("Completions"), s("Duration"), AGE, wide("Containers"), wide("Images"), wide("Selector")]),
        ("batch", "CronJob") => c.extend([s("Schedule"), s("Timezone"), s("Suspend"), i("Active"), s("Last Schedule"), AGE, wide("Containers"), wide("Images"), wide("Selector")]),
        ("coordination.k8s.io", "Lease") => c.extend([s("Holder"), AGE]),
        ("discovery.k8s.io", "EndpointSlice") => c.extend([s("AddressType"), s("Ports"), s("Endpoints"), AGE]),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => c.extend([s("Role"), AGE, wide("Users"), wide("Groups"), wide("ServiceAccounts")]),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => c.push(col("Created At", "date", 0)),
        ("storage.k8s.io", "StorageClass") => c.extend([s("Provisioner"), s("ReclaimPolicy"), s("VolumeBindingMode"), s("AllowVolumeExpansion"), AGE]),
        ("scheduling.k8s.io", "PriorityClass") => c.extend([i("Value"), s("Global-Default"), AGE, s("PreemptionPolicy")]),
        ("certificates.k8s.io", "CertificateSigningRequest") => c.extend([AGE, s("SignerName"), s("Requestor"), s("RequestedDuration"), s("Condition")]),
        ("policy", "PodDisruptionBudget") => c.extend([s("Min Available"), s("Max Unavailable"), i("Allowed Disruptions"), AGE]),
        _ => c.push(Column { name: "Created At", type_: "date", format: "", description: "CreationTimestamp is a timestamp representing the server time when this object was created.", priority: 0 }),
    }
    c
}

/// Age of a timestamp as upstream's short human duration ("5s", "3m2s", "2d3h").
pub fn age(ts: Option<&str>, now: Timestamp) -> String {
    let Some(t) = ts.and_then(|t| t.parse::<Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    human_duration(now.as_second() - t.as_second())
}

/// Upstream's short human duration of a number of seconds.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    crate::meta::path(v, path)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn int(v: &Value, path: &str) -> i64 {
    crate::meta::path(v, path)
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn arr<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    crate::meta::path(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

/// `a=b,c=d` of a string map, or `<none>`.
fn format_labels(m: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = m
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

fn label_selector(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    parts.sort();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    or_none(&parts.join(","))
}

fn containers_and_images(spec: &Value) -> (String, String) {
    let cs = arr(spec, "containers");
    let names: Vec<&str> = cs.iter().map(|c| s(c, "name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "image")).collect();
    (names.join(","), images.join(","))
}

/// The `-o wide` tail of workload rows: containers, images, selector.
fn workload_cells(pod_spec: &Value, selector: &Value) -> [Value; 3] {
    let (c, i) = containers_and_images(pod_spec);
    [json!(c), json!(i), json!(label_selector(selector))]
}

fn bool_ptr(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "True".into(),
        Some(false) => "False".into(),
        None => "<unset>".into(),
    }
}

/// The cells of one object's row, in column order.
pub fn row(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    let name = json!(s(obj, "metadata.name"));
    let created = obj["metadata"]
        .get("creationTimestamp")
        .and_then(Value::as_str);
    let age_cell = json!(age(created, now));
    let spec = &obj["spec"];
    let status = &obj["status"];
    match (group, kind) {
        ("", "Pod") => pod_row(obj, now),
        ("", "Node") => {
            let ready = arr(obj, "status.conditions")
                .iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| s(c, "status").to_string());
            let mut st = match ready.as_deref() {
                Some("True") => "Ready".to_string(),
                Some("False") => "NotReady".to_string(),
                _ => "Unknown".to_string(),
            };
            if spec["unschedulable"].as_bool() == Some(true) {
                st.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = obj["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(String::from)
                        .filter(|r| !r.is_empty())
                        .or_else(|| {
                            (k == "kubernetes.io/role")
                                .then(|| v.as_str().unwrap_or("").to_string())
                        })
                })
                .collect();
            roles.sort();
            let address = |t: &str| {
                arr(obj, "status.addresses")
                    .iter()
                    .find(|a| a["type"] == t)
                    .map(|a| s(a, "address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            vec![
                name,
                json!(st),
                json!(or_none(&roles.join(","))),
                age_cell,
                json!(s(obj, "status.nodeInfo.kubeletVersion")),
                json!(address("InternalIP")),
                json!(address("ExternalIP")),
                json!(or_none(s(obj, "status.nodeInfo.osImage"))),
                json!(or_none(s(obj, "status.nodeInfo.kernelVersion"))),
                json!(or_none(s(obj, "status.nodeInfo.containerRuntimeVersion"))),
            ]
        }
        ("", "Namespace") => vec![name, json!(s(obj, "status.phase")), age_cell],
        ("", "Service") => {
            let ty = s(obj, "spec.type");
            let ty = if ty.is_empty() { "ClusterIP" } else { ty };
            let external: Vec<String> = arr(obj, "spec.externalIPs")
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            let external = match ty {
                "LoadBalancer" => {
                    let mut ips: Vec<String> = arr(obj, "status.loadBalancer.ingress")
                        .iter()
                        .map(|i| {
                            if i["ip"].is_string() {
                                s(i, "ip").to_string()
                            } else {
                                s(i, "hostname").to_string()
                            }
                        })
                        .collect();
                    ips.extend(external);
                    if ips.is_empty() {
                        "<pending>".to_string()
                    } else {
                        ips.join(",")
                    }
                }
                "ExternalName" => s(obj, "spec.externalName").to_string(),
                _ => or_none(&external.join(",")),
            };
            let ports: Vec<String> = arr(obj, "spec.ports")
                .iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64().filter(|n| *n != 0) {
                        Some(np) => format!("{}:{np}/{proto}", int(p, "port")),
                        None => format!("{}/{proto}", int(p, "port")),
                    }
                })
                .collect();
            vec![
                name,
                json!(ty),
                json!(or_none(s(obj, "spec.clusterIP"))),
                json!(external),
                json!(or_none(&ports.join(","))),
                age_cell,
                json!(format_labels(spec["selector"].as_object())),
            ]
        }
        ("", "Endpoints") => {
            let mut list = Vec::new();
            for subset in arr(obj, "subsets") {
                for a in arr(subset, "addresses") {
                    let ports = arr(subset, "ports");
                    if ports.is_empty() {
                        list.push(s(a, "ip").to_string());
                    }
                    for p in ports {
                        list.push(format!("{}:{}", s(a, "ip"), int(p, "port")));
                    }
                }
            }
            vec![name, json!(truncated_list(&list, 3)), age_cell]
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = arr(obj, "ports")
                .iter()
                .map(|p| {
                    p["port"]
                        .as_i64()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "<unset>".into())
                })
                .collect();
            let addrs: Vec<String> = arr(obj, "endpoints")
                .iter()
                .flat_map(|e| {
                    arr(e, "addresses")
                        .iter()
                        .filter_map(|a| a.as_str().map(String::from))
                })
                .collect();
            let ports = if ports.is_empty() {
                "<unset>".to_string()
            } else {
                ports.join(",")
            };
            let endpoints = if addrs.is_empty() {
                "<unset>".to_string()
            } else {
                truncated_list(&addrs, 3)
            };
            vec![
                name,
                json!(s(obj, "addressType")),
                json!(ports),
                json!(endpoints),
                age_cell,
            ]
        }
        ("", "ConfigMap") => {
            let n = obj["data"].as_object().map_or(0, Map::len)
                + obj["binaryData"].as_object().map_or(0, Map::len);
            vec![name, json!(n), age_cell]
        }
        ("", "Secret") => vec![
            name,
            json!(s(obj, "type")),
            json!(obj["data"].as_object().map_or(0, Map::len)),
            age_cell,
        ],
        ("", "ServiceAccount") => vec![name, json!(arr(obj, "secrets").len()), age_cell],
        ("", "Event") | ("events.k8s.io", "Event") => event_row(group, obj, now),
        ("", "PersistentVolume") => {
            let claim = if spec["claimRef"].is_object() {
                format!(
                    "{}/{}",
                    s(spec, "claimRef.namespace"),
                    s(spec, "claimRef.name")
                )
            } else {
                String::new()
            };
            vec![
                name,
                json!(s(spec, "capacity.storage")),
                json!(access_modes(arr(spec, "accessModes"))),
                json!(s(spec, "persistentVolumeReclaimPolicy")),
                json!(s(status, "phase")),
                json!(claim),
                json!(s(spec, "storageClassName")),
                json!(or_unset(s(spec, "volumeAttributesClassName"))),
                json!(s(status, "reason")),
                age_cell,
                json!(or_none(s(spec, "volumeMode"))),
            ]
        }
        ("", "PersistentVolumeClaim") => vec![
            name,
            json!(s(status, "phase")),
            json!(s(spec, "volumeName")),
            json!(s(status, "capacity.storage")),
            json!(access_modes(arr(status, "accessModes"))),
            json!(s(spec, "storageClassName")),
            json!(or_unset(s(spec, "volumeAttributesClassName"))),
            age_cell,
            json!(or_none(s(spec, "volumeMode"))),
        ],
        ("apps", "Deployment") => vec![
            name,
            json!(format!(
                "{}/{}",
                int(status, "readyReplicas"),
                int(spec, "replicas")
            )),
            json!(int(status, "updatedReplicas")),
            json!(int(status, "availableReplicas")),
            age_cell,
        ]
        .into_iter()
        .chain(workload_cells(&spec["template"]["spec"], &spec["selector"]))
        .collect(),
        ("apps", "ReplicaSet") => vec![
            name,
            json!(int(spec, "replicas")),
            json!(int(status, "replicas")),
            json!(int(status, "readyReplicas")),
            age_cell,
        ]
        .into_iter()
        .chain(workload_cells(&spec["template"]["spec"], &spec["selector"]))
        .collect(),
        ("apps", "DaemonSet") => vec![
            name,
            json!(int(status, "desiredNumberScheduled")),
            json!(int(status, "currentNumberScheduled")),
            json!(int(status, "numberReady")),
            json!(int(status, "updatedNumberScheduled")),
            json!(int(status, "numberAvailable")),
            json!(format_labels(
                spec["template"]["spec"]["nodeSelector"].as_object()
            )),
            age_cell,
        ]
        .into_iter()
        .chain(workload_cells(&spec["template"]["spec"], &spec["selector"]))
        .collect(),
        ("apps", "StatefulSet") => {
            let (c, i) = containers_and_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(status, "readyReplicas"),
                    int(spec, "replicas")
                )),
                age_cell,
                json!(c),
                json!(i),
            ]
        }
        ("apps", "ControllerRevision") => {
            let controller = arr(obj, "metadata.ownerReferences")
                .iter()
                .find(|o| o["controller"] == true)
                .map(|o| {
                    let api = s(o, "apiVersion");
                    let group = api.split_once('/').map(|(g, _)| g).unwrap_or("");
                    let kind = s(o, "kind").to_lowercase();
                    if group.is_empty() {
                        format!("{kind}/{}", s(o, "name"))
                    } else {
                        format!("{kind}.{group}/{}", s(o, "name"))
                    }
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(controller),
                json!(int(obj, "revision")),
                age_cell,
            ]
        }
        ("batch", "Job") => job_row(obj, now),
        ("batch", "CronJob") => {
            let (c, i) = containers_and_images(&spec["jobTemplate"]["spec"]["template"]["spec"]);
            let last = status
                .get("lastScheduleTime")
                .and_then(Value::as_str)
                .map(|t| age(Some(t), now))
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(s(spec, "schedule")),
                json!(or_none(s(spec, "timeZone"))),
                json!(bool_ptr(&spec["suspend"])),
                json!(arr(status, "active").len()),
                json!(last),
                age_cell,
                json!(c),
                json!(i),
                json!(label_selector(&spec["jobTemplate"]["spec"]["selector"])),
            ]
        }
        ("coordination.k8s.io", "Lease") => vec![name, json!(s(spec, "holderIdentity")), age_cell],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let role = format!("{}/{}", s(obj, "roleRef.kind"), s(obj, "roleRef.name"));
            let of = |k: &str| -> String {
                arr(obj, "subjects")
                    .iter()
                    .filter(|x| x["kind"] == k)
                    .map(|x| {
                        if k == "ServiceAccount" {
                            format!("{}/{}", s(x, "namespace"), s(x, "name"))
                        } else {
                            s(x, "name").to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(role),
                age_cell,
                json!(of("User")),
                json!(of("Group")),
                json!(of("ServiceAccount")),
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let reclaim = if obj["reclaimPolicy"].is_string() {
                s(obj, "reclaimPolicy")
            } else {
                "Delete"
            };
            let binding = if obj["volumeBindingMode"].is_string() {
                s(obj, "volumeBindingMode")
            } else {
                "Immediate"
            };
            let expand = obj["allowVolumeExpansion"].as_bool().unwrap_or(false);
            let mut n = s(obj, "metadata.name").to_string();
            if obj["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true"
            {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(s(obj, "provisioner")),
                json!(reclaim),
                json!(binding),
                json!(expand.to_string()),
                age_cell,
            ]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            json!(int(obj, "value")),
            json!(obj["globalDefault"].as_bool().unwrap_or(false).to_string()),
            age_cell,
            json!(or_none(s(obj, "preemptionPolicy"))),
        ],
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let mut conds: Vec<String> = arr(status, "conditions")
                .iter()
                .map(|c| s(c, "type").to_string())
                .collect();
            if status["certificate"].is_string() {
                conds.push("Issued".into());
            }
            let condition = if conds.is_empty() {
                "Pending".to_string()
            } else {
                conds.join(",")
            };
            let duration = spec["expirationSeconds"]
                .as_i64()
                .map(human_duration)
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                age_cell,
                json!(s(spec, "signerName")),
                json!(s(spec, "username")),
                json!(duration),
                json!(condition),
            ]
        }
        ("policy", "PodDisruptionBudget") => {
            let show = |v: &Value| match v {
                Value::Null => "N/A".to_string(),
                Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            vec![
                name,
                json!(show(&spec["minAvailable"])),
                json!(show(&spec["maxUnavailable"])),
                json!(int(status, "disruptionsAllowed")),
                age_cell,
            ]
        }
        _ => vec![name, json!(created.unwrap_or(""))],
    }
}

fn or_unset(v: &str) -> String {
    if v.is_empty() {
        "<unset>".into()
    } else {
        v.into()
    }
}

fn access_modes(modes: &[Value]) -> String {
    modes
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn truncated_list(items: &[String], max: usize) -> String {
    if items.is_empty() {
        return "<none>".into();
    }
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else {
        shown
    }
}

fn pod_row(pod: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let mut restarts = 0i64;
    let mut last_restart: Option<Timestamp> = None;
    let mut note_restart = |c: &Value, restarts: &mut i64| {
        *restarts += int(c, "restartCount");
        if let Some(t) = c["lastState"]["terminated"]["finishedAt"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            && last_restart.is_none_or(|l| t > l)
        {
            last_restart = Some(t);
        }
    };
    let mut reason = s(status, "phase").to_string();
    if !s(status, "reason").is_empty() {
        reason = s(status, "reason").to_string();
    }
    let init_specs = arr(spec, "initContainers");
    let sidecars: Vec<&str> = init_specs
        .iter()
        .filter(|c| c["restartPolicy"] == "Always")
        .map(|c| s(c, "name"))
        .collect();
    let total = arr(spec, "containers").len() + sidecars.len();
    let mut ready = 0usize;
    let mut initializing = false;
    for (i, c) in arr(status, "initContainerStatuses").iter().enumerate() {
        note_restart(c, &mut restarts);
        let state = &c["state"];
        if sidecars.contains(&s(c, "name")) && c["started"] == true {
            if c["ready"] == true {
                ready += 1;
            }
            continue;
        }
        if state["terminated"].is_object() && int(state, "terminated.exitCode") == 0 {
            continue;
        }
        reason = if state["terminated"].is_object() {
            let r = s(state, "terminated.reason");
            if !r.is_empty() {
                format!("Init:{r}")
            } else if int(state, "terminated.signal") != 0 {
                format!("Init:Signal:{}", int(state, "terminated.signal"))
            } else {
                format!("Init:ExitCode:{}", int(state, "terminated.exitCode"))
            }
        } else if state["waiting"].is_object()
            && !s(state, "waiting.reason").is_empty()
            && s(state, "waiting.reason") != "PodInitializing"
        {
            format!("Init:{}", s(state, "waiting.reason"))
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }
    let initialized = arr(status, "conditions")
        .iter()
        .any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        let mut has_running = false;
        for c in arr(status, "containerStatuses").iter().rev() {
            note_restart(c, &mut restarts);
            let state = &c["state"];
            if state["waiting"].is_object() && !s(state, "waiting.reason").is_empty() {
                reason = s(state, "waiting.reason").to_string();
            } else if state["terminated"].is_object() && !s(state, "terminated.reason").is_empty() {
                reason = s(state, "terminated.reason").to_string();
            } else if state["terminated"].is_object() {
                reason = if int(state, "terminated.signal") != 0 {
                    format!("Signal:{}", int(state, "terminated.signal"))
                } else {
                    format!("ExitCode:{}", int(state, "terminated.exitCode"))
                };
            } else if c["ready"] == true && state["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(status, "conditions")
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        reason = if s(status, "reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts_cell = match last_restart {
        Some(t) => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - t.as_second())
        ),
        None => restarts.to_string(),
    };
    let gates = arr(spec, "readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let met = gates
            .iter()
            .filter(|g| {
                arr(status, "conditions")
                    .iter()
                    .any(|c| c["type"] == g["conditionType"] && c["status"] == "True")
            })
            .count();
        format!("{met}/{}", gates.len())
    };
    vec![
        json!(s(pod, "metadata.name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(pod["metadata"]["creationTimestamp"].as_str(), now)),
        json!(or_none(s(status, "podIP"))),
        json!(or_none(s(spec, "nodeName"))),
        json!(or_none(s(status, "nominatedNodeName"))),
        json!(gates_cell),
    ]
}

fn job_row(job: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &job["spec"];
    let status = &job["status"];
    let succeeded = int(status, "succeeded");
    let completions = match (spec["completions"].as_i64(), spec["parallelism"].as_i64()) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        _ => format!("{succeeded}/1"),
    };
    let duration = match (
        status["startTime"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok()),
        status["completionTime"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok()),
    ) {
        (Some(start), Some(end)) => human_duration(end.as_second() - start.as_second()),
        (Some(start), None) => human_duration(now.as_second() - start.as_second()),
        _ => String::new(),
    };
    let has = |t: &str| {
        arr(status, "conditions")
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    let state = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if spec["suspend"] == true || has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (c, i) = containers_and_images(&spec["template"]["spec"]);
    vec![
        json!(s(job, "metadata.name")),
        json!(state),
        json!(completions),
        json!(duration),
        json!(age(job["metadata"]["creationTimestamp"].as_str(), now)),
        json!(c),
        json!(i),
        json!(label_selector(&spec["selector"])),
    ]
}

fn event_row(group: &str, ev: &Value, now: Timestamp) -> Vec<Value> {
    let core = group.is_empty();
    let field = |core_name: &str, events_name: &str| {
        if core {
            ev[core_name].clone()
        } else {
            ev[events_name].clone()
        }
    };
    let involved = field("involvedObject", "regarding");
    let first = field("firstTimestamp", "deprecatedFirstTimestamp");
    let last = field("lastTimestamp", "deprecatedLastTimestamp");
    let event_time = ev["eventTime"].as_str();
    let first_seen = first
        .as_str()
        .or(event_time)
        .or(ev["metadata"]["creationTimestamp"].as_str());
    let last_seen_ts = ev["series"]["lastObservedTime"]
        .as_str()
        .or(last.as_str())
        .or(event_time)
        .or(first_seen);
    let mut last_seen = age(last_seen_ts, now);
    let count = ev["series"]["count"]
        .as_i64()
        .or_else(|| field("count", "deprecatedCount").as_i64())
        .unwrap_or(1);
    if count > 1
        && let Some(f) = first_seen
    {
        last_seen = format!("{last_seen} (x{count} over {})", age(Some(f), now));
    }
    let source = field("source", "deprecatedSource");
    let mut source_cell = s(&source, "component").to_string();
    if source_cell.is_empty() {
        source_cell = field("reportingComponent", "reportingController")
            .as_str()
            .unwrap_or("")
            .to_string();
    }
    if !s(&source, "host").is_empty() {
        source_cell = format!("{source_cell}, {}", s(&source, "host"));
    }
    let object = format!(
        "{}/{}",
        s(&involved, "kind").to_lowercase(),
        s(&involved, "name")
    );
    vec![
        json!(last_seen),
        json!(s(ev, "type")),
        json!(s(ev, "reason")),
        json!(object),
        json!(s(&involved, "fieldPath")),
        json!(source_cell),
        json!(field("message", "note").as_str().unwrap_or("").trim()),
        json!(age(first_seen, now)),
        json!(count),
        json!(s(ev, "metadata.name")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn human_durations_match_upstream_at_the_boundaries() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 240, "3h4m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400, "8d"),
            (730 * 86400, "2y"),
            (750 * 86400, "2y20d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        for r in crate::resources::RESOURCES {
            let obj =
                json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T11:59:00Z"}});
            assert_eq!(
                row(r.group, r.kind, &obj, now()).len(),
                columns(r.group, r.kind).len(),
                "{r:?}"
            );
        }
    }

    #[test]
    fn pod_status_shows_crashloop_init_and_terminating_with_restarts_ago() {
        let running = json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T11:00:00Z"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"finishedAt": "2026-01-01T11:55:00Z"}}}]}});
        let r = pod_row(&running, now());
        assert_eq!(
            r[..4],
            [
                json!("p"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("3 (5m ago)")
            ]
        );
        assert_eq!(r[4], "60m");
        assert_eq!(r[5], "10.0.0.5");
        let init = json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 0}}}, {"name": "i2", "state": {"running": {}}}]}});
        assert_eq!(pod_row(&init, now())[2], "Init:1/2");
        let pending = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T12:00:30Z"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        let r = pod_row(&pending, now());
        assert_eq!(
            (r[1].as_str(), r[2].as_str(), r[3].as_str(), r[6].as_str()),
            (Some("0/1"), Some("Terminating"), Some("0"), Some("<none>"))
        );
        let done = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(pod_row(&done, now())[2], "Completed");
    }

    #[test]
    fn services_show_node_ports_and_pending_load_balancers() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
        let r = row("", "Service", &svc, now());
        assert_eq!(
            r[1..5],
            [
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP")
            ]
        );
        assert_eq!(r[6], "app=web");
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []}});
        assert_eq!(row("", "Service", &lb, now())[3], "<pending>");
    }

    #[test]
    fn endpoints_are_truncated_after_three() {
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "1.1.1.1"}, {"ip": "2.2.2.2"}, {"ip": "3.3.3.3"}, {"ip": "4.4.4.4"}], "ports": [{"port": 80}]}]});
        assert_eq!(
            row("", "Endpoints", &ep, now())[1],
            "1.1.1.1:80,2.2.2.2:80,3.3.3.3:80 + 1 more..."
        );
        assert_eq!(
            row("", "Endpoints", &json!({"metadata": {"name": "e"}}), now())[1],
            "<none>"
        );
    }

    #[test]
    fn nodes_show_roles_and_scheduling_disabled() {
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}}, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}, "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        let r = row("", "Node", &node, now());
        assert_eq!(
            r[1..3],
            [
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker")
            ]
        );
        assert_eq!(r[4], "v1.33.0");
        assert_eq!(r[5], "10.0.0.1");
    }

    #[test]
    fn deployments_and_jobs_summarise_their_status() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "d"}}, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let r = row("apps", "Deployment", &d, now());
        assert_eq!(r[1..4], [json!("2/3"), json!(3), json!(2)]);
        assert_eq!(r[5..], [json!("c"), json!("i:1"), json!("app=d")]);
        let j = json!({"metadata": {"name": "j"}, "spec": {"completions": 2}, "status": {"succeeded": 2, "startTime": "2026-01-01T11:00:00Z", "completionTime": "2026-01-01T11:00:30Z", "conditions": [{"type": "Complete", "status": "True"}]}});
        let r = row("batch", "Job", &j, now());
        assert_eq!(r[1..4], [json!("Complete"), json!("2/2"), json!("30s")]);
    }

    #[test]
    fn unknown_kinds_get_name_and_created_at() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(columns("example.com", "Widget").len(), 2);
        assert_eq!(
            row("example.com", "Widget", &obj, now()),
            [json!("x"), json!("2026-01-01T00:00:00Z")]
        );
    }
}
