//! The Deployment controller against a real apiserver-lite with Node objects and no node
//! agent: a [`FakeKubelet`] marks pods Ready (or leaves them unready) and confirms their
//! deletion. Driven by real `kubectl rollout status|history|undo|restart|pause|resume`,
//! `kubectl set image` and `kubectl scale`, with the rollout's bounds sampled meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{ApiServer, FakeKubelet, wait_for};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: n1
status:
  allocatable: {cpu: \"32\", memory: 64Gi, pods: \"110\"}
  conditions: [{type: Ready, status: \"True\"}]
";

/// A Deployment `web` (label app=web, container `web`) with the given spec lines.
fn deployment(replicas: i32, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
{extra_spec}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: \"{image}\"}}]
"
    )
}

fn start(yaml: &str, ready: impl Fn(&Pod) -> bool + Send + 'static) -> (ApiServer, FakeKubelet) {
    let server = ApiServer::start().unwrap();
    server.kubectl_stdin(&["apply", "-f", "-"], NODE).ok();
    let kubelet = FakeKubelet::start(&server, ready);
    server.kubectl_stdin(&["apply", "-f", "-"], yaml).ok();
    (server, kubelet)
}

fn get(server: &ApiServer, what: &[&str], jsonpath: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let path = format!("jsonpath={jsonpath}");
    args.extend_from_slice(&["-o", &path]);
    server.kubectl(&args).ok().trim().to_string()
}

fn rollout_status(server: &ApiServer) -> e2e::Run {
    server.kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
}

fn image(server: &ApiServer) -> String {
    get(
        server,
        &["deployment", "web"],
        "{.spec.template.spec.containers[0].image}",
    )
}

/// ReplicaSet name → (spec replicas, revision), newest revision last.
fn replica_sets(server: &ApiServer) -> Vec<(String, i32, i64)> {
    let out = get(
        server,
        &["rs", "-l", "app=web"],
        "{range .items[*]}{.metadata.name} {.spec.replicas} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}{\"\\n\"}{end}",
    );
    let mut sets: Vec<(String, i32, i64)> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.to_string(),
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    sets.sort_by_key(|s| s.2);
    sets
}

/// Samples ReplicaSets and pods in a thread until finished, recording what `check` reports.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Sampler {
    fn start(
        server: &ApiServer,
        check: impl Fn(&[ReplicaSet], &[Pod]) -> Option<String> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let kubeconfig = server.kubeconfig();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let client = e2e::client_for(&kubeconfig).await.expect("a client");
                let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
                let pods: Api<Pod> = Api::namespaced(client, "default");
                let (mut samples, mut problems) = (0, Vec::new());
                while !flag.load(Ordering::Relaxed) {
                    let lp = ListParams::default().labels("app=web");
                    if let (Ok(s), Ok(p)) = (sets.list(&lp).await, pods.list(&lp).await) {
                        samples += 1;
                        if let Some(problem) = check(&s.items, &p.items) {
                            problems.push(problem);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (samples, problems)
            })
        });
        Sampler { stop, thread }
    }

    #[track_caller]
    fn assert_clean(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, problems) = self.thread.join().expect("sampler thread");
        assert!(samples > 5, "only {samples} samples");
        assert!(
            problems.is_empty(),
            "{} bad samples: {:?}",
            problems.len(),
            &problems[..problems.len().min(5)]
        );
    }
}

