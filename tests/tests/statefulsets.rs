//! The StatefulSet controller and the PersistentVolume binder against a real apiserver-lite:
//! with [`FakeKubelet`] (readiness under the test's control) pods come up one at a time with
//! stable names, hostnames and claims bound to the test's volumes, roll out with a partition
//! through real `kubectl rollout status/history/undo`, and scale down from the top keeping
//! their claims; on a real [`TestNode`] a file written to the claimed hostPath volume by
//! `web-0` is still there for the `web-0` created again after a delete.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::node::TestNode;
use e2e::{ApiServer, FakeKubelet, wait_until};

const NODE: &str = "apiVersion: v1
kind: Node
metadata: {name: n1}
status:
  allocatable: {cpu: \"8\", memory: 16Gi, pods: \"110\"}
  conditions: [{type: Ready, status: \"True\"}]
";

/// A hostPath PersistentVolume of `size`.
fn volume(name: &str, size: &str, path: &str) -> String {
    format!(
        "apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: \"{path}\", type: DirectoryOrCreate}}
"
    )
}

fn stateful_set(replicas: u32, image: &str, command: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web, namespace: default}}
spec:
  serviceName: web
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: [sh, -c, '{command}']
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 100Mi}}}}
"
    )
}

/// `name=image` of the set's pods, sorted.
fn pods(api: &ApiServer) -> Vec<String> {
    let out = api.jsonpath(
        &["pods", "-l", "app=web"],
        "{range .items[*]}{.metadata.name}={.spec.containers[0].image}{\"\\n\"}{end}",
    );
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn a_statefulset_comes_up_in_order_binds_claims_and_rolls_out_with_a_partition() {
    let api = ApiServer::start().expect("apiserver-lite");
    api.apply(NODE);
    let ready: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let allowed = ready.clone();
    let _kubelet = FakeKubelet::start_with_ips(&api, move |pod| {
        allowed
            .lock()
            .is_ok_and(|r| r.contains(pod.metadata.name.as_deref().unwrap_or_default()))
    });
    // Three volumes that fit, one too small (never chosen), the biggest last choice.
    api.apply(&volume("pv-small", "50Mi", "/tmp/sts-e2e-unused"));
    api.apply(&volume("pv-a", "1Gi", "/tmp/sts-e2e-a"));
    api.apply(&volume("pv-b", "1Gi", "/tmp/sts-e2e-b"));
    api.apply(&volume("pv-c", "5Gi", "/tmp/sts-e2e-c"));
    api.apply(&stateful_set(3, "example/web:1", "sleep 3600"));

    // OrderedReady: web-1 only once web-0 is Ready.
    wait_until("web-0", Duration::from_secs(20), || {
        pods(&api) == ["web-0=example/web:1"]
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pods(&api), ["web-0=example/web:1"], "web-1 waits for web-0");
    ready.lock().unwrap().insert("web-0".into());
    wait_until("web-1", Duration::from_secs(20), || pods(&api).len() == 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pods(&api).len(), 2, "web-2 waits for web-1");
    ready
        .lock()
        .unwrap()
        .extend(["web-1".into(), "web-2".into()]);
    api.kubectl(&["rollout", "status", "sts/web", "--timeout=30s"])
        .ok();
    assert_eq!(
        pods(&api),
        [
            "web-0=example/web:1",
            "web-1=example/web:1",
            "web-2=example/web:1"
        ]
    );

    // Identity: hostname, subdomain, labels; claims bound, the smallest fitting volumes.
    assert_eq!(
        api.jsonpath(
            &["pod", "web-1"],
            "{.spec.hostname}.{.spec.subdomain} {.metadata.labels.apps\\.kubernetes\\.io/pod-index} {.metadata.labels.statefulset\\.kubernetes\\.io/pod-name}"
        ),
        "web-1.web 1 web-1"
    );
    wait_until("claims bound", Duration::from_secs(20), || {
        api.jsonpath(
            &["pvc"],
            "{range .items[*]}{.metadata.name}={.status.phase} {end}",
        ) == "data-web-0=Bound data-web-1=Bound data-web-2=Bound"
    });
    let mut bound: Vec<String> = api
        .jsonpath(&["pvc"], "{.items[*].spec.volumeName}")
        .split(' ')
        .map(str::to_string)
        .collect();
    bound.sort();
    assert_eq!(bound, ["pv-a", "pv-b", "pv-c"]);
    assert_eq!(
        api.jsonpath(&["pv", "pv-small"], "{.status.phase}"),
        "Available"
    );
    assert_eq!(
        api.jsonpath(&["pv", "pv-a"], "{.status.phase}/{.spec.claimRef.kind}"),
        "Bound/PersistentVolumeClaim"
    );

    // A rolling update with partition 2 replaces web-2 only.
    api.kubectl(&[
        "patch",
        "sts",
        "web",
        "-p",
        "{\"spec\":{\"updateStrategy\":{\"rollingUpdate\":{\"partition\":2}}}}",
    ])
    .ok();
    api.kubectl(&["set", "image", "sts/web", "main=example/web:2"])
        .ok();
    let out = api
        .kubectl(&["rollout", "status", "sts/web", "--timeout=30s"])
        .ok()
        .to_string();
    assert!(out.contains("partitioned roll out complete"), "{out}");
    assert_eq!(
        pods(&api),
        [
            "web-0=example/web:1",
            "web-1=example/web:1",
            "web-2=example/web:2"
        ]
    );
    // Partition 0: the rest, from the top.
    api.kubectl(&[
        "patch",
        "sts",
        "web",
        "-p",
        "{\"spec\":{\"updateStrategy\":{\"rollingUpdate\":{\"partition\":0}}}}",
    ])
    .ok();
    let out = api
        .kubectl(&["rollout", "status", "sts/web", "--timeout=30s"])
        .ok()
        .to_string();
    assert!(
        // kubectl reports any set partition (0 by default) this way.
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    assert_eq!(
        pods(&api),
        [
            "web-0=example/web:2",
            "web-1=example/web:2",
            "web-2=example/web:2"
        ]
    );
    let revisions = api.jsonpath(
        &["sts", "web"],
        "{.status.currentRevision} {.status.updateRevision}",
    );
    let (current, update) = revisions.split_once(' ').unwrap_or_default();
    assert_eq!(current, update);

    // History and undo through the ControllerRevisions.
    let history = api
        .kubectl(&["rollout", "history", "sts/web"])
        .ok()
        .to_string();
    assert!(history.contains('1') && history.contains('2'), "{history}");
    api.kubectl(&["rollout", "undo", "sts/web"]).ok();
    api.kubectl(&["rollout", "status", "sts/web", "--timeout=30s"])
        .ok();
    wait_until("the undo rolled out", Duration::from_secs(20), || {
        pods(&api)
            == [
                "web-0=example/web:1",
                "web-1=example/web:1",
                "web-2=example/web:1",
            ]
    });

    // Scale down: highest ordinal first; claims stay (retention Retain).
    api.kubectl(&["scale", "sts/web", "--replicas=1"]).ok();
    wait_until("scaled down", Duration::from_secs(20), || {
        pods(&api) == ["web-0=example/web:1"]
    });
    assert_eq!(
        api.jsonpath(&["pvc"], "{.items[*].metadata.name}"),
        "data-web-0 data-web-1 data-web-2"
    );
    let events = api
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
        ])
        .ok()
        .to_string();
    // kube-rs's recorder folds events of one reason into a series under the first note.
    assert!(
        events.contains("SuccessfulCreate")
            && events.contains("in StatefulSet web success")
            && events.contains("delete Pod web-2 in StatefulSet web successful"),
        "{events}"
    );
}

#[test]
fn a_pods_claimed_volume_survives_its_recreation() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    node.wait_ready(&api);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("web-0");
    api.apply(&volume("pv-web-0", "1Gi", &path.display().to_string()));
    api.apply(&stateful_set(
        1,
        &node.image,
        "echo $(hostname) >> /data/starts; sleep 3600",
    ));
    let starts = path.join("starts");
    wait_until(
        "web-0 to write to its volume",
        Duration::from_secs(60),
        || std::fs::read_to_string(&starts).is_ok_and(|s| s == "web-0\n"),
    );
    api.kubectl(&["rollout", "status", "sts/web", "--timeout=60s"])
        .ok();
    let uid = api.jsonpath(&["pod", "web-0"], "{.metadata.uid}");
    api.kubectl(&["delete", "pod", "web-0"]).ok();
    wait_until(
        "web-0 created again with the same volume",
        Duration::from_secs(60),
        || std::fs::read_to_string(&starts).is_ok_and(|s| s == "web-0\nweb-0\n"),
    );
    let again = api.jsonpath(&["pod", "web-0"], "{.metadata.uid}");
    assert!(!again.is_empty() && again != uid, "a new pod, same name");
    api.kubectl(&["delete", "sts", "web", "--wait=true"]).ok();
    wait_until("the pods to go", Duration::from_secs(30), || {
        api.jsonpath(&["pods"], "{.items[*].metadata.name}")
            .is_empty()
    });
}
