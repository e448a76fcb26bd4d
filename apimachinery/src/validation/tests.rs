use serde_json::{Value, json};

use super::*;
use crate::defaults;

/// Defaults then validates, as the server does; the causes as kubectl prints them.
fn check(group: &str, kind: &str, mut obj: Value) -> Vec<String> {
    defaults::apply(group, kind, &mut obj);
    validate(group, kind, &obj, None)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn check_update(group: &str, kind: &str, mut old: Value, mut new: Value) -> Vec<String> {
    defaults::apply(group, kind, &mut old);
    defaults::apply(group, kind, &mut new);
    validate(group, kind, &new, Some(&old))
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
            "ports": [{"name": "http", "containerPort": 80}],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/nginx/conf.d"}]}],
            "volumes": [{"name": "config", "configMap": {"name": "nginx"}}]}})
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}})
}

fn workload() -> Value {
    json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()}})
}

fn job() -> Value {
    json!({"metadata": {"name": "pi", "uid": "3f1c"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "pi", "image": "perl:5.34", "command": ["perl", "-Mbignum=bpi", "-wle", "print bpi(2000)"]}]}}}})
}

fn cron_job() -> Value {
    json!({"metadata": {"name": "hello"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
        "restartPolicy": "OnFailure", "containers": [{"name": "hello", "image": "busybox:1.36", "command": ["date"]}]}}}}}})
}

fn service() -> Value {
    json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "https", "port": 443, "targetPort": 8443}]}})
}

// ---- valid objects ----------------------------------------------------------------------------

#[test]
fn realistic_objects_of_every_kind_are_valid() {
    let cases: Vec<(&str, &str, Value)> = vec![
        ("", "Pod", pod()),
        ("", "Service", service()),
        (
            "",
            "Service",
            json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}}}),
        ),
        (
            "",
            "Service",
            json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "db.example.com."}}),
        ),
        (
            "",
            "Service",
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30080}]}}),
        ),
        ("apps", "Deployment", workload()),
        ("apps", "ReplicaSet", workload()),
        ("apps", "DaemonSet", workload()),
        ("apps", "StatefulSet", {
            let mut s = workload();
            s["spec"]["serviceName"] = "web".into();
            s["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
            s
        }),
        ("batch", "Job", job()),
        ("batch", "CronJob", cron_job()),
        (
            "",
            "ConfigMap",
            json!({"metadata": {"name": "nginx"}, "data": {"default.conf": "server {}", "KEY_1": "v"}}),
        ),
        (
            "",
            "Secret",
            json!({"metadata": {"name": "s"}, "data": {"password": "czNjcjN0"}}),
        ),
        (
            "",
            "Secret",
            json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ==", "tls.key": "Yg=="}}),
        ),
        ("", "Namespace", json!({"metadata": {"name": "team-a"}})),
        (
            "",
            "Node",
            json!({"metadata": {"name": "node-1.example.com"}, "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        ),
        (
            "",
            "ServiceAccount",
            json!({"metadata": {"name": "builder"}}),
        ),
        (
            "",
            "PersistentVolume",
            json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}}),
        ),
        (
            "",
            "PersistentVolumeClaim",
            json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        (
            "",
            "Endpoints",
            json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 80}]}]}),
        ),
        (
            "",
            "Event",
            json!({"metadata": {"name": "e.1", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "type": "Normal"}),
        ),
        (
            "events.k8s.io",
            "Event",
            json!({"metadata": {"name": "e.2", "namespace": "default"}, "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "kubelet", "reportingInstance": "node-1", "action": "Started", "reason": "Started", "type": "Normal", "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}}),
        ),
        (
            "coordination.k8s.io",
            "Lease",
            json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}}),
        ),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true}}], "ports": [{"name": "http", "port": 80}]}),
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            json!({"metadata": {"name": "system:reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
        ),
        (
            "rbac.authorization.k8s.io",
            "RoleBinding",
            json!({"metadata": {"name": "read"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "ServiceAccount", "name": "builder", "namespace": "ci"}, {"kind": "User", "name": "alice"}]}),
        ),
        (
            "storage.k8s.io",
            "StorageClass",
            json!({"metadata": {"name": "standard"}, "provisioner": "rancher.io/local-path"}),
        ),
        (
            "scheduling.k8s.io",
            "PriorityClass",
            json!({"metadata": {"name": "high"}, "value": 1000}),
        ),
        (
            "policy",
            "PodDisruptionBudget",
            json!({"metadata": {"name": "web"}, "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}}),
        ),
    ];
    for (g, k, obj) in cases {
        assert_eq!(check(g, k, obj), Vec::<String>::new(), "{g}/{k}");
    }
}

// ---- metadata ---------------------------------------------------------------------------------

#[test]
fn object_names_must_be_dns_subdomains() {
    let c = check("", "ConfigMap", json!({"metadata": {"name": "Bad_Name"}}));
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ),
        "{c:?}"
    );
}

