use serde_json::{Value, json};

use super::merge_keys::{ListMerge, Ty, strategy};
use super::*;

fn pod(doc: Value, patch: Value) -> Value {
    strategic_merge_patch("", "Pod", &doc, &patch).unwrap()
}

fn deployment(doc: Value, patch: Value) -> Value {
    strategic_merge_patch("apps", "Deployment", &doc, &patch).unwrap()
}

fn has_directive(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_directive(v)),
        Value::Array(l) => l.iter().any(has_directive),
        _ => false,
    }
}

fn base_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.0",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                },
                {"name": "sidecar", "image": "busybox", "args": ["sleep", "1"]}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}]
        }
    })
}

// ---- schema navigation and the table ----

#[test]
fn the_schema_leads_from_a_deployment_to_its_containers() {
    let root = Ty::of_kind("apps", "Deployment");
    assert_eq!(root.def(), Some("io.k8s.api.apps.v1.Deployment"));
    let (spec, _) = root.field("spec");
    let (template, _) = spec.field("template");
    let (pod_spec, _) = template.field("spec");
    assert_eq!(pod_spec.def(), Some("io.k8s.api.core.v1.PodSpec"));
    let (containers, s) = pod_spec.field("containers");
    assert_eq!(s.list, ListMerge::ByKey("name"));
    assert_eq!(
        containers.items().def(),
        Some("io.k8s.api.core.v1.Container")
    );
    let (meta, _) = root.field("metadata");
    assert_eq!(
        meta.def(),
        Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    );
}

#[test]
fn every_table_entry_names_a_list_or_map_field_that_exists() {
    let defs = definitions();
    for (def, field, expect_list) in [
        ("io.k8s.api.core.v1.PodSpec", "volumes", true),
        ("io.k8s.api.core.v1.Container", "volumeMounts", true),
        ("io.k8s.api.core.v1.EphemeralContainer", "env", true),
        ("io.k8s.api.core.v1.NodeStatus", "addresses", true),
        ("io.k8s.api.core.v1.ServiceSpec", "ports", true),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
            true,
        ),
        ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", false),
    ] {
        let props = &defs[def]["properties"];
        assert!(props.get(field).is_some(), "{def}.{field}");
        assert_eq!(
            props[field].get("type") == Some(&json!("array")),
            expect_list
        );
    }
    assert_eq!(
        strategy("io.k8s.api.core.v1.PodSpec", "volumes").list,
        ListMerge::ByKey("name")
    );
    assert!(strategy("io.k8s.api.core.v1.PodSpec", "volumes").retain_keys);
    assert_eq!(
        strategy("io.k8s.api.core.v1.PodSpec", "tolerations").list,
        ListMerge::Atomic
    );
    assert!(definitions().contains_key("io.k8s.api.autoscaling.v1.Scale"));
}

// ---- maps ----

#[test]
fn maps_merge_recursively_and_null_deletes_a_key() {
    let out = pod(
        base_pod(),
        json!({"metadata": {"labels": {"tier": null, "new": "x"}, "annotations": {"a": "b"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "x"}));
    assert_eq!(out["metadata"]["annotations"], json!({"a": "b"}));
    assert_eq!(out["spec"], base_pod()["spec"]);
}

#[test]
fn null_for_a_missing_key_changes_nothing() {
    let out = pod(base_pod(), json!({"metadata": {"annotations": null}}));
    assert_eq!(out, base_pod());
}

#[test]
fn patch_replace_in_a_map_replaces_the_whole_map() {
    let out = pod(
        base_pod(),
        json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
    assert_eq!(out["metadata"]["name"], "p");
}

#[test]
fn patch_delete_in_a_map_removes_the_map() {
    let out = pod(
        base_pod(),
        json!({"metadata": {"labels": {"$patch": "delete"}}}),
    );
    assert!(out["metadata"].get("labels").is_none());
    assert_eq!(out["metadata"]["name"], "p");
}

#[test]
fn patch_merge_in_a_map_is_an_ordinary_merge() {
    let out = pod(
        base_pod(),
        json!({"metadata": {"labels": {"$patch": "merge", "x": "y"}}}),
    );
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "tier": "front", "x": "y"})
    );
}

#[test]
fn a_map_added_where_there_was_none_has_its_directives_applied() {
    let out = pod(
        json!({"metadata": {"name": "p"}}),
        json!({"metadata": {"labels": {"$patch": "replace", "a": "b", "gone": null}}}),
    );
    assert_eq!(out["metadata"], json!({"name": "p", "labels": {"a": "b"}}));
}

