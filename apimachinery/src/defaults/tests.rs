use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
    apply(group, kind, &mut obj);
    obj
}

fn deployment() -> Value {
    json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}})
}

#[test]
fn a_pod_gets_the_pod_spec_defaults() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "busybox"}]}}),
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    let c = &spec["containers"][0];
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
}

#[test]
fn a_pod_gets_what_the_default_admission_plugins_add() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "x"}]}}),
    );
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(
        spec["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ])
    );
}

#[test]
fn a_pod_that_tolerates_everything_gets_no_default_tolerations() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"tolerations": [{"operator": "Exists"}], "containers": [{"name": "a", "image": "x"}]}}),
    );
    assert_eq!(pod["spec"]["tolerations"], json!([{"operator": "Exists"}]));
}

#[test]
fn the_deprecated_service_account_field_names_the_account() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"serviceAccount": "builder", "containers": [{"name": "a", "image": "x"}]}}),
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "builder");
}

#[test]
fn image_pull_policy_is_always_for_latest_or_untagged_images_only() {
    assert_eq!(image_pull_policy("busybox"), "Always");
    assert_eq!(image_pull_policy("busybox:latest"), "Always");
    assert_eq!(image_pull_policy("busybox:1.36"), "IfNotPresent");
    assert_eq!(
        image_pull_policy("registry:5000/team/app"),
        "Always",
        "a registry port is not a tag"
    );
    assert_eq!(image_pull_policy("registry:5000/app:v1"), "IfNotPresent");
    assert_eq!(image_pull_policy("app@sha256:abcd"), "IfNotPresent");
    assert_eq!(image_pull_policy("app:latest@sha256:abcd"), "Always");
}

#[test]
fn container_ports_probes_and_field_refs_are_defaulted() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "x:1",
            "ports": [{"containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": 80}, "periodSeconds": 0},
            "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}),
    );
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "periodSeconds": 10,
            "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
}

#[test]
fn pod_requests_default_to_limits_but_template_requests_do_not() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Mi"}}}]}}),
    );
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"],
        json!({"memory": "1Mi", "cpu": "1"})
    );
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "1"}});
    let d = defaulted("apps", "Deployment", d);
    let template = &d["spec"]["template"]["spec"];
    assert!(template["containers"][0]["resources"]["requests"].is_null());
    assert!(template["enableServiceLinks"].is_null());
    assert!(template["tolerations"].is_null());
    assert!(template["serviceAccountName"].is_null());
}

#[test]
fn host_network_pods_publish_their_container_ports_on_the_host() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"hostNetwork": true, "containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 8080}]}]}}),
    );
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
}

