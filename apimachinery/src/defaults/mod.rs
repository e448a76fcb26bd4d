//! Upstream defaulting of the built-in kinds, applied on create and update, plus the defaults
//! the admission plugins enabled by default add to pods (service account, default toleration
//! seconds, priority).
//!
//! Follows the v1 defaulting functions of Kubernetes 1.33: what `SetDefaults_PodSpec` and the
//! container, probe, volume and port defaults set applies to every pod template (Deployments,
//! ReplicaSets, DaemonSets, StatefulSets, Jobs, CronJobs); what `SetDefaults_Pod` sets
//! (requests from limits, `enableServiceLinks`, host ports under host networking) applies to
//! pods alone. Job templates get `restartPolicy: Always` like every template, so a Job that
//! names no restart policy fails validation with `Unsupported value: "Always"`, as upstream.
//!
//! Idempotent: applying the defaults twice gives what applying them once gives.

use serde_json::{Map, Value, json};

#[cfg(test)]
mod tests;

/// Fills in the defaults of an object of the given kind, as the upstream API server does on
/// create and update.
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (group, kind) {
        ("", "Pod") => pod(obj),
        ("", "PodTemplate") => pod_template(child(obj, "template")),
        ("", "ReplicationController") => {
            let spec = child(obj, "spec");
            set(spec, "replicas", json!(1));
            pod_template(child(spec, "template"));
        }
        ("", "Service") => service(obj),
        ("", "Namespace") => namespace(obj),
        ("", "Secret") => set_str(obj, "type", "Opaque"),
        ("", "PersistentVolume") => {
            let spec = child(obj, "spec");
            set_str(spec, "persistentVolumeReclaimPolicy", "Retain");
            set(spec, "volumeMode", json!("Filesystem"));
            volume_source(spec);
            set_str(child(obj, "status"), "phase", "Pending");
        }
        ("", "PersistentVolumeClaim") => pvc(obj),
        ("", "Endpoints") => each(obj, "subsets", |s| each(s, "ports", port_protocol)),
        ("", "Node") => {
            if let Some(status) = obj.get_mut("status").filter(|s| s.is_object())
                && status["allocatable"].is_null()
                && status["capacity"].is_object()
            {
                status["allocatable"] = status["capacity"].clone();
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => each(obj, "ports", |p| {
            port_protocol(p);
            set(p, "name", json!(""));
        }),
        ("apps", "Deployment") => deployment(obj),
        ("apps", "ReplicaSet") => {
            let spec = child(obj, "spec");
            set(spec, "replicas", json!(1));
            pod_template(child(spec, "template"));
        }
        ("apps", "DaemonSet") => daemon_set(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
        ("batch", "Job") => job(obj),
        ("batch", "CronJob") => cron_job(obj),
        ("scheduling.k8s.io", "PriorityClass") => {
            set_str(obj, "preemptionPolicy", "PreemptLowerPriority")
        }
        ("storage.k8s.io", "StorageClass") => {
            set_str(obj, "reclaimPolicy", "Delete");
            set_str(obj, "volumeBindingMode", "Immediate");
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            each(obj, "subjects", |s| {
                let default_group = match s["kind"].as_str() {
                    Some("User" | "Group") => "rbac.authorization.k8s.io",
                    _ => "",
                };
                if s["kind"] != "ServiceAccount" {
                    set_str(s, "apiGroup", default_group);
                }
            });
        }
        _ => {}
    }
}

/// The status a pod starts with, as the server sets it on create: `Pending`, with the QoS
/// class computed from the containers' resources.
pub fn pod_initial_status(pod: &Value) -> Value {
    json!({"phase": "Pending", "qosClass": qos_class(&pod["spec"])})
}

/// The QoS class of a pod spec: `Guaranteed` when every container limits and requests cpu and
/// memory equally, `BestEffort` when none requests or limits anything, `Burstable` otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let requests = c["resources"]["requests"].as_object();
        let limits = c["resources"]["limits"].as_object();
        let counted = |m: Option<&Map<String, Value>>| {
            m.is_some_and(|m| m.keys().any(|k| k == "cpu" || k == "memory"))
        };
        if counted(requests) || counted(limits) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(r));
            let request = requests.and_then(|q| q.get(r)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ---- helpers ----------------------------------------------------------------------------------

/// Sets `obj[key]` to `value` when absent or null (a nil pointer upstream).
fn set(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        let slot = m.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// Sets a string field when absent, null or empty (an empty string field upstream).
fn set_str(obj: &mut Value, key: &str, value: &str) {
    if obj.get(key).is_none_or(|v| v.is_null() || v == "") {
        obj[key] = value.into();
    }
}

/// Sets an integer field when absent, null or zero (a zero int field upstream).
fn set_nonzero(obj: &mut Value, key: &str, value: i64) {
    if obj.get(key).is_none_or(|v| v.is_null() || v == 0) {
        obj[key] = value.into();
    }
}

/// The object at `obj[key]`, created when absent.
fn child<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    if !obj[key].is_object() {
        obj[key] = Value::Object(Map::new());
    }
    &mut obj[key]
}

/// Calls `f` on each element of the array at `obj[key]`, if any.
fn each(obj: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(list) = obj.get_mut(key).and_then(Value::as_array_mut) {
        list.iter_mut().for_each(&mut f);
    }
}

/// Calls `f` on `obj[key]` when it is an object.
fn with(obj: &mut Value, key: &str, f: impl FnOnce(&mut Value)) {
    if let Some(v) = obj.get_mut(key).filter(|v| v.is_object()) {
        f(v);
    }
}

fn port_protocol(p: &mut Value) {
    set_str(p, "protocol", "TCP");
}

// ---- pods -------------------------------------------------------------------------------------

/// Defaults of a pod: the pod spec, the pod-only defaults and what the admission plugins on by
/// default add.
fn pod(obj: &mut Value) {
    let spec = child(obj, "spec");
    pod_spec(spec);
    // SetDefaults_Pod: requests default to limits, pods alone (not templates).
    each(spec, "containers", requests_from_limits);
    each(spec, "initContainers", requests_from_limits);
    set(spec, "enableServiceLinks", json!(true));
    if spec["hostNetwork"] == true {
        for list in ["containers", "initContainers"] {
            each(spec, list, |c| {
                each(c, "ports", |p| {
                    if p["hostPort"].is_null() || p["hostPort"] == 0 {
                        p["hostPort"] = p["containerPort"].clone();
                    }
                })
            });
        }
    }
    // ServiceAccount admission.
    if spec["serviceAccountName"].is_null() || spec["serviceAccountName"] == "" {
        let deprecated = spec["serviceAccount"].as_str().filter(|s| !s.is_empty());
        spec["serviceAccountName"] = deprecated.unwrap_or("default").into();
    }
    spec["serviceAccount"] = spec["serviceAccountName"].clone();
    // Priority admission, with no PriorityClass named and no global default.
    if spec["priorityClassName"].as_str().is_none_or(str::is_empty) {
        set(spec, "priority", json!(0));
    }
    set_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    default_toleration_seconds(spec);
}

/// DefaultTolerationSeconds admission: pods tolerate not-ready and unreachable nodes for five
/// minutes unless they already say how long.
fn default_toleration_seconds(spec: &mut Value) {
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    let Some(list) = spec["tolerations"].as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let effect = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

fn requests_from_limits(c: &mut Value) {
    let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
        return;
    };
    let requests = child(child(c, "resources"), "requests");
    for (k, v) in limits {
        set(requests, &k, v);
    }
}

/// Defaults of a pod template (the pod spec defaults; metadata is left alone).
fn pod_template(template: &mut Value) {
    pod_spec(child(template, "spec"));
}

/// SetDefaults_PodSpec and the defaults of everything inside a pod spec.
fn pod_spec(spec: &mut Value) {
    set_str(spec, "dnsPolicy", "ClusterFirst");
    set_str(spec, "restartPolicy", "Always");
    set(spec, "securityContext", json!({}));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set_str(spec, "schedulerName", "default-scheduler");
    each(spec, "containers", container);
    each(spec, "initContainers", container);
    each(spec, "ephemeralContainers", container);
    each(spec, "volumes", volume_source);
}

/// The image pull policy of an image without one: `Always` for the `latest` tag (also when no
/// tag and no digest is named), `IfNotPresent` otherwise.
pub fn image_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t);
    match (tag, digest) {
        (Some("latest"), _) => "Always",
        (Some(_), _) | (None, Some(_)) => "IfNotPresent",
        (None, None) if image.is_empty() => "IfNotPresent",
        (None, None) => "Always",
    }
}