#[test]
fn key_order_of_the_original_is_kept_and_new_keys_come_last() {
    let out = pod(
        json!({"metadata": {"name": "p", "labels": {"z": "1", "a": "2"}}}),
        json!({"metadata": {"labels": {"z": "3", "m": "4"}}}),
    );
    let keys: Vec<_> = out["metadata"]["labels"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

// ---- lists merged by key ----

#[test]
fn containers_merge_by_name_and_keep_unmentioned_ones() {
    let out = pod(
        base_pod(),
        json!({"spec": {"containers": [{"name": "app", "image": "nginx:2.0"}]}}),
    );
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["image"], "nginx:2.0");
    assert_eq!(
        containers[0]["ports"],
        base_pod()["spec"]["containers"][0]["ports"]
    );
    assert_eq!(containers[1]["name"], "sidecar");
}

#[test]
fn a_container_with_a_new_name_is_appended() {
    let out = pod(
        base_pod(),
        json!({"spec": {"containers": [{"name": "extra", "image": "x"}]}}),
    );
    let names: Vec<_> = out["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, [json!("app"), json!("sidecar"), json!("extra")]);
}

#[test]
fn env_merges_by_name_inside_a_container() {
    let out = pod(
        base_pod(),
        json!({"spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]}]}}),
    );
    assert_eq!(
        out["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
    );
}

#[test]
fn container_ports_merge_by_container_port() {
    let out = pod(
        base_pod(),
        json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}}),
    );
    assert_eq!(
        out["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
    );
}

#[test]
fn volume_mounts_merge_by_mount_path() {
    let out = pod(
        base_pod(),
        json!({"spec": {"containers": [{"name": "app", "volumeMounts": [{"mountPath": "/data", "readOnly": true}, {"name": "tmp", "mountPath": "/tmp"}]}]}}),
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data", "readOnly": true}, {"name": "tmp", "mountPath": "/tmp"}])
    );
}

#[test]
fn patch_delete_in_a_list_element_removes_the_element_with_that_key() {
    let out = pod(
        base_pod(),
        json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}, {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}}),
    );
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["env"], json!([{"name": "B", "value": "2"}]));
}

#[test]
fn patch_replace_in_a_list_element_replaces_the_whole_list() {
    let out = pod(
        base_pod(),
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "only", "image": "x"}])
    );
}

#[test]
fn an_element_lacking_its_merge_key_is_an_error() {
    let err = strategic_merge_patch(
        "",
        "Pod",
        &base_pod(),
        &json!({"spec": {"containers": [{"image": "x"}]}}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("merge key name"), "{err}");
    let err = strategic_merge_patch(
        "",
        "Pod",
        &base_pod(),
        &json!({"spec": {"containers": ["app"]}}),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Invalid(_)));
}

#[test]
fn volumes_merge_by_name_and_retain_keys_clears_the_old_source() {
    let out = pod(
        base_pod(),
        json!({"spec": {"volumes": [
            {"name": "data", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}},
            {"name": "more", "secret": {"secretName": "s"}}
        ]}}),
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "cm"}}, {"name": "more", "secret": {"secretName": "s"}}])
    );
}

#[test]
fn lists_without_a_strategy_are_replaced() {
    let out = pod(
        base_pod(),
        json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}], "containers": [{"name": "sidecar", "args": ["run"]}]}}),
    );
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "b", "operator": "Exists"}])
    );
    assert_eq!(out["spec"]["containers"][1]["args"], json!(["run"]));
}

