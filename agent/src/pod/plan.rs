//! What a pod needs next, decided from its spec and what the runtime reports, with no I/O:
//! the pure step of the pod worker. It follows kubelet's order: a ready sandbox first (a new
//! one reruns every init container), init containers one at a time in order (sidecars — init
//! containers with restartPolicy Always — started and kept running), then all app containers;
//! exited containers restarted as the restart policy says, behind crash-loop back-off; and the
//! pod's end (Succeeded or Failed) when nothing will run again.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};

use super::backoff::Backoff;

/// A container's state as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// Unknown to the runtime's own monitor.
    Unknown,
}

/// One container instance of the pod, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    /// Runtime id.
    pub id: String,
    /// Container name in the pod spec.
    pub name: String,
    /// CRI attempt.
    pub attempt: u32,
    /// The sandbox it runs in.
    pub sandbox_id: String,
    /// Its state.
    pub state: RunState,
    /// Exit code once exited.
    pub exit_code: i32,
    /// The runtime's reason (Completed, Error, OOMKilled).
    pub reason: String,
    /// The runtime's message.
    pub message: String,
    /// Creation time.
    pub created_at: Option<Timestamp>,
    /// Start time.
    pub started_at: Option<Timestamp>,
    /// Finish time.
    pub finished_at: Option<Timestamp>,
    /// The image id it runs.
    pub image_ref: String,
    /// The pod-level restart count recorded on it.
    pub restart_count: i32,
}

/// One sandbox of the pod, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedSandbox {
    /// Runtime id.
    pub id: String,
    /// CRI attempt.
    pub attempt: u32,
    /// Whether it is ready.
    pub ready: bool,
    /// Creation time.
    pub created_at: i64,
    /// Pod IP.
    pub ip: String,
}

/// Everything the runtime holds for one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Its sandboxes.
    pub sandboxes: Vec<ObservedSandbox>,
    /// Its containers, of every sandbox.
    pub containers: Vec<ObservedContainer>,
}

impl Observed {
    /// The newest sandbox.
    pub fn current_sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes
            .iter()
            .max_by_key(|s| (s.created_at, s.attempt))
    }

    /// The newest instance of a container, in any sandbox.
    pub fn latest(&self, name: &str) -> Option<&ObservedContainer> {
        self.containers
            .iter()
            .filter(|c| c.name == name)
            .max_by_key(|c| (c.created_at, c.attempt))
    }

    /// The newest instance of a container in the current sandbox.
    pub fn latest_in_current(&self, name: &str) -> Option<&ObservedContainer> {
        let sandbox = self.current_sandbox()?;
        self.containers
            .iter()
            .filter(|c| c.name == name && c.sandbox_id == sandbox.id)
            .max_by_key(|c| (c.created_at, c.attempt))
    }

    /// The instance before the newest one (for lastState).
    pub fn previous(&self, name: &str) -> Option<&ObservedContainer> {
        let mut all: Vec<&ObservedContainer> =
            self.containers.iter().filter(|c| c.name == name).collect();
        all.sort_by_key(|c| (c.created_at, c.attempt));
        all.iter().rev().nth(1).copied()
    }
}

/// What kind of container a spec entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// An init container that runs to completion.
    Init,
    /// An init container with restartPolicy Always: runs beside the app containers.
    Sidecar,
    /// An app container.
    App,
}

/// A container to create and start.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: ContainerKind,
    /// The CRI attempt for the new instance.
    pub attempt: u32,
    /// The restart count the new instance carries.
    pub restart_count: i32,
    /// When the instance it replaces finished (for back-off bookkeeping).
    pub replaces_finished_at: Option<Timestamp>,
}

/// How a pod ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// Every container exited 0 and none will run again.
    Succeeded,
    /// A container failed and will not run again.
    Failed,
}

/// The next step for a pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Create a sandbox with this attempt.
    pub create_sandbox: Option<u32>,
    /// Stop these containers (by id).
    pub kill: Vec<String>,
    /// Remove these containers (created but never started; leftovers).
    pub remove: Vec<String>,
    /// Start these, in order.
    pub start: Vec<Start>,
    /// Containers waiting out a crash back-off, and until when.
    pub backing_off: Vec<(String, Timestamp)>,
    /// The pod has ended.
    pub terminal: Option<Terminal>,
    /// Why the pod failed, when the node decided it (activeDeadlineSeconds): reason, message.
    pub failure: Option<(String, String)>,
    /// When activeDeadlineSeconds will end the pod.
    pub deadline: Option<Timestamp>,
}

