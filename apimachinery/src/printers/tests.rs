use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::*;

fn now() -> Timestamp {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

fn ago(secs: i64) -> String {
    (now() - SignedDuration::from_secs(secs)).to_string()
}

fn cells(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    row(group, kind, obj, now())
}

fn cell(group: &str, kind: &str, obj: &Value, column: &str) -> Value {
    let i = columns(group, kind)
        .iter()
        .position(|c| c.name == column)
        .unwrap_or_else(|| panic!("{kind} has no column {column}"));
    cells(group, kind, obj)[i].clone()
}

fn names(group: &str, kind: &str, priority: i32) -> Vec<&'static str> {
    columns(group, kind)
        .into_iter()
        .filter(|c| c.priority == priority)
        .map(|c| c.name)
        .collect()
}

fn pod(status: Value) -> Value {
    json!({
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(300)},
        "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node-a"},
        "status": status,
    })
}

fn pod_status(p: &Value) -> String {
    cell("", "Pod", p, "Status").as_str().unwrap().to_string()
}

// --- human durations ---------------------------------------------------------------------

#[test]
fn human_duration_matches_upstream_at_every_boundary() {
    let h = |s: i64| human_duration(SignedDuration::from_secs(s));
    assert_eq!(h(-2), "<invalid>");
    assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
    assert_eq!(h(0), "0s");
    assert_eq!(h(5), "5s");
    assert_eq!(h(119), "119s");
    assert_eq!(h(120), "2m");
    assert_eq!(h(182), "3m2s");
    assert_eq!(h(599), "9m59s");
    assert_eq!(h(600), "10m");
    assert_eq!(h(179 * 60 + 59), "179m");
    assert_eq!(h(3 * 3600), "3h");
    assert_eq!(h(3 * 3600 + 4 * 60), "3h4m");
    assert_eq!(h(8 * 3600 - 1), "7h59m");
    assert_eq!(h(8 * 3600), "8h");
    assert_eq!(h(47 * 3600 + 3599), "47h");
    assert_eq!(h(48 * 3600), "2d");
    assert_eq!(h(51 * 3600), "2d3h");
    assert_eq!(h(8 * 86400 - 1), "7d23h");
    assert_eq!(h(8 * 86400), "8d");
    assert_eq!(h(45 * 86400), "45d");
    assert_eq!(h(730 * 86400 - 1), "729d");
    assert_eq!(h(730 * 86400), "2y");
    assert_eq!(h((3 * 365 + 20) * 86400), "3y20d");
    assert_eq!(h(8 * 365 * 86400), "8y");
    assert_eq!(h((9 * 365 + 100) * 86400), "9y");
}

#[test]
fn age_is_unknown_without_a_creation_timestamp() {
    let cm = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
    assert_eq!(
        cells("", "ConfigMap", &cm),
        vec![json!("x"), json!(1), json!("<unknown>")]
    );
}

// --- pods --------------------------------------------------------------------------------

#[test]
fn pod_columns_are_name_ready_status_restarts_age_then_wide_ones() {
    assert_eq!(
        names("", "Pod", 0),
        ["Name", "Ready", "Status", "Restarts", "Age"]
    );
    assert_eq!(
        names("", "Pod", 1),
        ["IP", "Node", "Nominated Node", "Readiness Gates"]
    );
    let first = &columns("", "Pod")[0];
    assert_eq!((first.name, first.format), ("Name", "name"));
}

#[test]
fn a_running_pod_shows_running_ready_and_its_wide_cells() {
    let p = pod(json!({
        "phase": "Running",
        "podIPs": [{"ip": "10.1.0.7"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": ago(200)}}}],
    }));
    assert_eq!(
        cells("", "Pod", &p),
        vec![
            json!("web-1"),
            json!("1/1"),
            json!("Running"),
            json!("0"),
            json!("5m"),
            json!("10.1.0.7"),
            json!("node-a"),
            json!("<none>"),
            json!("<none>"),
        ]
    );
}

#[test]
fn a_pending_pod_without_statuses_shows_pending_and_none_for_missing_wide_cells() {
    let mut p = pod(json!({"phase": "Pending"}));
    p["spec"].as_object_mut().unwrap().remove("nodeName");
    let c = cells("", "Pod", &p);
    assert_eq!(c[1], json!("0/1"));
    assert_eq!(c[2], json!("Pending"));
    assert_eq!(c[5], json!("<none>"));
    assert_eq!(c[6], json!("<none>"));
}

#[test]
fn a_pod_waiting_for_an_image_shows_the_waiting_reason() {
    let p = pod(json!({
        "phase": "Pending",
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}],
    }));
    assert_eq!(pod_status(&p), "ContainerCreating");
}

