//! Upstream defaulting of the built-in kinds, applied on create and update. Idempotent:
//! applying it twice gives what applying it once gives.

use serde_json::{Map, Value, json};

/// Sets `obj[key]` to `value` when absent or null.
fn default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        let slot = m.entry(key.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// The object at `obj[key]`, created when absent.
fn child<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    if !obj[key].is_object() {
        obj[key] = Value::Object(Map::new());
    }
    &mut obj[key]
}

fn each(obj: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(list) = obj.get_mut(key).and_then(Value::as_array_mut) {
        list.iter_mut().for_each(&mut f);
    }
}

/// Fills in the defaults of an object of the given kind.
pub fn apply(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") if obj["spec"].is_object() => {
            pod_spec(&mut obj["spec"], true);
            pod_tolerations(&mut obj["spec"]);
        }
        ("", "Service") => service(obj),
        ("", "Namespace") => {
            let spec = child(obj, "spec");
            default(spec, "finalizers", json!(["kubernetes"]));
        }
        ("", "Secret") => default(obj, "type", json!("Opaque")),
        ("", "PersistentVolume") => {
            let spec = child(obj, "spec");
            default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            default(spec, "volumeMode", json!("Filesystem"));
        }
        ("", "PersistentVolumeClaim") => {
            default(child(obj, "spec"), "volumeMode", json!("Filesystem"))
        }
        ("", "Endpoints") => each(obj, "subsets", |s| {
            each(s, "ports", |p| default(p, "protocol", json!("TCP")))
        }),
        ("discovery.k8s.io", "EndpointSlice") => {
            each(obj, "ports", |p| default(p, "protocol", json!("TCP")))
        }
        ("apps", "Deployment") => {
            let spec = child(obj, "spec");
            default(spec, "replicas", json!(1));
            let strategy = child(spec, "strategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = child(strategy, "rollingUpdate");
                default(ru, "maxUnavailable", json!("25%"));
                default(ru, "maxSurge", json!("25%"));
            }
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            template(spec, true);
        }
        ("apps", "ReplicaSet") => {
            let spec = child(obj, "spec");
            default(spec, "replicas", json!(1));
            template(spec, true);
        }
        ("apps", "DaemonSet") => {
            let spec = child(obj, "spec");
            let strategy = child(spec, "updateStrategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = child(strategy, "rollingUpdate");
                default(ru, "maxUnavailable", json!(1));
                default(ru, "maxSurge", json!(0));
            }
            default(spec, "revisionHistoryLimit", json!(10));
            template(spec, true);
        }
        ("apps", "StatefulSet") => {
            let spec = child(obj, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            let strategy = child(spec, "updateStrategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                default(child(strategy, "rollingUpdate"), "partition", json!(0));
            }
            default(spec, "revisionHistoryLimit", json!(10));
            let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
            default(retention, "whenDeleted", json!("Retain"));
            default(retention, "whenScaled", json!("Retain"));
            template(spec, true);
        }
        ("batch", "Job") => job_spec(child(obj, "spec")),
        ("batch", "CronJob") => {
            let spec = child(obj, "spec");
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            let job = child(child(spec, "jobTemplate"), "spec");
            job_spec(job);
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            default(obj, "preemptionPolicy", json!("PreemptLowerPriority"))
        }
        ("storage.k8s.io", "StorageClass") => {
            default(obj, "reclaimPolicy", json!("Delete"));
            default(obj, "volumeBindingMode", json!("Immediate"));
        }
        _ => {}
    }
}