fn ready_and_live(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

fn spec_total(sets: &[ReplicaSet]) -> i32 {
    sets.iter()
        .filter_map(|rs| rs.spec.as_ref().and_then(|s| s.replicas))
        .sum()
}

#[test]
fn a_rolling_update_stays_in_bounds_keeps_history_and_rolls_back_and_restarts() {
    let spec = "  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}";
    let (server, _kubelet) = start(&deployment(3, "busybox:1", spec), |_| true);
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    assert_eq!(
        get(
            &server,
            &["deployment", "web"],
            "{.status.availableReplicas}"
        ),
        "3"
    );
    let first = replica_sets(&server);
    assert_eq!(first.len(), 1);
    let (first_rs, _, first_rev) = first[0].clone();
    let hash = get(
        &server,
        &["rs", &first_rs],
        "{.metadata.labels.pod-template-hash}",
    );
    assert_eq!(
        first_rs,
        format!("web-{hash}"),
        "named after the template hash"
    );
    assert_eq!(
        get(
            &server,
            &["rs", &first_rs],
            "{.spec.selector.matchLabels.pod-template-hash}"
        ),
        hash
    );
    assert_eq!(first_rev, 1);
    // Scaling events as upstream words them, shown by describe (and the pods' creation on
    // the ReplicaSet).
    wait_for("the scaling event", || {
        server
            .kubectl(&["describe", "deployment", "web"])
            .ok()
            .contains("ScalingReplicaSet")
    });
    let described = server.kubectl(&["describe", "deployment", "web"]);
    assert!(
        described
            .ok()
            .contains(&format!("Scaled up replica set {first_rs} from 0 to 3")),
        "{}",
        described.stdout
    );
    wait_for("the ReplicaSet's pod creation events", || {
        server
            .kubectl(&["describe", "rs", &first_rs])
            .ok()
            .contains("SuccessfulCreate")
    });
    assert_eq!(
        get(
            &server,
            &["deployment", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "1"
    );

    // New image: never more than 3 + 1 pods asked for, never fewer than 3 - 0 ready.
    let sampler = Sampler::start(&server, |sets, pods| {
        let (total, ready) = (spec_total(sets), ready_and_live(pods));
        (total > 4 || ready < 3).then(|| format!("replicas asked {total}, ready {ready}"))
    });
    std::thread::sleep(Duration::from_millis(300));
    server
        .kubectl(&["set", "image", "deployment/web", "web=busybox:2"])
        .ok();
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    sampler.assert_clean();
    let sets = replica_sets(&server);
    assert_eq!(sets.len(), 2);
    assert_eq!((sets[0].1, sets[1].1, sets[1].2), (0, 3, 2));
    let history = server.kubectl(&["rollout", "history", "deployment/web"]);
    let lines: Vec<&str> = history.ok().lines().map(str::trim).collect();
    assert!(lines.iter().any(|l| l.starts_with("1 ")), "{history:?}");
    assert!(lines.iter().any(|l| l.starts_with("2 ")), "{history:?}");
    let rev1 = server.kubectl(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(rev1.ok().contains("busybox:1"), "{}", rev1.stdout);

    // Undo goes back to the first ReplicaSet, which becomes revision 3.
    server.kubectl(&["rollout", "undo", "deployment/web"]).ok();
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    assert_eq!(image(&server), "busybox:1");
    let sets = replica_sets(&server);
    assert_eq!(sets.len(), 2, "the old ReplicaSet was reused: {sets:?}");
    assert_eq!(sets[1], (first_rs.clone(), 3, 3));
    assert_eq!(
        get(
            &server,
            &["rs", &first_rs],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision-history}"
        ),
        "1"
    );
    assert_eq!(
        get(
            &server,
            &["deployment", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );

    // Restart: a new template annotation, a new ReplicaSet, revision 4.
    server
        .kubectl(&["rollout", "restart", "deployment/web"])
        .ok();
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    let sets = replica_sets(&server);
    assert_eq!(sets.len(), 3, "{sets:?}");
    assert_eq!((sets[2].1, sets[2].2), (3, 4));
    assert_ne!(sets[2].0, first_rs);
    let conditions = get(
        &server,
        &["deployment", "web"],
        "{range .status.conditions[*]}{.type}={.status}/{.reason} {end}",
    );
    assert!(
        conditions.contains("Progressing=True/NewReplicaSetAvailable"),
        "{conditions}"
    );
    assert!(
        conditions.contains("Available=True/MinimumReplicasAvailable"),
        "{conditions}"
    );
    let status = get(
        &server,
        &["deployment", "web"],
        "{.status.replicas}/{.status.updatedReplicas}/{.status.readyReplicas}/{.status.availableReplicas}/{.status.observedGeneration}/{.metadata.generation}",
    );
    let f: Vec<&str> = status.split('/').collect();
    assert_eq!(&f[..4], &["3", "3", "3", "3"], "{status}");
    assert_eq!(f[4], f[5], "observedGeneration");
}

#[test]
fn recreate_takes_every_old_pod_away_before_creating_new_ones() {
    let (server, _kubelet) = start(
        &deployment(
            3,
            "busybox:1",
            "  strategy: {type: Recreate}\n  revisionHistoryLimit: 1",
        ),
        |_| true,
    );
    rollout_status(&server).ok();
    let sampler = Sampler::start(&server, |_sets, pods| {
        let image = |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default()
        };
        let old = pods.iter().filter(|p| image(p) == "busybox:1").count();
        let new = pods.iter().filter(|p| image(p) == "busybox:2").count();
        (old > 0 && new > 0).then(|| format!("{old} old and {new} new pods at once"))
    });
    std::thread::sleep(Duration::from_millis(300));
    server
        .kubectl(&["set", "image", "deployment/web", "web=busybox:2"])
        .ok();
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    sampler.assert_clean();
    let sets = replica_sets(&server);
    assert_eq!(sets.iter().map(|s| s.1).collect::<Vec<_>>(), vec![0, 3]);
    // revisionHistoryLimit 1: a third template leaves the second as the only old one.
    server
        .kubectl(&["set", "image", "deployment/web", "web=busybox:3"])
        .ok();
    rollout_status(&server).ok();
    wait_for("the oldest ReplicaSet to be deleted", || {
        replica_sets(&server)
            .iter()
            .map(|s| s.2)
            .collect::<Vec<_>>()
            == vec![2, 3]
    });
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll_out_until_resumed() {
    let (server, _kubelet) = start(&deployment(2, "busybox:1", ""), |_| true);
    rollout_status(&server).ok();
    server.kubectl(&["rollout", "pause", "deployment/web"]).ok();
    server
        .kubectl(&["set", "image", "deployment/web", "web=busybox:2"])
        .ok();
    server
        .kubectl(&["scale", "deployment/web", "--replicas=4"])
        .ok();
    wait_for("the paused deployment to scale its ReplicaSet", || {
        replica_sets(&server)
            .iter()
            .map(|s| s.1)
            .collect::<Vec<_>>()
            == vec![4]
    });
    wait_for("the Paused condition", || {
        get(
            &server,
            &["deployment", "web"],
            "{.status.conditions[?(@.type==\"Progressing\")].reason}",
        ) == "DeploymentPaused"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replica_sets(&server).len(), 1, "no rollout while paused");
    server
        .kubectl(&["rollout", "resume", "deployment/web"])
        .ok();
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    let sets = replica_sets(&server);
    assert_eq!(sets.iter().map(|s| s.1).collect::<Vec<_>>(), vec![0, 4]);
}

#[test]
fn a_rollout_whose_pods_never_get_ready_exceeds_its_progress_deadline() {
    let (server, _kubelet) = start(&deployment(2, "busybox:1", ""), |p| {
        !p.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_deref())
            .is_some_and(|i| i.contains("never-ready"))
    });
    rollout_status(&server).ok();
    // A short deadline only now, so a slow start of the first rollout cannot exceed it.
    server
        .kubectl(&[
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"progressDeadlineSeconds":3}}"#,
        ])
        .ok();
    server
        .kubectl(&["set", "image", "deployment/web", "web=never-ready:1"])
        .ok();
    let out = rollout_status(&server);
    assert!(
        out.fails().contains("exceeded its progress deadline"),
        "{}",
        out.stderr
    );
    let conditions = get(
        &server,
        &["deployment", "web"],
        "{range .status.conditions[*]}{.type}={.status}/{.reason} {end}",
    );
    assert!(
        conditions.contains("Progressing=False/ProgressDeadlineExceeded"),
        "{conditions}"
    );
    // The old pods stay: 25% of 2 rounds down to no unavailable pod.
    assert_eq!(
        get(
            &server,
            &["deployment", "web"],
            "{.status.availableReplicas}"
        ),
        "2"
    );
}

#[test]
fn scaling_mid_rollout_spreads_replicas_in_proportion() {
    let spec = "  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 3, maxUnavailable: 2}}";
    let (server, _kubelet) = start(&deployment(10, "busybox:1", spec), |p| {
        !p.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_deref())
            .is_some_and(|i| i.contains("never-ready"))
    });
    rollout_status(&server).ok();
    server
        .kubectl(&["set", "image", "deployment/web", "web=never-ready:1"])
        .ok();
    // 13 pods at most, 8 available at least: the rollout stalls at 8 old + 5 new.
    wait_for("the rollout to stall at 8 + 5", || {
        replica_sets(&server)
            .iter()
            .map(|s| s.1)
            .collect::<Vec<_>>()
            == vec![8, 5]
    });
    server
        .kubectl(&["scale", "deployment/web", "--replicas=20"])
        .ok();
    // 23 at most now: the 10 more split 6 old / 4 new (in proportion to 8/13 and 5/13).
    wait_for("proportional sizes", || {
        replica_sets(&server)
            .iter()
            .map(|s| s.1)
            .collect::<Vec<_>>()
            == vec![14, 9]
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        replica_sets(&server)
            .iter()
            .map(|s| s.1)
            .collect::<Vec<_>>(),
        vec![14, 9]
    );
}

#[test]
fn min_ready_seconds_delay_availability() {
    let (server, _kubelet) = start(&deployment(2, "busybox:1", "  minReadySeconds: 5"), |_| {
        true
    });
    wait_for("two ready pods", || {
        get(&server, &["deployment", "web"], "{.status.readyReplicas}") == "2"
    });
    assert_ne!(
        get(
            &server,
            &["deployment", "web"],
            "{.status.availableReplicas}"
        ),
        "2",
        "not available before minReadySeconds"
    );
    let rs = replica_sets(&server)[0].0.clone();
    assert_eq!(get(&server, &["rs", &rs], "{.spec.minReadySeconds}"), "5");
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    assert_eq!(
        get(
            &server,
            &["deployment", "web"],
            "{.status.availableReplicas}"
        ),
        "2"
    );
}

#[test]
fn a_deployment_finishes_its_rollout_across_an_apiserver_restart() {
    let hold = Arc::new(AtomicBool::new(false));
    let held = hold.clone();
    let (mut server, kubelet) = start(&deployment(3, "busybox:1", ""), move |p| {
        let new = p
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_deref())
            == Some("busybox:2");
        !(new && held.load(Ordering::Relaxed))
    });
    rollout_status(&server).ok();
    hold.store(true, Ordering::Relaxed);
    server
        .kubectl(&["set", "image", "deployment/web", "web=busybox:2"])
        .ok();
    wait_for("the new ReplicaSet to start", || {
        replica_sets(&server)
            .last()
            .is_some_and(|s| s.2 == 2 && s.1 > 0)
    });
    server.restart().unwrap();
    hold.store(false, Ordering::Relaxed);
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    drop(kubelet);
    let sets = replica_sets(&server);
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert_eq!((sets[0].1, sets[1].1, sets[1].2), (0, 3, 2));
    assert_eq!(image(&server), "busybox:2");
}

#[test]
fn a_deployment_adopts_a_matching_replicaset_and_releases_one_that_stops_matching() {
    // A ReplicaSet of the Deployment's selector, made by hand before it, with another image.
    let legacy = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: legacy
  namespace: default
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: \"busybox:0\"}]
";
    let (server, _kubelet) = start(legacy, |_| true);
    wait_for("the legacy pods", || {
        get(&server, &["rs", "legacy"], "{.status.readyReplicas}") == "2"
    });
    server
        .kubectl_stdin(&["apply", "-f", "-"], &deployment(2, "busybox:1", ""))
        .ok();
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    assert_eq!(
        get(
            &server,
            &["rs", "legacy"],
            "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.spec.replicas}"
        ),
        "Deployment/web/0",
        "adopted as an old ReplicaSet and scaled down"
    );
    // The new ReplicaSet stops matching the selector: released, and replaced under a new
    // hash (the old name is taken, so the collision count goes up).
    let new = replica_sets(&server)
        .into_iter()
        .find(|s| s.0 != "legacy")
        .map(|s| s.0)
        .expect("a new ReplicaSet");
    server
        .kubectl(&["label", "rs", &new, "app=other", "--overwrite"])
        .ok();
    wait_for("the released ReplicaSet to lose its owner", || {
        get(&server, &["rs", &new], "{.metadata.ownerReferences}").is_empty()
    });
    let out = rollout_status(&server);
    assert!(
        out.ok().contains("successfully rolled out"),
        "{}",
        out.stdout
    );
    assert_eq!(
        get(&server, &["deployment", "web"], "{.status.collisionCount}"),
        "1"
    );
    let owned = get(
        &server,
        &["rs", "-l", "app=web"],
        "{range .items[?(@.metadata.ownerReferences)]}{.metadata.name} {end}",
    );
    assert!(
        !owned.contains(&new) && owned.split_whitespace().count() == 2,
        "{owned}"
    );
}