#[test]
fn namespace_names_must_be_dns_labels() {
    assert_eq!(
        check("", "Namespace", json!({"metadata": {"name": "a.b"}})),
        ["metadata.name: Invalid value: \"a.b\": must not contain dots"]
    );
}

#[test]
fn service_names_must_start_with_a_letter() {
    let c = check(
        "",
        "Service",
        json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 1}]}}),
    );
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with("metadata.name: Invalid value: \"1svc\": a DNS-1035 label"),
        "{c:?}"
    );
}

#[test]
fn rbac_names_are_path_segments() {
    assert!(
        check(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            json!({"metadata": {"name": "system:auth-delegator"}})
        )
        .is_empty()
    );
    assert_eq!(
        check(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            json!({"metadata": {"name": "a/b"}})
        ),
        ["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
    );
}

#[test]
fn cron_job_names_are_at_most_52_characters() {
    let mut cj = cron_job();
    cj["metadata"]["name"] = "a".repeat(53).into();
    assert_eq!(
        check("batch", "CronJob", cj),
        [format!(
            "metadata.name: Invalid value: \"{}\": must be no more than 52 characters",
            "a".repeat(53)
        )]
    );
}

#[test]
fn label_keys_and_values_must_be_valid() {
    let c = check(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "c", "labels": {"bad key": "ok", "ok": "bad value"}}}),
    );
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(
        c[0].starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist of"),
        "{c:?}"
    );
    assert!(
        c[1].starts_with("metadata.labels: Invalid value: \"bad value\": a valid label must be"),
        "{c:?}"
    );
}

#[test]
fn annotations_may_not_exceed_256_kib_in_total() {
    let c = check(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "c", "annotations": {"a": "x".repeat(256 * 1024)}}}),
    );
    assert_eq!(
        c,
        ["metadata.annotations: Too long: may not be more than 262144 bytes"]
    );
}

#[test]
fn finalizers_must_be_standard_or_qualified() {
    assert!(
        check(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c", "finalizers": ["example.com/cleanup", "orphan"]}})
        )
        .is_empty()
    );
    assert_eq!(
        check(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c", "finalizers": ["cleanup"]}})
        ),
        [
            "metadata.finalizers: Invalid value: \"cleanup\": name is neither a standard finalizer name nor is it fully qualified"
        ]
    );
}

#[test]
fn owner_references_need_a_uid() {
    assert_eq!(
        check(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c", "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p"}]}})
        ),
        ["metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"]
    );
}

// ---- pods -------------------------------------------------------------------------------------

#[test]
fn a_pod_needs_at_least_one_container() {
    assert_eq!(
        check(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": []}})
        ),
        ["spec.containers: Required value"]
    );
}

#[test]
fn a_container_needs_an_image() {
    assert_eq!(
        check(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}})
        ),
        ["spec.containers[0].image: Required value"]
    );
}

#[test]
fn a_container_needs_a_dns_label_name() {
    assert_eq!(
        check(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"image": "x"}]}})
        ),
        ["spec.containers[0].name: Required value"]
    );
    let c = check(
        "",
        "Pod",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "Web", "image": "x"}]}}),
    );
    assert!(
        c[0].starts_with(
            "spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"
        ),
        "{c:?}"
    );
}