impl Plan {
    /// The earliest time the plan should be made again for a back-off to end.
    pub fn wake_at(&self) -> Option<Timestamp> {
        self.backing_off
            .iter()
            .map(|(_, t)| *t)
            .chain(self.deadline)
            .min()
    }
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether an init container is a sidecar.
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

fn next_start(observed: &Observed, name: &str, kind: ContainerKind) -> Start {
    let latest = observed.latest(name);
    Start {
        name: name.to_string(),
        kind,
        attempt: latest.map_or(0, |c| c.attempt + 1),
        restart_count: latest.map_or(0, |c| c.restart_count + 1),
        replaces_finished_at: None,
    }
}

/// Restarts `name` (whose newest instance in the current sandbox exited) unless back-off says
/// to wait.
fn restart(
    plan: &mut Plan,
    observed: &Observed,
    backoff: &Backoff,
    exited: &ObservedContainer,
    kind: ContainerKind,
    now: Timestamp,
) {
    let finished = exited.finished_at.unwrap_or(now);
    match backoff.wait_until(&exited.name, finished, now) {
        Some(until) => plan.backing_off.push((exited.name.clone(), until)),
        None => {
            let mut start = next_start(observed, &exited.name, kind);
            start.replaces_finished_at = Some(finished);
            plan.start.push(start);
        }
    }
}

/// Decides the next step.
pub fn plan(pod: &Pod, observed: &Observed, backoff: &Backoff, now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = pod.spec.as_ref() else {
        return plan;
    };
    let policy = restart_policy(pod);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let running_ids = |plan: &mut Plan| {
        for c in observed
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running)
        {
            plan.kill.push(c.id.clone());
        }
    };

    // A pod that has ended stays ended: whatever still runs (sidecars) is stopped.
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        plan.terminal = Some(if phase == Some("Succeeded") {
            Terminal::Succeeded
        } else {
            Terminal::Failed
        });
        running_ids(&mut plan);
        return plan;
    }

    // activeDeadlineSeconds counts from the pod's start on this node.
    if let (Some(seconds), Some(start)) = (
        spec.active_deadline_seconds,
        pod.status.as_ref().and_then(|s| s.start_time.as_ref()),
    ) {
        let deadline = start.0 + std::time::Duration::from_secs(seconds.max(0) as u64);
        if now >= deadline {
            plan.terminal = Some(Terminal::Failed);
            plan.failure = Some((
                "DeadlineExceeded".into(),
                "Pod was active on the node longer than the specified deadline".into(),
            ));
            running_ids(&mut plan);
            return plan;
        }
        plan.deadline = Some(deadline);
    }

    let sandbox = observed.current_sandbox().filter(|s| s.ready);
    let Some(sandbox) = sandbox else {
        // A pod whose containers all ran to their end under Never/OnFailure is not restarted
        // because its sandbox went away.
        if policy != "Always"
            && !observed.containers.is_empty()
            && let Some(terminal) = ended(pod, observed, policy, false)
        {
            plan.terminal = Some(terminal);
            return plan;
        }
        plan.create_sandbox = Some(observed.current_sandbox().map_or(0, |s| s.attempt + 1));
        running_ids(&mut plan);
        return plan;
    };

    // Containers created but never started (an interrupted start) are replaced.
    for c in observed
        .containers
        .iter()
        .filter(|c| c.state == RunState::Created && c.sandbox_id == sandbox.id)
    {
        plan.remove.push(c.id.clone());
    }

    // Init containers, in order.
    for init in spec.init_containers.iter().flatten() {
        let latest = observed
            .latest_in_current(&init.name)
            .filter(|c| c.state != RunState::Created);
        if is_sidecar(init) {
            match latest {
                Some(c) if c.state == RunState::Running => continue,
                Some(c) => restart(&mut plan, observed, backoff, c, ContainerKind::Sidecar, now),
                None => plan
                    .start
                    .push(next_start(observed, &init.name, ContainerKind::Sidecar)),
            }
            return plan;
        }
        match latest {
            Some(c)
                if matches!(c.state, RunState::Exited | RunState::Unknown) && c.exit_code == 0 =>
            {
                continue;
            }
            Some(c) if c.state == RunState::Running => return plan,
            Some(c) => {
                if policy == "Never" {
                    plan.terminal = Some(Terminal::Failed);
                    running_ids(&mut plan);
                } else {
                    restart(&mut plan, observed, backoff, c, ContainerKind::Init, now);
                }
                return plan;
            }
            None => {
                plan.start
                    .push(next_start(observed, &init.name, ContainerKind::Init));
                return plan;
            }
        }
    }

    // App containers.
    for container in &spec.containers {
        match observed
            .latest_in_current(&container.name)
            .filter(|c| c.state != RunState::Created)
        {
            None => plan
                .start
                .push(next_start(observed, &container.name, ContainerKind::App)),
            Some(c) if c.state == RunState::Running => {}
            Some(c) => {
                if should_restart(policy, c.exit_code) {
                    restart(&mut plan, observed, backoff, c, ContainerKind::App, now);
                }
            }
        }
    }
    if plan.start.is_empty()
        && plan.backing_off.is_empty()
        && let Some(terminal) = ended(pod, observed, policy, true)
    {
        plan.terminal = Some(terminal);
        running_ids(&mut plan);
    }
    plan
}