#[test]
fn image_pull_secrets_and_host_aliases_merge_on_their_keys() {
    let doc = json!({"spec": {"containers": [], "imagePullSecrets": [{"name": "a"}], "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["a"]}]}});
    let out = pod(
        doc,
        json!({"spec": {"imagePullSecrets": [{"name": "b"}], "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["b"]}]}}),
    );
    assert_eq!(
        out["spec"]["imagePullSecrets"],
        json!([{"name": "a"}, {"name": "b"}])
    );
    assert_eq!(
        out["spec"]["hostAliases"],
        json!([{"ip": "1.1.1.1", "hostnames": ["b"]}])
    );
}

// ---- ObjectMeta ----

#[test]
fn finalizers_are_unioned_and_delete_from_primitive_list_removes_them() {
    let doc = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
    let out = pod(doc.clone(), json!({"metadata": {"finalizers": ["b", "c"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
    let out = pod(
        doc,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["d"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "d"]));
}

#[test]
fn owner_references_merge_by_uid() {
    let doc = json!({"metadata": {"name": "p", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1"}
    ]}});
    let out = pod(
        doc,
        json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "controller": true},
            {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u2"}
        ]}}),
    );
    let refs = out["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0]["controller"], true);
    assert_eq!(refs[0]["name"], "rs");
    assert_eq!(refs[1]["uid"], "u2");
}

#[test]
fn unknown_kinds_merge_maps_replace_lists_and_still_know_their_metadata() {
    let doc = json!({"metadata": {"name": "w", "finalizers": ["a"]}, "spec": {"items": [1, 2], "m": {"a": 1}}});
    let out = strategic_merge_patch(
        "example.com",
        "Widget",
        &doc,
        &json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [3], "m": {"b": 2}}}),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"metadata": {"name": "w", "finalizers": ["a", "b"]}, "spec": {"items": [3], "m": {"a": 1, "b": 2}}})
    );
}

// ---- deployments as kubectl sends them ----

fn base_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}], "terminationMessagePolicy": "File"},
                        {"name": "log", "image": "fluentbit:1"}
                    ],
                    "restartPolicy": "Always"
                }
            }
        },
        "status": {"replicas": 1, "conditions": [
            {"type": "Available", "status": "True"},
            {"type": "Progressing", "status": "True"}
        ]}
    })
}

#[test]
fn kubectl_apply_with_set_element_order_changes_an_image_and_keeps_defaults() {
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
            "containers": [{"name": "web", "image": "nginx:1.26"}]
        }}}
    });
    let out = deployment(base_deployment(), patch);
    let c = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(c[0]["image"], "nginx:1.26");
    assert_eq!(c[0]["terminationMessagePolicy"], "File");
    assert_eq!(
        c[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(c[1]["name"], "log");
    assert_eq!(
        out["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert!(!has_directive(&out));
}

#[test]
fn kubectl_apply_removing_a_container_and_an_env_var_deletes_them() {
    let mut doc = base_deployment();
    doc["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}],
        "containers": [
            {"name": "web", "$setElementOrder/env": [{"name": "A"}], "env": [{"name": "B", "$patch": "delete"}]},
            {"name": "log", "$patch": "delete"}
        ]
    }}}});
    let out = deployment(doc, patch);
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1);
    assert_eq!(containers[0]["env"], json!([{"name": "A", "value": "1"}]));
    assert_eq!(containers[0]["image"], "nginx:1.25");
    assert!(!has_directive(&out));
}

#[test]
fn pod_status_conditions_and_pod_ips_merge_on_their_keys() {
    let doc = json!({"status": {
        "conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
        "podIPs": [{"ip": "10.0.0.1"}]
    }});
    let out = pod(
        doc,
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}], "podIPs": [{"ip": "fd00::1"}]}}),
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
    );
    assert_eq!(
        out["status"]["podIPs"],
        json!([{"ip": "10.0.0.1"}, {"ip": "fd00::1"}])
    );
}

#[test]
fn ephemeral_containers_are_added_by_name_as_kubectl_debug_does() {
    let out = pod(
        base_pod(),
        json!({"spec": {"ephemeralContainers": [{"name": "debugger", "image": "busybox", "env": [{"name": "X", "value": "1"}]}]}}),
    );
    assert_eq!(out["spec"]["ephemeralContainers"][0]["name"], "debugger");
    let out = pod(
        out,
        json!({"spec": {"ephemeralContainers": [{"name": "debugger", "env": [{"name": "Y", "value": "2"}]}]}}),
    );
    assert_eq!(
        out["spec"]["ephemeralContainers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn set_element_order_puts_a_new_container_first() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "init"}, {"name": "web"}, {"name": "log"}],
        "containers": [{"name": "init", "image": "busybox"}]
    }}}});
    let out = deployment(base_deployment(), patch);
    let names: Vec<_> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["init", "web", "log"]);
}

#[test]
fn set_element_order_keeps_unmentioned_elements_after_their_predecessor() {
    let doc = json!({"metadata": {"name": "p", "finalizers": ["x", "a", "server", "b"]}});
    let out = pod(
        doc,
        json!({"metadata": {"$setElementOrder/finalizers": ["b", "a", "ghost"]}}),
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["x", "b", "a", "server"])
    );
}