#[test]
fn container_names_are_unique_across_init_and_regular_containers() {
    assert_eq!(
        check(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"initContainers": [{"name": "c", "image": "i"}], "containers": [{"name": "c", "image": "i"}]}})
        ),
        ["spec.containers[0].name: Duplicate value: \"c\""]
    );
}

#[test]
fn container_ports_must_be_in_range_with_a_known_protocol() {
    let mut p = pod();
    p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 70000}, {"containerPort": 0}, {"containerPort": 53, "protocol": "ICMP"}]);
    assert_eq!(
        check("", "Pod", p),
        [
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].containerPort: Required value",
            "spec.containers[0].ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ]
    );
}

#[test]
fn restart_and_dns_policies_must_be_known() {
    let mut p = pod();
    p["spec"]["restartPolicy"] = "Sometimes".into();
    p["spec"]["dnsPolicy"] = "Google".into();
    assert_eq!(
        check("", "Pod", p),
        [
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            "spec.dnsPolicy: Unsupported value: \"Google\": supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\"",
        ]
    );
}

#[test]
fn volume_names_are_unique_and_each_volume_has_one_source() {
    let mut p = pod();
    p["spec"]["volumes"] = json!([
        {"name": "config", "configMap": {"name": "nginx"}},
        {"name": "config", "emptyDir": {}},
        {"name": "two", "emptyDir": {}, "hostPath": {"path": "/x"}}]);
    assert_eq!(
        check("", "Pod", p),
        [
            "spec.volumes[1].name: Duplicate value: \"config\"",
            "spec.volumes[2].emptyDir: Forbidden: may not specify more than 1 volume type",
        ]
    );
}

#[test]
fn volume_mounts_must_name_a_volume_of_the_pod() {
    let mut p = pod();
    p["spec"]["containers"][0]["volumeMounts"][0]["name"] = "missing".into();
    assert_eq!(
        check("", "Pod", p),
        ["spec.containers[0].volumeMounts[0].name: Not found: \"missing\""]
    );
}

#[test]
fn requests_may_not_exceed_limits() {
    let mut p = pod();
    p["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}});
    assert_eq!(
        check("", "Pod", p),
        [
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        ]
    );
}

#[test]
fn env_vars_need_names_and_one_source() {
    let mut p = pod();
    p["spec"]["containers"][0]["env"] = json!([{"value": "x"}, {"name": "A=B"}]);
    assert_eq!(
        check("", "Pod", p),
        [
            "spec.containers[0].env[0].name: Required value",
            "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
        ]
    );
}

#[test]
fn liveness_probes_need_a_handler_and_one_success() {
    let mut p = pod();
    p["spec"]["containers"][0]["livenessProbe"] = json!({"successThreshold": 2});
    assert_eq!(
        check("", "Pod", p),
        [
            "spec.containers[0].livenessProbe: Required value: must specify a handler type",
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        ]
    );
}

#[test]
fn tolerations_with_seconds_must_be_no_execute() {
    let mut p = pod();
    p["spec"]["tolerations"] =
        json!([{"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]);
    assert_eq!(
        check("", "Pod", p),
        [
            "spec.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"
        ]
    );
}

#[test]
fn a_pod_image_may_change_but_nothing_else_in_its_spec() {
    let mut image = pod();
    image["spec"]["containers"][0]["image"] = "nginx:1.28".into();
    assert!(check_update("", "Pod", pod(), image).is_empty());
    let mut cmd = pod();
    cmd["spec"]["containers"][0]["command"] = json!(["sh"]);
    assert_eq!(
        check_update("", "Pod", pod(), cmd),
        [format!("spec: Forbidden: {}", pod::POD_UPDATE_FORBIDDEN)]
    );
}

#[test]
fn a_pod_may_gain_tolerations_and_shorten_its_deadline() {
    let mut old = pod();
    old["spec"]["activeDeadlineSeconds"] = 100.into();
    let mut new = old.clone();
    new["spec"]["activeDeadlineSeconds"] = 50.into();
    new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
    assert!(check_update("", "Pod", old.clone(), new).is_empty());
    let mut longer = old.clone();
    longer["spec"]["activeDeadlineSeconds"] = 200.into();
    assert_eq!(
        check_update("", "Pod", old, longer),
        [
            "spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"
        ]
    );
}

// ---- services ---------------------------------------------------------------------------------

#[test]
fn a_service_needs_ports_unless_headless_or_external_name() {
    assert_eq!(
        check(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"selector": {"a": "b"}}})
        ),
        ["spec.ports: Required value"]
    );
}

#[test]
fn service_ports_must_be_in_range() {
    assert_eq!(
        check(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 0}]}})
        ),
        [
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        ],
        "the target port defaults to the port, and both are reported as upstream"
    );
}