#[test]
fn a_crash_looping_pod_shows_crashloopbackoff_and_restarts_with_how_long_ago() {
    let p = pod(json!({
        "phase": "Running",
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(65)}}}],
    }));
    assert_eq!(pod_status(&p), "CrashLoopBackOff");
    assert_eq!(cell("", "Pod", &p, "Restarts"), json!("5 (65s ago)"));
    assert_eq!(cell("", "Pod", &p, "Ready"), json!("0/1"));
}

#[test]
fn restarts_without_a_finish_time_have_no_ago_suffix() {
    let p = pod(json!({
        "phase": "Running",
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 2,
            "state": {"running": {}}}],
    }));
    assert_eq!(cell("", "Pod", &p, "Restarts"), json!("2"));
}

#[test]
fn restarts_ago_uses_the_latest_finish_across_containers() {
    let mut p = pod(json!({
        "phase": "Running",
        "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 1, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(7200)}}},
            {"name": "b", "ready": true, "restartCount": 2, "state": {"running": {}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(600)}}},
        ],
    }));
    p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
    assert_eq!(cell("", "Pod", &p, "Restarts"), json!("3 (10m ago)"));
    assert_eq!(cell("", "Pod", &p, "Ready"), json!("2/2"));
}

#[test]
fn a_pod_running_its_init_containers_shows_init_progress() {
    let mut p = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [
            {"name": "one", "ready": true, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "two", "ready": false, "restartCount": 0,
             "state": {"running": {}}},
        ],
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "PodInitializing"}}}],
    }));
    p["spec"]["initContainers"] = json!([{"name": "one"}, {"name": "two"}, {"name": "three"}]);
    assert_eq!(pod_status(&p), "Init:1/3");
}

#[test]
fn a_crash_looping_init_container_shows_init_crashloopbackoff() {
    let mut p = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "setup", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    }));
    p["spec"]["initContainers"] = json!([{"name": "setup"}]);
    assert_eq!(pod_status(&p), "Init:CrashLoopBackOff");
    assert_eq!(cell("", "Pod", &p, "Restarts"), json!("3"));
}

#[test]
fn a_failed_init_container_without_reason_shows_its_exit_code() {
    let mut p = pod(json!({
        "phase": "Pending",
        "initContainerStatuses": [{"name": "setup", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 2}}}],
    }));
    p["spec"]["initContainers"] = json!([{"name": "setup"}]);
    assert_eq!(pod_status(&p), "Init:ExitCode:2");
}

#[test]
fn a_running_sidecar_counts_towards_ready_and_total() {
    let mut p = pod(json!({
        "phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true,
            "restartCount": 1, "state": {"running": {}}}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
            "state": {"running": {}}}],
    }));
    p["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
    assert_eq!(cell("", "Pod", &p, "Ready"), json!("2/2"));
    assert_eq!(pod_status(&p), "Running");
    assert_eq!(cell("", "Pod", &p, "Restarts"), json!("1"));
}

#[test]
fn a_pod_being_deleted_shows_terminating() {
    let mut p = pod(json!({
        "phase": "Running",
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
            "state": {"running": {}}}],
    }));
    p["metadata"]["deletionTimestamp"] = json!(ago(3));
    assert_eq!(pod_status(&p), "Terminating");
}

#[test]
fn a_finished_pod_being_deleted_keeps_its_final_status() {
    let mut p = pod(json!({
        "phase": "Succeeded",
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
    }));
    p["metadata"]["deletionTimestamp"] = json!(ago(3));
    assert_eq!(pod_status(&p), "Completed");
}