fn container(c: &mut Value) {
    if c["imagePullPolicy"].as_str().is_none_or(str::is_empty) {
        let policy = image_pull_policy(c["image"].as_str().unwrap_or(""));
        c["imagePullPolicy"] = policy.into();
    }
    set_str(c, "terminationMessagePath", "/dev/termination-log");
    set_str(c, "terminationMessagePolicy", "File");
    each(c, "ports", port_protocol);
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        with(c, key, probe);
    }
    with(c, "lifecycle", |l| {
        for hook in ["postStart", "preStop"] {
            with(l, hook, handler);
        }
    });
    each(c, "env", |e| {
        with(e, "valueFrom", |from| with(from, "fieldRef", field_ref));
    });
}

fn field_ref(f: &mut Value) {
    set_str(f, "apiVersion", "v1");
}

fn handler(h: &mut Value) {
    with(h, "httpGet", |g| {
        set_str(g, "path", "/");
        set_str(g, "scheme", "HTTP");
    });
}

fn probe(p: &mut Value) {
    set_nonzero(p, "timeoutSeconds", 1);
    set_nonzero(p, "periodSeconds", 10);
    set_nonzero(p, "successThreshold", 1);
    set_nonzero(p, "failureThreshold", 3);
    handler(p);
    with(p, "grpc", |g| set(g, "service", json!("")));
}