#[test]
fn several_service_ports_need_unique_names() {
    assert_eq!(
        check(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 81}]}})
        ),
        [
            "spec.ports[0].name: Required value",
            "spec.ports[1].name: Required value"
        ]
    );
    assert_eq!(
        check(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}})
        ),
        ["spec.ports[1].name: Duplicate value: \"a\""]
    );
}

#[test]
fn service_types_must_be_known() {
    let mut s = service();
    s["spec"]["type"] = "Internal".into();
    assert_eq!(
        check("", "Service", s),
        [
            "spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        ]
    );
}

#[test]
fn target_ports_must_be_numbers_in_range_or_port_names() {
    let mut s = service();
    s["spec"]["ports"][0]["targetPort"] = "HTTP_PORT".into();
    let c = check("", "Service", s);
    assert!(
        c.iter()
            .all(|c| c.starts_with("spec.ports[0].targetPort: Invalid value: \"HTTP_PORT\"")),
        "{c:?}"
    );
    assert!(!c.is_empty());
}

#[test]
fn node_ports_are_forbidden_on_cluster_ip_services() {
    let mut s = service();
    s["spec"]["ports"][0]["nodePort"] = 30000.into();
    assert_eq!(
        check("", "Service", s),
        ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
}

#[test]
fn an_allocated_cluster_ip_may_not_change() {
    let mut old = service();
    old["spec"]["clusterIP"] = "10.96.0.10".into();
    old["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
    let mut new = service();
    new["spec"]["clusterIP"] = "None".into();
    new["spec"]["clusterIPs"] = json!(["None"]);
    assert_eq!(
        check_update("", "Service", old.clone(), new),
        ["spec.clusterIPs[0]: Invalid value: [\"None\"]: may not change once set"]
    );
    assert!(
        check_update("", "Service", old.clone(), service()).is_empty(),
        "left out, it is kept"
    );
}

// ---- workloads --------------------------------------------------------------------------------

#[test]
fn workload_selectors_must_match_their_template_labels() {
    for kind in ["Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"] {
        let mut w = workload();
        w["spec"]["template"]["metadata"]["labels"]["app"] = "other".into();
        assert_eq!(
            check("apps", kind, w),
            [
                "spec.template.metadata.labels: Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`"
            ],
            "{kind}"
        );
    }
}

#[test]
fn statefulset_containers_may_mount_claim_templates_only_there() {
    let mut w = workload();
    w["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "data", "mountPath": "/data"}]);
    let missing = "spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"data\"";
    assert_eq!(check("apps", "Deployment", w.clone()), [missing]);
    assert_eq!(check("apps", "StatefulSet", w.clone()), [missing]);
    w["spec"]["volumeClaimTemplates"] = json!([{"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]);
    assert!(check("apps", "StatefulSet", w).is_empty());
}

#[test]
fn workloads_need_a_non_empty_selector() {
    let mut w = workload();
    w["spec"]["selector"] = Value::Null;
    assert_eq!(
        check("apps", "Deployment", w),
        ["spec.selector: Required value"]
    );
    let mut w = workload();
    w["spec"]["selector"] = json!({});
    assert_eq!(
        check("apps", "DaemonSet", w),
        ["spec.selector: Invalid value: {}: empty selector is invalid for daemonset"]
    );
}

#[test]
fn workload_replicas_may_not_be_negative() {
    let mut w = workload();
    w["spec"]["replicas"] = (-1).into();
    assert_eq!(
        check("apps", "Deployment", w),
        ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
    );
}

#[test]
fn workload_templates_are_validated_as_pod_specs_and_must_restart_always() {
    let mut w = workload();
    w["spec"]["template"]["spec"]["containers"][0]["image"] = "".into();
    w["spec"]["template"]["spec"]["restartPolicy"] = "Never".into();
    assert_eq!(
        check("apps", "Deployment", w),
        [
            "spec.template.spec.containers[0].image: Required value",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ]
    );
}

#[test]
fn a_rolling_update_may_not_have_zero_surge_and_zero_unavailable() {
    let mut w = workload();
    w["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    assert_eq!(
        check("apps", "Deployment", w),
        [
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
        ]
    );
}

#[test]
fn a_recreate_deployment_may_not_configure_rolling_updates() {
    let mut w = workload();
    w["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
    assert_eq!(
        check("apps", "Deployment", w),
        [
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
        ]
    );
}

#[test]
fn max_unavailable_may_not_exceed_100_percent() {
    let mut w = workload();
    w["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%"}});
    assert_eq!(
        check("apps", "Deployment", w),
        [
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"
        ]
    );
}

#[test]
fn workload_selectors_are_immutable() {
    let mut new = workload();
    new["spec"]["selector"]["matchLabels"]["tier"] = "x".into();
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "x".into();
    assert_eq!(
        check_update("apps", "Deployment", workload(), new),
        [
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"tier\":\"x\"}}: field is immutable"
        ]
    );
}

#[test]
fn stateful_set_updates_may_only_change_some_fields() {
    let mut new = workload();
    new["spec"]["serviceName"] = "other".into();
    let c = check_update("apps", "StatefulSet", workload(), new);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with(
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas'"
        ),
        "{c:?}"
    );
    let mut scaled = workload();
    scaled["spec"]["replicas"] = 5.into();
    assert!(check_update("apps", "StatefulSet", workload(), scaled).is_empty());
}

// ---- jobs -------------------------------------------------------------------------------------

#[test]
fn a_job_without_restart_policy_is_rejected_as_upstream_rejects_it() {
    let mut j = job();
    j["spec"]["template"]["spec"]["restartPolicy"] = Value::Null;
    assert_eq!(
        check("batch", "Job", j),
        [
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        ]
    );
}

#[test]
fn job_counts_may_not_be_negative() {
    let mut j = job();
    j["spec"]["parallelism"] = (-1).into();
    j["spec"]["backoffLimit"] = (-2).into();
    assert_eq!(
        check("batch", "Job", j),
        [
            "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
            "spec.backoffLimit: Invalid value: -2: must be greater than or equal to 0",
        ]
    );
}

#[test]
fn a_job_template_is_immutable() {
    let mut new = job();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "perl:5.36".into();
    let c = check_update("batch", "Job", job(), new);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with("spec.template: Invalid value: {") && c[0].ends_with("field is immutable"),
        "{c:?}"
    );
}

#[test]
fn job_completions_are_immutable() {
    let mut new = job();
    new["spec"]["completions"] = 3.into();
    assert_eq!(
        check_update("batch", "Job", job(), new),
        ["spec.completions: Invalid value: 3: field is immutable"]
    );
}

#[test]
fn a_cron_job_needs_a_parseable_schedule() {
    let mut cj = cron_job();
    cj["spec"]["schedule"] = Value::Null;
    assert_eq!(
        check("batch", "CronJob", cj),
        ["spec.schedule: Required value"]
    );
    let mut cj = cron_job();
    cj["spec"]["schedule"] = "every minute".into();
    assert_eq!(
        check("batch", "CronJob", cj),
        [
            "spec.schedule: Invalid value: \"every minute\": expected exactly 5 fields, found 2: [every minute]"
        ]
    );
    let mut cj = cron_job();
    cj["spec"]["schedule"] = "61 * * * *".into();
    assert_eq!(
        check("batch", "CronJob", cj),
        ["spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"]
    );
}

#[test]
fn cron_schedules_accept_macros_names_ranges_and_steps() {
    for s in [
        "@hourly",
        "@daily",
        "@every 1h",
        "0 0 * * MON-FRI",
        "*/15 9-17 1,15 JAN-jun ?",
        "0 0 L * *",
    ] {
        let ok = workloads::parse_schedule(s);
        if s == "0 0 L * *" {
            assert!(ok.is_err(), "{s}");
        } else {
            assert_eq!(ok, Ok(()), "{s}");
        }
    }
    assert_eq!(
        workloads::parse_schedule("@often"),
        Err("unrecognized descriptor: @often".into())
    );
}

#[test]
fn a_cron_job_may_not_name_a_time_zone_in_its_schedule() {
    let mut cj = cron_job();
    cj["spec"]["schedule"] = "CRON_TZ=UTC 0 * * * *".into();
    assert_eq!(
        check("batch", "CronJob", cj),
        [
            "spec.schedule: Invalid value: \"CRON_TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        ]
    );
}

#[test]
fn a_cron_job_concurrency_policy_must_be_known() {
    let mut cj = cron_job();
    cj["spec"]["concurrencyPolicy"] = "Sometimes".into();
    assert_eq!(
        check("batch", "CronJob", cj),
        [
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""
        ]
    );
}

// ---- config and the rest ----------------------------------------------------------------------

#[test]
fn config_keys_must_be_valid() {
    let c = check(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "c"}, "data": {"bad key": "x"}}),
    );
    assert_eq!(
        c,
        [
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        ]
    );
}

#[test]
fn config_data_is_limited_to_one_mebibyte() {
    let c = check(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "c"}, "data": {"k": "x".repeat(other::MAX_DATA_BYTES + 1)}}),
    );
    assert_eq!(c, ["Too long: may not be more than 1048576 bytes"]);
}