#[test]
fn a_pod_on_a_lost_node_being_deleted_shows_unknown() {
    let mut p = pod(json!({"phase": "Running", "reason": "NodeLost"}));
    p["metadata"]["deletionTimestamp"] = json!(ago(3));
    assert_eq!(pod_status(&p), "Unknown");
}

#[test]
fn a_succeeded_pod_shows_completed_and_a_completed_row_condition() {
    let p = pod(json!({
        "phase": "Succeeded",
        "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
    }));
    assert_eq!(pod_status(&p), "Completed");
    assert_eq!(cell("", "Pod", &p, "Ready"), json!("0/1"));
    let t = table("", "Pod", &[p], now(), IncludeObject::None, "", "");
    assert_eq!(t["rows"][0]["conditions"][0]["type"], json!("Completed"));
}

#[test]
fn a_completed_container_next_to_a_running_one_reads_running_or_not_ready() {
    let mut p = pod(json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}},
        ],
    }));
    p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
    assert_eq!(pod_status(&p), "NotReady");
    p["status"]["conditions"][0]["status"] = json!("True");
    assert_eq!(pod_status(&p), "Running");
}

#[test]
fn a_scheduling_gated_pod_shows_scheduling_gated() {
    let p = pod(json!({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
    }));
    assert_eq!(pod_status(&p), "SchedulingGated");
}

#[test]
fn readiness_gates_count_the_true_conditions() {
    let mut p = pod(json!({
        "phase": "Running",
        "conditions": [{"type": "example.com/lb", "status": "True"}],
    }));
    p["spec"]["readinessGates"] = json!([
        {"conditionType": "example.com/lb"},
        {"conditionType": "example.com/dns"},
    ]);
    assert_eq!(cell("", "Pod", &p, "Readiness Gates"), json!("1/2"));
}

// --- services and endpoints --------------------------------------------------------------

#[test]
fn service_ports_show_node_ports_and_protocols() {
    let svc = json!({
        "metadata": {"name": "web", "creationTimestamp": ago(90)},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "selector": {"tier": "front", "app": "web"},
            "ports": [
                {"port": 80, "nodePort": 30080, "protocol": "TCP"},
                {"port": 443, "protocol": "TCP"},
                {"port": 53, "protocol": "UDP"},
            ]},
    });
    assert_eq!(
        cells("", "Service", &svc),
        vec![
            json!("web"),
            json!("NodePort"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80:30080/TCP,443/TCP,53/UDP"),
            json!("90s"),
            json!("app=web,tier=front"),
        ]
    );
}

#[test]
fn a_service_without_ports_or_selector_shows_none() {
    let svc = json!({"metadata": {"name": "h"},
        "spec": {"type": "ClusterIP", "clusterIPs": ["None"]}});
    let c = cells("", "Service", &svc);
    assert_eq!(c[2], json!("None"));
    assert_eq!(c[4], json!("<none>"));
    assert_eq!(c[6], json!("<none>"));
}

#[test]
fn a_load_balancer_is_pending_until_it_has_an_ingress() {
    let mut svc = json!({"metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"]}});
    assert_eq!(service_external_ip(&svc), "<pending>");
    svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "lb.example.com"}]}});
    assert_eq!(service_external_ip(&svc), "203.0.113.5,lb.example.com");
    svc["spec"]["externalIPs"] = json!(["198.51.100.1"]);
    assert_eq!(
        service_external_ip(&svc),
        "203.0.113.5,lb.example.com,198.51.100.1"
    );
}

#[test]
fn an_external_name_service_shows_its_external_name() {
    let svc = json!({"metadata": {"name": "x"},
        "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
    assert_eq!(service_external_ip(&svc), "db.example.com");
}

#[test]
fn endpoints_show_three_addresses_then_how_many_more() {
    let ep = json!({
        "metadata": {"name": "web"},
        "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}, {"ip": "10.0.0.5"}],
            "ports": [{"port": 80}],
        }, {
            "addresses": [{"ip": "10.0.1.1"}],
            "ports": [{"port": 80}],
        }],
    });
    assert_eq!(
        format_endpoints(&ep),
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more..."
    );
}