#[test]
fn volumes_get_modes_and_a_volume_without_source_is_an_empty_dir() {
    let pod = defaulted(
        "",
        "Pod",
        json!({"spec": {"containers": [{"name": "a", "image": "x"}], "volumes": [
            {"name": "s", "secret": {"secretName": "s"}},
            {"name": "c", "configMap": {"name": "c"}},
            {"name": "h", "hostPath": {"path": "/tmp"}},
            {"name": "p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
            {"name": "e"}]}}),
    );
    let v = &pod["spec"]["volumes"];
    assert_eq!(v[0]["secret"]["defaultMode"], 420);
    assert_eq!(v[1]["configMap"]["defaultMode"], 420);
    assert_eq!(v[2]["hostPath"]["type"], "");
    assert_eq!(v[3]["projected"]["defaultMode"], 420);
    assert_eq!(
        v[3]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
    assert_eq!(v[4]["emptyDir"], json!({}));
}

#[test]
fn a_service_gets_cluster_ip_defaults_and_target_ports() {
    let svc = defaulted(
        "",
        "Service",
        json!({"spec": {"selector": {"app": "x"}, "ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}),
    );
    let spec = &svc["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(
        spec["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    assert_eq!(spec["ports"][1]["targetPort"], "https");
    assert!(spec["externalTrafficPolicy"].is_null());
    assert!(spec["allocateLoadBalancerNodePorts"].is_null());
}

#[test]
fn a_load_balancer_service_gets_external_traffic_policy_and_node_ports() {
    let svc = defaulted(
        "",
        "Service",
        json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
    );
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(svc["spec"]["allocateLoadBalancerNodePorts"], true);
}

#[test]
fn an_external_name_service_gets_no_ip_families() {
    let svc = defaulted(
        "",
        "Service",
        json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
    );
    assert!(svc["spec"]["ipFamilies"].is_null());
    assert!(svc["spec"]["internalTrafficPolicy"].is_null());
}

#[test]
fn a_headless_service_without_selector_requires_dual_stack() {
    let svc = defaulted("", "Service", json!({"spec": {"clusterIP": "None"}}));
    assert_eq!(svc["spec"]["ipFamilyPolicy"], "RequireDualStack");
}

#[test]
fn client_ip_affinity_gets_a_three_hour_timeout() {
    let svc = defaulted(
        "",
        "Service",
        json!({"spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 1}]}}),
    );
    assert_eq!(
        svc["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
}

#[test]
fn a_deployment_gets_rolling_update_and_history_defaults_without_copying_labels() {
    let d = defaulted("apps", "Deployment", deployment());
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    assert!(d["metadata"]["labels"].is_null());
}

#[test]
fn a_recreate_deployment_gets_no_rolling_update() {
    let mut d = deployment();
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    let d = defaulted("apps", "Deployment", d);
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn replica_sets_daemon_sets_and_stateful_sets_get_their_defaults() {
    let rs = defaulted("apps", "ReplicaSet", deployment());
    assert_eq!(rs["spec"]["replicas"], 1);
    let ds = defaulted("apps", "DaemonSet", deployment());
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    let mut sts = deployment();
    sts["spec"]["volumeClaimTemplates"] =
        json!([{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]);
    let sts = defaulted("apps", "StatefulSet", sts);
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["status"]["phase"],
        "Pending"
    );
}

#[test]
fn a_job_gets_one_completion_and_a_generated_selector() {
    let job = defaulted(
        "batch",
        "Job",
        json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}}),
    );
    let spec = &job["spec"];
    assert_eq!(
        (
            &spec["completions"],
            &spec["parallelism"],
            &spec["backoffLimit"]
        ),
        (&json!(1), &json!(1), &json!(6))
    );
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
    );
    assert_eq!(
        spec["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "pi"
    );
    assert_eq!(job["metadata"]["labels"]["job-name"], "pi");
}

#[test]
fn a_job_template_without_restart_policy_defaults_to_always_as_upstream() {
    let job = defaulted(
        "batch",
        "Job",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}),
    );
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Always");
}

#[test]
fn a_job_with_parallelism_alone_gets_no_completions() {
    let job = defaulted(
        "batch",
        "Job",
        json!({"spec": {"parallelism": 3, "template": {"spec": {"containers": []}}}}),
    );
    assert!(job["spec"]["completions"].is_null());
}

#[test]
fn a_cron_job_gets_history_limits_but_its_job_template_gets_no_job_defaults() {
    let cj = defaulted(
        "batch",
        "CronJob",
        json!({"spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "x"}]}}}}}}),
    );
    let spec = &cj["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    assert!(spec["jobTemplate"]["spec"]["backoffLimit"].is_null());
    assert_eq!(
        spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
}

#[test]
fn namespaces_secrets_and_volumes_get_their_defaults() {
    let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team-a"}}));
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    let secret = defaulted("", "Secret", json!({"metadata": {"name": "s"}}));
    assert_eq!(secret["type"], "Opaque");
    let pv = defaulted(
        "",
        "PersistentVolume",
        json!({"spec": {"hostPath": {"path": "/d"}}}),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["spec"]["hostPath"]["type"], "");
    let pvc = defaulted("", "PersistentVolumeClaim", json!({"spec": {}}));
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
}

#[test]
fn endpoint_slice_ports_get_tcp_and_an_empty_name() {
    let es = defaulted(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"addressType": "IPv4", "ports": [{"port": 80}]}),
    );
    assert_eq!(
        es["ports"][0],
        json!({"port": 80, "protocol": "TCP", "name": ""})
    );
}

#[test]
fn kinds_without_defaults_are_left_alone() {
    let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}});
    assert_eq!(
        defaulted("coordination.k8s.io", "Lease", lease.clone()),
        lease
    );
    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "b"}});
    assert_eq!(defaulted("", "ConfigMap", cm.clone()), cm);
}

#[test]
fn the_initial_pod_status_is_pending_with_its_qos_class() {
    let guaranteed =
        json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
    assert_eq!(
        pod_initial_status(&guaranteed),
        json!({"phase": "Pending", "qosClass": "Guaranteed"})
    );
    let burstable = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
    assert_eq!(pod_initial_status(&burstable)["qosClass"], "Burstable");
    let best = json!({"spec": {"containers": [{"name": "a"}]}});
    assert_eq!(pod_initial_status(&best)["qosClass"], "BestEffort");
}

fn samples() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "",
            "Pod",
            json!({"spec": {"hostNetwork": true, "containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 1}], "resources": {"limits": {"cpu": "1"}}}], "volumes": [{"name": "v"}]}}),
        ),
        ("apps", "Deployment", deployment()),
        ("apps", "DaemonSet", deployment()),
        ("apps", "StatefulSet", deployment()),
        ("apps", "ReplicaSet", deployment()),
        (
            "",
            "Service",
            json!({"spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
        ),
        ("", "Service", json!({"spec": {"clusterIP": "None"}})),
        (
            "batch",
            "Job",
            json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}}),
        ),
        (
            "batch",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}}),
        ),
        ("", "Namespace", json!({"metadata": {"name": "n"}})),
        ("", "PersistentVolume", json!({"spec": {}})),
        ("", "Secret", json!({})),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"ports": [{"port": 1}]}),
        ),
    ]
}