#[test]
fn immutable_config_maps_and_secrets_keep_their_data() {
    let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
    let new = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "2"}});
    assert_eq!(
        check_update("", "ConfigMap", old.clone(), new),
        ["data: Forbidden: field is immutable when `immutable` is set"]
    );
    let unset = json!({"metadata": {"name": "c"}, "immutable": false, "data": {"a": "1"}});
    assert_eq!(
        check_update("", "Secret", old, unset),
        ["immutable: Forbidden: field is immutable when `immutable` is set"]
    );
}

#[test]
fn tls_secrets_need_a_key_and_a_certificate() {
    assert_eq!(
        check(
            "",
            "Secret",
            json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}})
        ),
        ["data[tls.key]: Required value"]
    );
}

#[test]
fn a_secret_type_is_immutable() {
    let old = json!({"metadata": {"name": "s"}, "data": {"a": "YQ=="}});
    let new = json!({"metadata": {"name": "s"}, "type": "example.com/x", "data": {"a": "YQ=="}});
    assert_eq!(
        check_update("", "Secret", old, new),
        ["type: Invalid value: \"example.com/x\": field is immutable"]
    );
}

#[test]
fn lease_durations_must_be_positive() {
    assert_eq!(
        check(
            "coordination.k8s.io",
            "Lease",
            json!({"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}})
        ),
        [
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
            "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
        ]
    );
}

#[test]
fn endpoint_slices_need_a_known_address_type_and_addresses() {
    assert_eq!(
        check(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": {"name": "e"}, "addressType": "IPv5"})
        ),
        [
            "addressType: Unsupported value: \"IPv5\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
        ]
    );
    assert_eq!(
        check(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": {"name": "e"}, "addressType": "IPv4", "endpoints": [{"addresses": []}, {"addresses": ["::1"]}]})
        ),
        [
            "endpoints[0].addresses: Required value: must contain at least 1 address",
            "endpoints[1].addresses[0]: Invalid value: \"::1\": must be a valid IPv4 address",
        ]
    );
}

#[test]
fn events_must_be_in_the_namespace_of_their_object() {
    assert_eq!(
        check(
            "",
            "Event",
            json!({"metadata": {"name": "e", "namespace": "a"}, "involvedObject": {"kind": "Pod", "name": "p", "namespace": "b"}})
        ),
        ["involvedObject.namespace: Invalid value: \"b\": does not match event.namespace"]
    );
}

#[test]
fn events_api_events_must_say_who_reported_them() {
    let c = check(
        "events.k8s.io",
        "Event",
        json!({"metadata": {"name": "e", "namespace": "a"}, "eventTime": "2024-01-01T00:00:00Z", "type": "Normal", "action": "A", "reason": "R"}),
    );
    assert_eq!(
        c,
        [
            "reportingController: Required value",
            "reportingInstance: Required value"
        ]
    );
}

#[test]
fn role_bindings_need_a_known_role_kind_and_keep_their_role() {
    let rb = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]});
    assert_eq!(
        check(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            rb.clone()
        ),
        ["roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\""]
    );
    let mut other = rb.clone();
    other["roleRef"]["name"] = "r2".into();
    let c = check_update("rbac.authorization.k8s.io", "RoleBinding", rb, other);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with("roleRef: Invalid value:") && c[0].ends_with("cannot change roleRef"),
        "{c:?}"
    );
}