#[test]
fn endpoints_list_every_port_of_every_address_and_bracket_ipv6() {
    let ep = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(format_endpoints(&ep), "[fd00::1]:80,[fd00::1]:443");
    let headless = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]});
    assert_eq!(format_endpoints(&headless), "10.0.0.1");
    assert_eq!(
        format_endpoints(&json!({"metadata": {"name": "e"}})),
        "<none>"
    );
}

#[test]
fn endpoint_slices_show_ports_and_addresses_or_unset() {
    let slice = json!({
        "metadata": {"name": "web-abc"},
        "addressType": "IPv4",
        "ports": [{"port": 80, "name": "http"}, {"name": "metrics"}, {}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3", "10.0.0.4"]}],
    });
    let c = cells("discovery.k8s.io", "EndpointSlice", &slice);
    assert_eq!(c[1], json!("IPv4"));
    assert_eq!(c[2], json!("80,metrics,*"));
    assert_eq!(c[3], json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."));
    let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
    let c = cells("discovery.k8s.io", "EndpointSlice", &empty);
    assert_eq!(
        (c[2].clone(), c[3].clone()),
        (json!("<unset>"), json!("<unset>"))
    );
}

// --- nodes -------------------------------------------------------------------------------

#[test]
fn node_roles_come_from_role_labels_sorted_or_none() {
    let node = json!({
        "metadata": {"name": "n1", "creationTimestamp": ago(3 * 86400), "labels": {
            "node-role.kubernetes.io/worker": "",
            "node-role.kubernetes.io/control-plane": "",
            "kubernetes.io/role": "ingress",
            "kubernetes.io/hostname": "n1",
        }},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian", "kernelVersion": "6.1.0",
                "containerRuntimeVersion": "containerd://1.7.0"},
        },
    });
    assert_eq!(node_roles(&node), ["control-plane", "ingress", "worker"]);
    assert_eq!(
        cells("", "Node", &node),
        vec![
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,ingress,worker"),
            json!("3d"),
            json!("v1.33.1"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian"),
            json!("6.1.0"),
            json!("containerd://1.7.0"),
        ]
    );
    let bare = json!({"metadata": {"name": "n2"}});
    let c = cells("", "Node", &bare);
    assert_eq!(c[1], json!("Unknown"));
    assert_eq!(c[2], json!("<none>"));
    assert_eq!(c[7], json!("<unknown>"));
}

#[test]
fn a_node_with_a_false_ready_condition_is_not_ready() {
    let node = json!({"metadata": {"name": "n"},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    assert_eq!(cells("", "Node", &node)[1], json!("NotReady"));
}

// --- workloads ---------------------------------------------------------------------------

#[test]
fn a_deployment_shows_ready_of_desired_and_its_wide_cells() {
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": ago(3600 * 5 + 60 * 7)},
        "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "canary"]}]},
            "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    });
    assert_eq!(
        names("apps", "Deployment", 0),
        ["Name", "Ready", "Up-to-date", "Available", "Age"]
    );
    assert_eq!(
        cells("apps", "Deployment", &d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("5h7m"),
            json!("app,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web,env in (canary,prod)"),
        ]
    );
}

#[test]
fn a_stateful_set_shows_ready_of_desired() {
    let s = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 1}});
    assert_eq!(names("apps", "StatefulSet", 0), ["Name", "Ready", "Age"]);
    assert_eq!(cells("apps", "StatefulSet", &s)[1], json!("1/3"));
}