#[test]
fn defaulting_twice_gives_what_defaulting_once_gives() {
    for (g, k, obj) in samples() {
        let once = defaulted(g, k, obj);
        let twice = defaulted(g, k, once.clone());
        assert_eq!(once, twice, "{k}");
    }
}

fn arb_container() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["nginx", "nginx:1.2", "r:5000/a@sha256:0", "x:latest"]),
        prop::option::of(prop::sample::select(vec!["Always", "Never"])),
        prop::collection::vec(1u16..1000, 0..3),
        any::<bool>(),
    )
        .prop_map(|(image, policy, ports, probe)| {
            let mut c = json!({"name": "c", "image": image,
                "ports": ports.iter().map(|p| json!({"containerPort": p})).collect::<Vec<_>>()});
            if let Some(p) = policy {
                c["imagePullPolicy"] = p.into();
            }
            if probe {
                c["readinessProbe"] = json!({"tcpSocket": {"port": 1}});
            }
            c
        })
}

proptest! {
    #[test]
    fn defaulting_pods_and_templates_is_idempotent(
        containers in prop::collection::vec(arb_container(), 1..3),
        restart in prop::option::of(prop::sample::select(vec!["Always", "OnFailure", "Never"])),
        host_network in any::<bool>(),
        kind in prop::sample::select(vec!["Pod", "Deployment", "Job", "CronJob", "StatefulSet"]),
    ) {
        let mut spec = json!({"containers": containers, "hostNetwork": host_network});
        if let Some(r) = restart {
            spec["restartPolicy"] = r.into();
        }
        let template = json!({"metadata": {"labels": {"a": "b"}}, "spec": spec.clone()});
        let (group, obj) = match kind {
            "Pod" => ("", json!({"metadata": {"name": "p"}, "spec": spec})),
            "Job" => ("batch", json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"template": template}})),
            "CronJob" => ("batch", json!({"spec": {"jobTemplate": {"spec": {"template": template}}}})),
            _ => ("apps", json!({"spec": {"template": template}})),
        };
        let once = defaulted(group, kind, obj);
        let twice = defaulted(group, kind, once.clone());
        prop_assert_eq!(once, twice);
    }
}