#[test]
fn role_rules_need_verbs() {
    assert_eq!(
        check(
            "rbac.authorization.k8s.io",
            "Role",
            json!({"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}]})
        ),
        ["rules[0].verbs: Required value: verbs must contain at least one value"]
    );
}

#[test]
fn claims_need_access_modes_and_storage_and_keep_their_spec() {
    assert_eq!(
        check(
            "",
            "PersistentVolumeClaim",
            json!({"metadata": {"name": "c"}, "spec": {}})
        ),
        [
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Required value",
        ]
    );
    let old = json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let mut grown = old.clone();
    grown["spec"]["resources"]["requests"]["storage"] = "2Gi".into();
    assert!(check_update("", "PersistentVolumeClaim", old.clone(), grown).is_empty());
    let mut changed = old.clone();
    changed["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    assert_eq!(
        check_update("", "PersistentVolumeClaim", old, changed).len(),
        1
    );
}

#[test]
fn storage_class_parameters_are_fixed() {
    let old = json!({"metadata": {"name": "s"}, "provisioner": "p.example.com"});
    let mut new = old.clone();
    new["parameters"] = json!({"a": "b"});
    assert_eq!(
        check_update("storage.k8s.io", "StorageClass", old, new),
        ["parameters: Forbidden: updates to parameters are forbidden."]
    );
}

#[test]
fn a_pod_disruption_budget_sets_min_available_or_max_unavailable_not_both() {
    let c = check(
        "policy",
        "PodDisruptionBudget",
        json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1, "maxUnavailable": 1}}),
    );
    assert_eq!(c.len(), 1);
    assert!(
        c[0].ends_with("minAvailable and maxUnavailable cannot be both set"),
        "{c:?}"
    );
}