#[test]
fn jobs_show_status_completions_and_duration() {
    let mut job = json!({
        "metadata": {"name": "pi", "creationTimestamp": ago(600)},
        "spec": {"completions": 1, "parallelism": 1, "selector": {"matchLabels": {"job-name": "pi"}},
            "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"startTime": ago(590), "succeeded": 0},
    });
    assert_eq!(
        names("batch", "Job", 0),
        ["Name", "Status", "Completions", "Duration", "Age"]
    );
    assert_eq!(
        cells("batch", "Job", &job)[..5].to_vec(),
        vec![
            json!("pi"),
            json!("Running"),
            json!("0/1"),
            json!("9m50s"),
            json!("10m")
        ]
    );
    job["status"]["completionTime"] = json!(ago(560));
    job["status"]["succeeded"] = json!(1);
    job["status"]["conditions"] = json!([{"type": "Complete", "status": "True"}]);
    let c = cells("batch", "Job", &job);
    assert_eq!(
        (c[1].clone(), c[2].clone(), c[3].clone()),
        (json!("Complete"), json!("1/1"), json!("30s"))
    );
    assert_eq!(c[7], json!("job-name=pi"));
}

#[test]
fn a_job_without_completions_shows_parallelism() {
    let job =
        json!({"metadata": {"name": "q"}, "spec": {"parallelism": 4}, "status": {"succeeded": 2}});
    let c = cells("batch", "Job", &job);
    assert_eq!(c[2], json!("2/1 of 4"));
    assert_eq!(c[3], json!(""));
    let failed = json!({"metadata": {"name": "f"}, "status": {"conditions": [
        {"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}});
    assert_eq!(job_status(&failed), "Failed");
    let suspended = json!({"metadata": {"name": "s"}, "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
    assert_eq!(job_status(&suspended), "Suspended");
}

#[test]
fn a_cron_job_shows_schedule_timezone_suspend_active_and_last_schedule() {
    let cj = json!({
        "metadata": {"name": "hello", "creationTimestamp": ago(7200)},
        "spec": {"schedule": "*/5 * * * *", "suspend": false,
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": ago(100)},
    });
    assert_eq!(
        names("batch", "CronJob", 0),
        [
            "Name",
            "Schedule",
            "Timezone",
            "Suspend",
            "Active",
            "Last Schedule",
            "Age"
        ]
    );
    assert_eq!(
        cells("batch", "CronJob", &cj),
        vec![
            json!("hello"),
            json!("*/5 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("100s"),
            json!("120m"),
            json!("c"),
            json!("busybox"),
            json!("<none>"),
        ]
    );
}

// --- everything else ---------------------------------------------------------------------

#[test]
fn core_events_show_last_seen_type_reason_object_message() {
    let ev = json!({
        "metadata": {"name": "web-1.17f", "creationTimestamp": ago(400)},
        "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
        "reason": "Pulled", "type": "Normal", "message": "  Pulled image  \n",
        "source": {"component": "kubelet", "host": "node-a"},
        "firstTimestamp": ago(400), "lastTimestamp": ago(30), "count": 4,
    });
    assert_eq!(
        names("", "Event", 0),
        ["Last Seen", "Type", "Reason", "Object", "Message"]
    );
    assert_eq!(
        names("", "Event", 1),
        ["Subobject", "Source", "First Seen", "Count", "Name"]
    );
    assert_eq!(
        cells("", "Event", &ev),
        vec![
            json!("30s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web-1"),
            json!("spec.containers{app}"),
            json!("kubelet, node-a"),
            json!("Pulled image"),
            json!("6m40s"),
            json!(4),
            json!("web-1.17f"),
        ]
    );
}

#[test]
fn events_k8s_io_events_print_like_core_events() {
    let ev = json!({
        "metadata": {"name": "e1"},
        "regarding": {"kind": "Node", "name": "n1"},
        "note": "Node is ready", "reason": "NodeReady", "type": "Normal",
        "eventTime": ago(50), "reportingController": "kubelet", "reportingInstance": "n1",
        "series": {"count": 3, "lastObservedTime": ago(5)},
    });
    assert_eq!(
        cells("events.k8s.io", "Event", &ev),
        vec![
            json!("5s"),
            json!("Normal"),
            json!("NodeReady"),
            json!("node/n1"),
            json!(""),
            json!("kubelet, n1"),
            json!("Node is ready"),
            json!("50s"),
            json!(3),
            json!("e1"),
        ]
    );
}

#[test]
fn secrets_config_maps_leases_and_service_accounts_count_their_contents() {
    let s = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        cells("", "Secret", &s)[..3].to_vec(),
        vec![json!("tls"), json!("kubernetes.io/tls"), json!(2)]
    );
    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": ""}});
    assert_eq!(cells("", "ConfigMap", &cm)[1], json!(2));
    let l = json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "sched-1"}});
    assert_eq!(
        cells("coordination.k8s.io", "Lease", &l)[1],
        json!("sched-1")
    );
    let sa = json!({"metadata": {"name": "default"}});
    assert_eq!(cells("", "ServiceAccount", &sa)[1], json!(0));
}

#[test]
fn role_bindings_show_the_role_and_their_subjects_when_wide() {
    let rb = json!({
        "metadata": {"name": "rb"},
        "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"},
        "subjects": [
            {"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}, {"kind": "User", "name": "bob"},
        ],
    });
    assert_eq!(
        cells("rbac.authorization.k8s.io", "RoleBinding", &rb),
        vec![
            json!("rb"),
            json!("ClusterRole/view"),
            json!("<unknown>"),
            json!("alice, bob"),
            json!("devs"),
            json!("ci/bot")
        ]
    );
}

#[test]
fn roles_and_cluster_roles_use_the_default_table() {
    assert!(!has_printer("rbac.authorization.k8s.io", "Role"));
    let names: Vec<_> = columns("rbac.authorization.k8s.io", "ClusterRole")
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["Name", "Created At"]);
}

#[test]
fn storage_classes_mark_the_default_and_fill_in_defaults() {
    let sc = json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path"});
    assert_eq!(
        cells("storage.k8s.io", "StorageClass", &sc)[..5].to_vec(),
        vec![
            json!("standard (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("Immediate"),
            json!(false)
        ]
    );
}

#[test]
fn claims_show_capacity_and_access_modes_only_once_bound() {
    let mut pvc = json!({"metadata": {"name": "data"},
        "spec": {"storageClassName": "standard", "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"}});
    let c = cells("", "PersistentVolumeClaim", &pvc);
    assert_eq!(
        c[..7].to_vec(),
        vec![
            json!("data"),
            json!("Pending"),
            json!(""),
            json!(""),
            json!(""),
            json!("standard"),
            json!("<unset>")
        ]
    );
    pvc["spec"]["volumeName"] = json!("pv-1");
    pvc["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"]});
    let c = cells("", "PersistentVolumeClaim", &pvc);
    assert_eq!(
        c[1..5].to_vec(),
        vec![
            json!("Bound"),
            json!("pv-1"),
            json!("1Gi"),
            json!("RWO,RWX")
        ]
    );
}

#[test]
fn pod_disruption_budgets_show_n_a_for_the_unset_bound() {
    let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        cells("policy", "PodDisruptionBudget", &pdb)[..4].to_vec(),
        vec![json!("p"), json!("50%"), json!("N/A"), json!(1)]
    );
}

#[test]
fn certificate_signing_requests_show_their_condition() {
    let csr = json!({"metadata": {"name": "c"}, "spec": {"signerName": "kubernetes.io/kubelet-serving",
        "username": "system:node:n1", "expirationSeconds": 86400},
        "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"}});
    assert_eq!(
        cells("certificates.k8s.io", "CertificateSigningRequest", &csr),
        vec![
            json!("c"),
            json!("<unknown>"),
            json!("kubernetes.io/kubelet-serving"),
            json!("system:node:n1"),
            json!("24h"),
            json!("Approved,Issued")
        ]
    );
}

#[test]
fn controller_revisions_name_their_controller_with_its_group() {
    let cr = json!({"metadata": {"name": "ds-1", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "controller": true}]}, "revision": 2});
    assert_eq!(
        cells("apps", "ControllerRevision", &cr)[..3].to_vec(),
        vec![json!("ds-1"), json!("daemonset.apps/ds"), json!(2)]
    );
}