#[test]
fn set_element_order_alone_reorders_without_a_list_in_the_patch() {
    let out = pod(
        base_pod(),
        json!({"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}),
    );
    assert_eq!(out["spec"]["containers"][0]["name"], "sidecar");
    assert_eq!(out["spec"]["containers"][1]["name"], "app");
}

#[test]
fn retain_keys_switches_a_deployment_from_rolling_update_to_recreate() {
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let out = deployment(base_deployment(), patch);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    // kubectl apply also sends the null for the dropped member.
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"}}});
    let out = deployment(base_deployment(), patch);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn without_retain_keys_a_strategy_patch_merges() {
    let patch = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}});
    let out = deployment(base_deployment(), patch);
    assert_eq!(
        out["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}})
    );
}

#[test]
fn deployment_conditions_merge_by_type() {
    let out = deployment(
        base_deployment(),
        json!({"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "Stuck"}]}}),
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "False", "reason": "Stuck"}])
    );
}

#[test]
fn kubectl_scale_and_label_patches_work() {
    let out = deployment(base_deployment(), json!({"spec": {"replicas": 3}}));
    assert_eq!(out["spec"]["replicas"], 3);
    let out = deployment(
        base_deployment(),
        json!({"metadata": {"labels": {"env": "prod"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"env": "prod"}));
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
    let out = strategic_merge_patch(
        "autoscaling",
        "Scale",
        &scale,
        &json!({"spec": {"replicas": 5}}),
    )
    .unwrap();
    assert_eq!(out["spec"]["replicas"], 5);
    assert_eq!(out["status"]["replicas"], 1);
}

#[test]
fn other_kinds_use_their_own_merge_keys() {
    let svc =
        json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"a": "b"}}});
    let out = strategic_merge_patch(
        "",
        "Service",
        &svc,
        &json!({"spec": {"ports": [{"port": 443}, {"port": 80, "name": "http"}]}}),
    )
    .unwrap();
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443}])
    );
    let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}], "conditions": [{"type": "Ready", "status": "False"}]}});
    let out = strategic_merge_patch(
        "",
        "Node",
        &node,
        &json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}], "conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .unwrap();
    assert_eq!(out["status"]["addresses"].as_array().unwrap().len(), 2);
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}])
    );
    // A CronJob reaches PodSpec through its job template.
    let cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}}}}});
    let out = strategic_merge_patch(
        "batch",
        "CronJob",
        &cj,
        &json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "z"}]}}}}}}),
    )
    .unwrap();
    assert_eq!(
        out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "x"}, {"name": "b", "image": "z"}])
    );
}

#[test]
fn pdb_selector_is_replaced_not_merged() {
    let pdb = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}}});
    let out = strategic_merge_patch(
        "policy",
        "PodDisruptionBudget",
        &pdb,
        &json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}),
    )
    .unwrap();
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"b": "2"}}));
}

#[test]
fn patch_replace_at_the_top_replaces_the_object() {
    let out = pod(
        base_pod(),
        json!({"$patch": "replace", "metadata": {"name": "q"}}),
    );
    assert_eq!(out, json!({"metadata": {"name": "q"}}));
}

// ---- malformed directives ----

#[test]
fn malformed_directives_are_errors() {
    for patch in [
        json!({"metadata": {"$patch": "explode"}}),
        json!({"metadata": {"$patch": 3}}),
        json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
        json!({"spec": {"strategy": {"$retainKeys": [1]}}}),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
        json!({"metadata": {"$deleteFromPrimitiveList/": ["a"]}}),
        json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
        json!({"metadata": {"finalizers": [{"$patch": "delete"}]}}),
        json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "image": "x"}]}}}}),
        json!({"$patch": "delete"}),
    ] {
        let err = strategic_merge_patch("apps", "Deployment", &base_deployment(), &patch);
        assert!(
            matches!(err, Err(PatchError::Invalid(_))),
            "{patch}: {err:?}"
        );
    }
}

#[test]
fn patches_that_are_not_objects_are_errors() {
    for patch in [json!([]), json!("x"), json!(null), json!(1)] {
        assert!(matches!(
            strategic_merge_patch("", "Pod", &base_pod(), &patch),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            merge_patch(&base_pod(), &patch),
            Err(PatchError::Invalid(_))
        ));
    }
    assert!(matches!(
        json_patch(&base_pod(), &json!({"op": "add"})),
        Err(PatchError::Invalid(_))
    ));
    assert!(matches!(
        json_patch(&base_pod(), &json!([{"op": "frobnicate", "path": "/a"}])),
        Err(PatchError::Invalid(_))
    ));
}

// ---- JSON patch and merge patch ----