#[test]
fn quantities_parse_with_binary_and_decimal_suffixes() {
    assert_eq!(formats::quantity("100m"), Some(0.1));
    assert_eq!(formats::quantity("1Ki"), Some(1024.0));
    assert_eq!(formats::quantity("1e3"), Some(1000.0));
    assert_eq!(formats::quantity("2G"), Some(2e9));
    assert_eq!(formats::quantity("abc"), None);
    assert_eq!(formats::quantity("1Xi"), None);
}

#[test]
fn port_names_follow_the_iana_service_name_rules() {
    assert!(formats::port_name("http").is_empty());
    assert!(formats::port_name("h2c-8080").is_empty());
    assert_eq!(
        formats::port_name("8080"),
        ["must contain at least one letter (a-z)"]
    );
    assert_eq!(
        formats::port_name("a--b"),
        ["must contain consecutive hyphens".replace("must", "must not")]
    );
    assert_eq!(
        formats::port_name("averyveryverylongname"),
        ["must be no more than 15 characters"]
    );
}

#[test]
fn unscheduled_pods_take_status_updates_but_updates_may_not_bind_them() {
    let defaulted = |mut v: Value| {
        defaults::apply("", "Pod", &mut v);
        v
    };
    let pending = defaulted(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}, "status": {"phase": "Pending"}}),
    );
    let mut status_only = pending.clone();
    status_only["status"]["conditions"] =
        json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]);
    let causes = super::validate("", "Pod", &status_only, Some(&pending));
    assert!(causes.is_empty(), "{causes:?}");
    let mut self_bound = pending.clone();
    self_bound["spec"]["nodeName"] = "n".into();
    assert!(
        !super::validate("", "Pod", &self_bound, Some(&pending)).is_empty(),
        "updates may not bind"
    );
}