/// Defaults of a volume (pod volumes) or of a PV's spec (which holds the source inline).
fn volume_source(v: &mut Value) {
    let is_pod_volume = v.get("name").is_some();
    if is_pod_volume
        && !crate::validation::POD_VOLUME_SOURCES
            .iter()
            .any(|s| v[*s].is_object())
    {
        v["emptyDir"] = json!({});
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        with(v, source, |s| set(s, "defaultMode", json!(420)));
    }
    with(v, "hostPath", |h| set(h, "type", json!("")));
    with(v, "downwardAPI", |d| {
        each(d, "items", |i| with(i, "fieldRef", field_ref))
    });
    with(v, "projected", |p| {
        each(p, "sources", |s| {
            with(s, "serviceAccountToken", |t| {
                set(t, "expirationSeconds", json!(3600))
            });
            with(s, "downwardAPI", |d| {
                each(d, "items", |i| with(i, "fieldRef", field_ref))
            });
        })
    });
    with(v, "ephemeral", |e| {
        with(e, "volumeClaimTemplate", |t| {
            set(child(t, "spec"), "volumeMode", json!("Filesystem"))
        })
    });
    with(v, "image", |i| {
        if i["pullPolicy"].as_str().is_none_or(str::is_empty) {
            let policy = image_pull_policy(i["reference"].as_str().unwrap_or(""));
            i["pullPolicy"] = policy.into();
        }
    });
    with(v, "iscsi", |s| set_str(s, "iscsiInterface", "default"));
    with(v, "rbd", |s| {
        set_str(s, "pool", "rbd");
        set_str(s, "user", "admin");
        set_str(s, "keyring", "/etc/ceph/keyring");
    });
    with(v, "azureDisk", |s| {
        set_str(s, "cachingMode", "ReadWrite");
        set_str(s, "fsType", "ext4");
        set(s, "readOnly", json!(false));
        set_str(s, "kind", "Shared");
    });
    with(v, "scaleIO", |s| {
        set_str(s, "storageMode", "ThinProvisioned");
        set_str(s, "fsType", "xfs");
    });
}

// ---- other core kinds -------------------------------------------------------------------------