// --- the default table and the Table object ----------------------------------------------

#[test]
fn an_unknown_kind_gets_name_and_created_at() {
    let cols = columns("example.com", "Widget");
    assert_eq!(cols.len(), 2);
    assert_eq!(
        (cols[0].name, cols[0].type_, cols[0].format),
        ("Name", "string", "name")
    );
    assert_eq!(
        (cols[1].name, cols[1].type_, cols[1].priority),
        ("Created At", "date", 0)
    );
    let w = json!({"metadata": {"name": "w1", "creationTimestamp": "2024-03-04T05:06:07Z"}});
    assert_eq!(
        cells("example.com", "Widget", &w),
        vec![json!("w1"), json!("2024-03-04T05:06:07Z")]
    );
}

#[test]
fn every_printer_has_as_many_cells_as_columns_even_for_an_empty_object() {
    let kinds = [
        ("", "Pod"),
        ("", "PodTemplate"),
        ("", "Node"),
        ("", "Namespace"),
        ("", "Service"),
        ("", "Endpoints"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "ReplicationController"),
        ("", "ResourceQuota"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "DaemonSet"),
        ("apps", "StatefulSet"),
        ("apps", "ControllerRevision"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("coordination.k8s.io", "Lease"),
        ("storage.k8s.io", "StorageClass"),
        ("storage.k8s.io", "CSIDriver"),
        ("storage.k8s.io", "CSINode"),
        ("storage.k8s.io", "VolumeAttachment"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("certificates.k8s.io", "CertificateSigningRequest"),
        ("policy", "PodDisruptionBudget"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("node.k8s.io", "RuntimeClass"),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
        ("example.com", "Widget"),
    ];
    for (group, kind) in kinds {
        let cols = columns(group, kind);
        assert_eq!(
            row(group, kind, &json!({}), now()).len(),
            cols.len(),
            "{group}/{kind}"
        );
        assert_eq!(
            row(group, kind, &json!({"metadata": {"name": "x"}}), now()).len(),
            cols.len(),
            "{group}/{kind}"
        );
        assert!(
            cols.iter().any(|c| c.name == "Name" && c.format == "name"),
            "{group}/{kind}"
        );
    }
}

#[test]
fn the_table_carries_columns_rows_list_metadata_and_partial_metadata_objects() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ns", "labels": {"a": "b"}, "creationTimestamp": ago(10)},
        "data": {"k": "v"}});
    let t = table(
        "",
        "ConfigMap",
        std::slice::from_ref(&cm),
        now(),
        IncludeObject::default(),
        "42",
        "tok",
    );
    assert_eq!(t["kind"], json!("Table"));
    assert_eq!(t["apiVersion"], json!("meta.k8s.io/v1"));
    assert_eq!(
        t["metadata"],
        json!({"resourceVersion": "42", "continue": "tok"})
    );
    assert_eq!(
        t["columnDefinitions"][0],
        json!({"name": "Name", "type": "string", "format": "name",
            "description": columns("", "ConfigMap")[0].description, "priority": 0})
    );
    assert_eq!(t["rows"][0]["cells"], json!(["c", 1, "10s"]));
    assert_eq!(
        t["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": cm["metadata"]})
    );
    let full = table(
        "",
        "ConfigMap",
        std::slice::from_ref(&cm),
        now(),
        IncludeObject::Object,
        "",
        "",
    );
    assert_eq!(full["rows"][0]["object"], cm);
    assert_eq!(full["metadata"], json!({}));
    let none = table("", "ConfigMap", &[cm], now(), IncludeObject::None, "", "");
    assert!(none["rows"][0].get("object").is_none());
    let empty = table("", "ConfigMap", &[], now(), IncludeObject::None, "1", "");
    assert_eq!(empty["rows"], json!([]));
}

#[test]
fn include_object_parses_the_query_values_and_defaults_to_metadata() {
    assert_eq!("".parse::<IncludeObject>(), Ok(IncludeObject::Metadata));
    assert_eq!("None".parse::<IncludeObject>(), Ok(IncludeObject::None));
    assert_eq!("Object".parse::<IncludeObject>(), Ok(IncludeObject::Object));
    assert!("object".parse::<IncludeObject>().is_err());
}

#[test]
fn label_selectors_format_like_kubectl() {
    assert_eq!(format_label_selector(&json!(null)), "<none>");
    assert_eq!(format_label_selector(&json!({})), "<none>");
    let sel = json!({"matchLabels": {"b": "2"}, "matchExpressions": [
        {"key": "a", "operator": "Exists"}, {"key": "c", "operator": "DoesNotExist"},
        {"key": "d", "operator": "NotIn", "values": ["y", "x"]}]});
    assert_eq!(format_label_selector(&sel), "a,b=2,!c,d notin (x,y)");
    assert_eq!(
        format_label_selector(&json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})),
        "<error>"
    );
}