fn job_spec(spec: &mut Value) {
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    default(spec, "parallelism", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    if spec["podFailurePolicy"].is_null() {
        default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    template(spec, false);
}

/// Defaults the pod template of a workload; `restart_always` defaults its restartPolicy.
fn template(spec: &mut Value, restart_always: bool) {
    let template = child(spec, "template");
    let pod = child(template, "spec");
    pod_spec(pod, restart_always);
}

fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn probe(p: &mut Value) {
    if !p.is_object() {
        return;
    }
    default(p, "timeoutSeconds", json!(1));
    default(p, "periodSeconds", json!(10));
    default(p, "successThreshold", json!(1));
    default(p, "failureThreshold", json!(3));
    if p["httpGet"].is_object() {
        default(&mut p["httpGet"], "scheme", json!("HTTP"));
        default(&mut p["httpGet"], "path", json!("/"));
    }
    if p["grpc"].is_object() {
        default(&mut p["grpc"], "service", json!(""));
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or("").to_string();
    if !image.is_empty() {
        default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
    }
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    each(c, "ports", |p| default(p, "protocol", json!("TCP")));
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(key) {
            probe(p);
        }
    }
    each(c, "env", |e| {
        if e["valueFrom"]["fieldRef"].is_object() {
            default(&mut e["valueFrom"]["fieldRef"], "apiVersion", json!("v1"));
        }
    });
    // Limits without requests request what they limit.
    if let Some(limits) = c["resources"]["limits"].as_object().cloned() {
        let requests = child(child(c, "resources"), "requests");
        for (k, v) in limits {
            default(requests, &k, v);
        }
    }
}

fn pod_spec(spec: &mut Value, restart_always: bool) {
    if restart_always {
        default(spec, "restartPolicy", json!("Always"));
    }
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    if spec["serviceAccountName"].is_null() && spec["serviceAccount"].is_string() {
        spec["serviceAccountName"] = spec["serviceAccount"].clone();
    }
    each(spec, "containers", container);
    each(spec, "initContainers", container);
    each(spec, "volumes", |v| {
        for (source, key) in [
            ("secret", "defaultMode"),
            ("configMap", "defaultMode"),
            ("downwardAPI", "defaultMode"),
            ("projected", "defaultMode"),
        ] {
            if v[source].is_object() {
                default(&mut v[source], key, json!(420));
            }
        }
        if v["hostPath"].is_object() {
            default(&mut v["hostPath"], "type", json!(""));
        }
    });
}

/// Pods only (not templates): service account and the not-ready/unreachable tolerations.
fn pod_tolerations(spec: &mut Value) {
    default(spec, "serviceAccountName", json!("default"));
    if spec["serviceAccount"].is_null() {
        spec["serviceAccount"] = spec["serviceAccountName"].clone();
    }
    let list = child_array(spec, "tolerations");
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let present = list
            .iter()
            .any(|t| t["key"] == key && (t["effect"] == "NoExecute" || t["effect"].is_null()));
        if !present {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

fn child_array<'a>(obj: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !obj[key].is_array() {
        obj[key] = json!([]);
    }
    obj[key].as_array_mut().expect("made an array above")
}

fn service(svc: &mut Value) {
    let spec = child(svc, "spec");
    default(spec, "type", json!("ClusterIP"));
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    default(spec, "sessionAffinity", json!("None"));
    if spec["sessionAffinity"] == "ClientIP" {
        let cfg = child(child(spec, "sessionAffinityConfig"), "clientIP");
        default(cfg, "timeoutSeconds", json!(10800));
    }
    each(spec, "ports", |p| {
        default(p, "protocol", json!("TCP"));
        if p["targetPort"].is_null() {
            p["targetPort"] = p["port"].clone();
        }
    });
    if ty != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
        default(spec, "ipFamilies", json!(["IPv4"]));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_upstream_defaults() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}], "readinessProbe": {"httpGet": {"port": 80}}},
            {"name": "b", "image": "busybox:1.36"},
            {"name": "c", "image": "reg:5000/x@sha256:abc", "resources": {"limits": {"cpu": "1"}}}]}});
        apply("", "Pod", &mut pod);
        let spec = &pod["spec"];
        assert_eq!(
            (
                spec["restartPolicy"].as_str(),
                spec["dnsPolicy"].as_str(),
                spec["schedulerName"].as_str()
            ),
            (
                Some("Always"),
                Some("ClusterFirst"),
                Some("default-scheduler")
            )
        );
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][2]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["containers"][0]["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(
            spec["containers"][0]["readinessProbe"]["httpGet"]["scheme"],
            "HTTP"
        );
        assert_eq!(spec["containers"][2]["resources"]["requests"]["cpu"], "1");
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn defaulting_is_idempotent() {
        for (g, k, obj) in [
            (
                "",
                "Pod",
                json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}),
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}),
            ),
            (
                "",
                "Service",
                json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}}),
            ),
        ] {
            let mut once = obj.clone();
            apply(g, k, &mut once);
            let mut twice = once.clone();
            apply(g, k, &mut twice);
            assert_eq!(once, twice, "{k}");
        }
    }

    #[test]
    fn workloads_services_and_jobs_get_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        apply("apps", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(
            d["spec"]["template"]["spec"]["tolerations"].is_null(),
            "templates get no pod-only defaults"
        );
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply("", "Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        let mut j = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply("batch", "Job", &mut j);
        assert_eq!(
            (
                j["spec"]["completions"].as_i64(),
                j["spec"]["parallelism"].as_i64(),
                j["spec"]["backoffLimit"].as_i64()
            ),
            (Some(1), Some(1), Some(6))
        );
        assert!(
            j["spec"]["template"]["spec"]["restartPolicy"].is_null(),
            "jobs must choose their restart policy"
        );
    }
}