#[test]
fn json_patch_applies_operations_in_order() {
    let out = json_patch(
        &json!({"a": 1, "l": [1, 2]}),
        &json!([
            {"op": "test", "path": "/a", "value": 1},
            {"op": "replace", "path": "/a", "value": 2},
            {"op": "add", "path": "/l/-", "value": 3},
            {"op": "remove", "path": "/l/0"},
            {"op": "copy", "from": "/a", "path": "/b"}
        ]),
    )
    .unwrap();
    assert_eq!(out, json!({"a": 2, "l": [2, 3], "b": 2}));
}

#[test]
fn a_failed_json_patch_test_says_what_failed() {
    let err = json_patch(
        &json!({"metadata": {"resourceVersion": "5"}}),
        &json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]),
    )
    .unwrap_err();
    assert!(matches!(err, PatchError::Failed(_)));
    let msg = err.to_string();
    assert!(msg.contains("test operation 0 failed"), "{msg}");
    assert!(msg.contains("/metadata/resourceVersion"), "{msg}");
    assert!(msg.contains("\"5\"") && msg.contains("\"4\""), "{msg}");
}

#[test]
fn a_failed_test_reports_the_value_left_by_earlier_operations() {
    let err = json_patch(
        &json!({"a": 1}),
        &json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "test", "path": "/a", "value": 1}]),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("test operation 1 failed: the value at \"/a\" is 2, not 1"),
        "{err}"
    );
}

#[test]
fn a_json_patch_on_a_missing_path_fails() {
    let err = json_patch(&json!({}), &json!([{"op": "remove", "path": "/nope"}])).unwrap_err();
    assert!(matches!(err, PatchError::Failed(_)));
    assert!(err.to_string().contains("remove"), "{err}");
}

#[test]
fn merge_patch_merges_maps_replaces_lists_and_deletes_nulls() {
    let out = merge_patch(
        &json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "d": 1}),
        &json!({"a": {"b": null, "e": 3}, "l": [3], "d": null}),
    )
    .unwrap();
    assert_eq!(out, json!({"a": {"c": 2, "e": 3}, "l": [3]}));
}

// ---- never panic ----

mod never_panic {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::super::*;
    use super::has_directive;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..300).prop_map(|n| json!(n)),
            prop::sample::select(vec![
                "name", "app", "replace", "delete", "merge", "type", "x", "80"
            ])
            .prop_map(|s| json!(s)),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "metadata",
            "spec",
            "status",
            "template",
            "containers",
            "initContainers",
            "volumes",
            "env",
            "ports",
            "name",
            "image",
            "containerPort",
            "finalizers",
            "ownerReferences",
            "uid",
            "labels",
            "strategy",
            "rollingUpdate",
            "type",
            "conditions",
            "$patch",
            "$retainKeys",
            "$setElementOrder/containers",
            "$setElementOrder/finalizers",
            "$deleteFromPrimitiveList/finalizers",
            "$deleteFromPrimitiveList/",
            "op",
            "path",
            "value",
            "from",
        ])
        .prop_map(str::to_owned)
    }

    fn json_value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(5, 48, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// Objects without nulls, directives or lists of maps: patching one with itself is a no-op.
    fn plain_object() -> impl Strategy<Value = Value> {
        let plain_leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            (-3i64..300).prop_map(|n| json!(n)),
            prop::sample::select(vec!["a", "b", "c"]).prop_map(|s| json!(s)),
        ];
        let plain_key =
            prop::sample::select(vec!["metadata", "spec", "name", "items", "labels", "x"])
                .prop_map(str::to_owned);
        let list = prop::collection::vec(plain_leaf.clone(), 0..4).prop_map(Value::Array);
        let leaf = prop_oneof![plain_leaf, list];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop::collection::vec((plain_key.clone(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
        })
        .prop_map(|v| if v.is_object() { v } else { json!({"v": v}) })
    }

    const KINDS: &[(&str, &str)] = &[
        ("", "Pod"),
        ("apps", "Deployment"),
        ("batch", "CronJob"),
        ("", "Node"),
        ("autoscaling", "Scale"),
        ("example.com", "Widget"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn no_patch_function_panics(doc in json_value(), patch in json_value(), k in 0..KINDS.len()) {
            let _ = json_patch(&doc, &patch);
            let _ = merge_patch(&doc, &patch);
            let (group, kind) = KINDS[k];
            if let Ok(out) = strategic_merge_patch(group, kind, &doc, &patch) {
                prop_assert!(!has_directive(&out) || has_directive(&doc), "{out}");
            }
        }

        #[test]
        fn a_strategic_patch_of_an_object_with_itself_changes_nothing(doc in plain_object()) {
            let out = strategic_merge_patch("example.com", "Widget", &doc, &doc).unwrap();
            prop_assert_eq!(out, doc);
        }
    }
}