/// Whether every app container has run to an end it will not be restarted from.
fn ended(pod: &Pod, observed: &Observed, policy: &str, in_current: bool) -> Option<Terminal> {
    if policy == "Always" {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let mut failed = false;
    for container in &spec.containers {
        let latest = if in_current {
            observed.latest_in_current(&container.name)
        } else {
            observed.latest(&container.name)
        };
        let c = latest?;
        if !matches!(c.state, RunState::Exited | RunState::Unknown) {
            return None;
        }
        if should_restart(policy, c.exit_code) {
            return None;
        }
        failed |= c.exit_code != 0;
    }
    Some(if failed {
        Terminal::Failed
    } else {
        Terminal::Succeeded
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn ts(s: u64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s as i64).unwrap()
    }

    fn pod(policy: &str, inits: &[(&str, bool)], apps: &[&str]) -> Pod {
        let container = |name: &str| Container {
            name: name.into(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: Some(
                    inits
                        .iter()
                        .map(|(n, sidecar)| Container {
                            restart_policy: sidecar.then(|| "Always".to_string()),
                            ..container(n)
                        })
                        .collect(),
                ),
                containers: apps.iter().map(|n| container(n)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sandbox() -> ObservedSandbox {
        ObservedSandbox {
            id: "sb".into(),
            attempt: 0,
            ready: true,
            created_at: 1,
            ip: "10.0.0.2".into(),
        }
    }

    fn container(
        name: &str,
        attempt: u32,
        state: RunState,
        exit_code: i32,
        finished: u64,
    ) -> ObservedContainer {
        ObservedContainer {
            id: format!("{name}-{attempt}"),
            name: name.into(),
            attempt,
            sandbox_id: "sb".into(),
            state,
            exit_code,
            reason: String::new(),
            message: String::new(),
            created_at: Some(ts(attempt as u64)),
            started_at: Some(ts(attempt as u64)),
            finished_at: (state == RunState::Exited).then(|| ts(finished)),
            image_ref: "sha256:x".into(),
            restart_count: attempt as i32,
        }
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.start.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_new_pod_gets_a_sandbox_first() {
        let p = plan(
            &pod("Always", &[], &["a"]),
            &Observed::default(),
            &Backoff::default(),
            ts(0),
        );
        assert_eq!(p.create_sandbox, Some(0));
        assert!(p.start.is_empty());
    }

    #[test]
    fn init_containers_run_one_at_a_time_and_sidecars_stay_up() {
        let spec = pod(
            "Always",
            &[("setup", false), ("proxy", true), ("migrate", false)],
            &["app"],
        );
        let mut seen = Observed {
            sandboxes: vec![sandbox()],
            containers: vec![],
        };
        assert_eq!(
            names(&plan(&spec, &seen, &Backoff::default(), ts(0))),
            ["setup"]
        );
        seen.containers
            .push(container("setup", 0, RunState::Running, 0, 0));
        assert!(
            plan(&spec, &seen, &Backoff::default(), ts(0))
                .start
                .is_empty(),
            "waits for setup"
        );
        seen.containers[0] = container("setup", 0, RunState::Exited, 0, 1);
        assert_eq!(
            names(&plan(&spec, &seen, &Backoff::default(), ts(2))),
            ["proxy"]
        );
        seen.containers
            .push(container("proxy", 0, RunState::Running, 0, 0));
        assert_eq!(
            names(&plan(&spec, &seen, &Backoff::default(), ts(2))),
            ["migrate"]
        );
        seen.containers
            .push(container("migrate", 0, RunState::Exited, 0, 3));
        assert_eq!(
            names(&plan(&spec, &seen, &Backoff::default(), ts(4))),
            ["app"]
        );
    }

    #[test]
    fn a_failed_init_container_fails_a_never_pod_and_restarts_otherwise() {
        let seen = Observed {
            sandboxes: vec![sandbox()],
            containers: vec![container("setup", 0, RunState::Exited, 1, 1)],
        };
        let p = plan(
            &pod("Never", &[("setup", false)], &["app"]),
            &seen,
            &Backoff::default(),
            ts(2),
        );
        assert_eq!(p.terminal, Some(Terminal::Failed));
        let p = plan(
            &pod("OnFailure", &[("setup", false)], &["app"]),
            &seen,
            &Backoff::default(),
            ts(2),
        );
        assert_eq!(names(&p), ["setup"]);
        assert_eq!((p.start[0].attempt, p.start[0].restart_count), (1, 1));
    }

    #[test]
    fn restart_policies_and_the_end_of_a_pod() {
        let seen = |code| Observed {
            sandboxes: vec![sandbox()],
            containers: vec![container("a", 0, RunState::Exited, code, 1)],
        };
        let b = Backoff::default();
        assert_eq!(
            names(&plan(&pod("Always", &[], &["a"]), &seen(0), &b, ts(2))),
            ["a"]
        );
        assert_eq!(
            plan(&pod("OnFailure", &[], &["a"]), &seen(0), &b, ts(2)).terminal,
            Some(Terminal::Succeeded)
        );
        assert_eq!(
            names(&plan(&pod("OnFailure", &[], &["a"]), &seen(3), &b, ts(2))),
            ["a"]
        );
        assert_eq!(
            plan(&pod("Never", &[], &["a"]), &seen(3), &b, ts(2)).terminal,
            Some(Terminal::Failed)
        );
        assert_eq!(
            plan(&pod("Never", &[], &["a"]), &seen(0), &b, ts(2)).terminal,
            Some(Terminal::Succeeded)
        );
    }

    #[test]
    fn crash_loops_back_off() {
        let mut backoff = Backoff::default();
        backoff.record_restart("a", ts(0));
        let seen = Observed {
            sandboxes: vec![sandbox()],
            containers: vec![container("a", 1, RunState::Exited, 1, 5)],
        };
        let p = plan(&pod("Always", &[], &["a"]), &seen, &backoff, ts(6));
        assert!(p.start.is_empty());
        assert_eq!(p.backing_off, vec![("a".to_string(), ts(15))]);
        assert_eq!(p.wake_at(), Some(ts(15)));
        let p = plan(&pod("Always", &[], &["a"]), &seen, &backoff, ts(15));
        assert_eq!(names(&p), ["a"]);
        assert_eq!(p.start[0].replaces_finished_at, Some(ts(5)));
    }

    #[test]
    fn a_lost_sandbox_is_recreated_unless_the_pod_is_done() {
        let mut gone = sandbox();
        gone.ready = false;
        let seen = Observed {
            sandboxes: vec![gone.clone()],
            containers: vec![container("a", 0, RunState::Exited, 0, 1)],
        };
        assert_eq!(
            plan(
                &pod("Always", &[], &["a"]),
                &seen,
                &Backoff::default(),
                ts(2)
            )
            .create_sandbox,
            Some(1)
        );
        let p = plan(
            &pod("Never", &[], &["a"]),
            &seen,
            &Backoff::default(),
            ts(2),
        );
        assert_eq!(
            (p.create_sandbox, p.terminal),
            (None, Some(Terminal::Succeeded))
        );
    }

    #[test]
    fn an_active_deadline_ends_the_pod() {
        let mut p = pod("Always", &[], &["a"]);
        p.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(0))),
            ..Default::default()
        });
        let seen = Observed {
            sandboxes: vec![sandbox()],
            containers: vec![container("a", 0, RunState::Running, 0, 0)],
        };
        let early = plan(&p, &seen, &Backoff::default(), ts(10));
        assert_eq!((early.terminal, early.wake_at()), (None, Some(ts(30))));
        let late = plan(&p, &seen, &Backoff::default(), ts(30));
        assert_eq!(late.terminal, Some(Terminal::Failed));
        assert_eq!(
            late.failure.as_ref().map(|f| f.0.as_str()),
            Some("DeadlineExceeded")
        );
        assert_eq!(late.kill, vec!["a-0".to_string()]);
    }

    #[test]
    fn an_ended_pod_stops_its_sidecars() {
        let mut p = pod("Never", &[("proxy", true)], &["a"]);
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        let seen = Observed {
            sandboxes: vec![sandbox()],
            containers: vec![
                container("proxy", 0, RunState::Running, 0, 0),
                container("a", 0, RunState::Exited, 0, 1),
            ],
        };
        let plan = plan(&p, &seen, &Backoff::default(), ts(2));
        assert_eq!(plan.kill, vec!["proxy-0".to_string()]);
    }
}