fn namespace(obj: &mut Value) {
    if let Some(name) = obj["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(String::from)
    {
        child(child(obj, "metadata"), "labels")["kubernetes.io/metadata.name"] = name.into();
    }
    set(child(obj, "spec"), "finalizers", json!(["kubernetes"]));
    set_str(child(obj, "status"), "phase", "Active");
}

fn pvc(obj: &mut Value) {
    set(child(obj, "spec"), "volumeMode", json!("Filesystem"));
    set_str(child(obj, "status"), "phase", "Pending");
}

fn service(svc: &mut Value) {
    let spec = child(svc, "spec");
    set_str(spec, "type", "ClusterIP");
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    set_str(spec, "sessionAffinity", "None");
    match spec["sessionAffinity"].as_str() {
        Some("None") => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("sessionAffinityConfig");
            }
        }
        Some("ClientIP") => {
            let cfg = child(child(spec, "sessionAffinityConfig"), "clientIP");
            set(cfg, "timeoutSeconds", json!(10800));
        }
        _ => {}
    }
    each(spec, "ports", |p| {
        port_protocol(p);
        if p["targetPort"].is_null() || p["targetPort"] == 0 || p["targetPort"] == "" {
            p["targetPort"] = p["port"].clone();
        }
    });
    let has_external_ips = spec["externalIPs"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    let externally_accessible =
        ty == "NodePort" || ty == "LoadBalancer" || (ty == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    // The service registry settles the IP families on a single-stack IPv4 cluster; headless
    // services without a selector ask for both.
    if ty != "ExternalName" {
        let headless = spec["clusterIP"] == "None";
        let selectorless = spec["selector"].as_object().is_none_or(Map::is_empty);
        let policy = if headless && selectorless {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        set(spec, "ipFamilyPolicy", json!(policy));
        set(spec, "ipFamilies", json!(["IPv4"]));
    }
}

// ---- apps -------------------------------------------------------------------------------------

fn deployment(obj: &mut Value) {
    let spec = child(obj, "spec");
    set(spec, "replicas", json!(1));
    let strategy = child(spec, "strategy");
    set_str(strategy, "type", "RollingUpdate");
    if strategy["type"] == "RollingUpdate" {
        let ru = child(strategy, "rollingUpdate");
        set(ru, "maxUnavailable", json!("25%"));
        set(ru, "maxSurge", json!("25%"));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    pod_template(child(spec, "template"));
}

fn daemon_set(obj: &mut Value) {
    let spec = child(obj, "spec");
    let strategy = child(spec, "updateStrategy");
    set_str(strategy, "type", "RollingUpdate");
    if strategy["type"] == "RollingUpdate" {
        let ru = child(strategy, "rollingUpdate");
        set(ru, "maxUnavailable", json!(1));
        set(ru, "maxSurge", json!(0));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    pod_template(child(spec, "template"));
}

fn stateful_set(obj: &mut Value) {
    let spec = child(obj, "spec");
    set_str(spec, "podManagementPolicy", "OrderedReady");
    let strategy = child(spec, "updateStrategy");
    if strategy["type"].as_str().is_none_or(str::is_empty) {
        strategy["type"] = "RollingUpdate".into();
        child(strategy, "rollingUpdate");
    }
    if strategy["type"] == "RollingUpdate" {
        with(strategy, "rollingUpdate", |ru| {
            set(ru, "partition", json!(0))
        });
    }
    let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
    set_str(retention, "whenDeleted", "Retain");
    set_str(retention, "whenScaled", "Retain");
    set(spec, "replicas", json!(1));
    set(spec, "revisionHistoryLimit", json!(10));
    pod_template(child(spec, "template"));
    each(spec, "volumeClaimTemplates", |t| {
        set_str(t, "apiVersion", "v1");
        set_str(t, "kind", "PersistentVolumeClaim");
        pvc(t);
    });
}

// ---- batch ------------------------------------------------------------------------------------

fn job(obj: &mut Value) {
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let spec = child(obj, "spec");
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    set(spec, "parallelism", json!(1));
    set(spec, "backoffLimit", json!(6));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    let replacement = if spec["podFailurePolicy"].is_object() {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set(spec, "podReplacementPolicy", json!(replacement));
    pod_template(child(spec, "template"));
    // The job registry generates the selector from the uid unless the client manages it.
    if !uid.is_empty() && spec["manualSelector"] != true && spec["selector"].is_null() {
        spec["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid.clone()}});
        let labels = child(child(child(spec, "template"), "metadata"), "labels");
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            set(labels, k, json!(v));
        }
    }
    // A job without labels takes its template's.
    let template_labels = obj["spec"]["template"]["metadata"]["labels"].clone();
    if template_labels.as_object().is_some_and(|l| !l.is_empty())
        && obj["metadata"]["labels"]
            .as_object()
            .is_none_or(Map::is_empty)
    {
        child(obj, "metadata")["labels"] = template_labels;
    }
}

fn cron_job(obj: &mut Value) {
    let spec = child(obj, "spec");
    set_str(spec, "concurrencyPolicy", "Allow");
    set(spec, "suspend", json!(false));
    set(spec, "successfulJobsHistoryLimit", json!(3));
    set(spec, "failedJobsHistoryLimit", json!(1));
    // The job template gets the pod template's defaults, not the Job's own.
    let job_spec = child(child(spec, "jobTemplate"), "spec");
    pod_template(child(job_spec, "template"));
}
