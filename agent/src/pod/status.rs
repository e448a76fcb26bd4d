//! The pod status kubelet would report, computed from the pod, what the runtime holds, the
//! worker's plan and the errors it met (image pulls, configs): phase as upstream's getPhase
//! decides it, the five conditions, container and init container statuses with state,
//! lastState, ready, started, restart count, image and ids. Pure.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::{Observed, ObservedContainer, Plan, RunState, Terminal, is_sidecar};

/// What the worker knows beyond the runtime.
#[derive(Debug, Clone, Copy)]
pub struct StatusInput<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// What the runtime holds.
    pub observed: &'a Observed,
    /// The last plan.
    pub plan: &'a Plan,
    /// Waiting reasons and messages from errors the worker met, by container name.
    pub waiting: &'a BTreeMap<String, (String, String)>,
    /// Readiness by container name (probes); containers without a readiness probe are ready
    /// once running.
    pub readiness: &'a BTreeMap<String, bool>,
    /// Startup by container name (startup probes); containers without one have started once
    /// running.
    pub started: &'a BTreeMap<String, bool>,
    /// The node's address.
    pub host_ip: &'a str,
    /// The runtime's name, the containerID scheme (`containerd://...`).
    pub runtime_name: &'a str,
    /// Now.
    pub now: Timestamp,
}

fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(Time)
}

fn terminated(c: &ObservedContainer, runtime: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: c.exit_code,
        reason: Some(if c.reason.is_empty() {
            if c.exit_code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            }
        } else {
            c.reason.clone()
        }),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        started_at: time(c.started_at),
        finished_at: time(c.finished_at),
        container_id: Some(format!("{runtime}://{}", c.id)),
        signal: None,
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

fn container_status(
    input: &StatusInput<'_>,
    spec: &Container,
    initializing: bool,
) -> ContainerStatus {
    let observed = input.observed;
    let latest = observed.latest(&spec.name);
    let previous = observed.previous(&spec.name);
    let runtime = input.runtime_name;
    let backoff_until = input
        .plan
        .backing_off
        .iter()
        .find(|(n, _)| *n == spec.name)
        .map(|(_, t)| *t);
    let (state, last) = match latest {
        Some(c) if c.state == RunState::Running => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(c.started_at),
                }),
                ..Default::default()
            },
            previous.map(|p| terminated(p, runtime)),
        ),
        Some(c) if matches!(c.state, RunState::Exited | RunState::Unknown) => {
            if let Some((reason, message)) = input.waiting.get(&spec.name) {
                (
                    waiting(reason, Some(message.clone())),
                    Some(terminated(c, runtime)),
                )
            } else if backoff_until.is_some() {
                let wait = backoff_until
                    .map(|t| t.duration_since(c.finished_at.unwrap_or(input.now)))
                    .unwrap_or_default();
                let message = format!(
                    "back-off {}s restarting failed container={} pod={}_{}({})",
                    wait.as_secs().max(0),
                    spec.name,
                    input.pod.metadata.name.as_deref().unwrap_or_default(),
                    input.pod.metadata.namespace.as_deref().unwrap_or_default(),
                    input.pod.metadata.uid.as_deref().unwrap_or_default()
                );
                (
                    waiting("CrashLoopBackOff", Some(message)),
                    Some(terminated(c, runtime)),
                )
            } else {
                (
                    ContainerState {
                        terminated: Some(terminated(c, runtime)),
                        ..Default::default()
                    },
                    previous.map(|p| terminated(p, runtime)),
                )
            }
        }
        _ => {
            let (reason, message) = input
                .waiting
                .get(&spec.name)
                .cloned()
                .map(|(r, m)| (r, Some(m)))
                .unwrap_or_else(|| {
                    (
                        (if initializing {
                            "PodInitializing"
                        } else {
                            "ContainerCreating"
                        })
                        .into(),
                        None,
                    )
                });
            (
                waiting(&reason, message),
                latest
                    .filter(|c| c.state != RunState::Created)
                    .map(|c| terminated(c, runtime)),
            )
        }
    };
    let running = state.running.is_some();
    let ready = running && input.readiness.get(&spec.name).copied().unwrap_or(true);
    ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: latest.map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|c| format!("{runtime}://{}", c.id)),
        ready,
        started: Some(running && input.started.get(&spec.name).copied().unwrap_or(true)),
        restart_count: latest.map_or(0, |c| c.restart_count),
        last_state: last.map(|t| ContainerState {
            terminated: Some(t),
            ..Default::default()
        }),
        state: Some(state),
        ..Default::default()
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    previous: Option<&PodStatus>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let old = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        last_transition_time,
        ..Default::default()
    }
}

/// The status.
pub fn pod_status(input: &StatusInput<'_>) -> PodStatus {
    let pod = input.pod;
    let previous = pod.status.as_ref();
    let spec = pod.spec.clone().unwrap_or_default();
    let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
    let init_done = |c: &Container| {
        let latest = input.observed.latest_in_current(&c.name);
        if is_sidecar(c) {
            latest.is_some_and(|l| l.state == RunState::Running)
        } else {
            latest.is_some_and(|l| {
                matches!(l.state, RunState::Exited | RunState::Unknown) && l.exit_code == 0
            })
        }
    };
    let initialized = inits.iter().all(init_done);
    let init_statuses: Vec<ContainerStatus> = inits
        .iter()
        .map(|c| {
            let mut s = container_status(input, c, false);
            if !is_sidecar(c) {
                s.ready = s
                    .state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .is_some_and(|t| t.exit_code == 0);
            }
            s
        })
        .collect();
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(input, c, !initialized))
        .collect();

    let sandbox = input.observed.current_sandbox().filter(|s| s.ready);
    let phase = match input.plan.terminal {
        Some(Terminal::Succeeded) => "Succeeded",
        Some(Terminal::Failed) => "Failed",
        None => phase_of(
            &spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            initialized,
            &statuses,
        ),
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let containers_ready = statuses.iter().all(|s| s.ready);
    let completed = terminal.then_some("PodCompleted");
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            sandbox.is_some(),
            None,
            previous,
            input.now,
        ),
        condition(
            "Initialized",
            initialized || terminal,
            if initialized || terminal {
                None
            } else {
                Some("ContainersNotInitialized")
            },
            previous,
            input.now,
        ),
        condition(
            "Ready",
            containers_ready && !terminal,
            completed.or((!containers_ready).then_some("ContainersNotReady")),
            previous,
            input.now,
        ),
        condition(
            "ContainersReady",
            containers_ready && !terminal,
            completed.or((!containers_ready).then_some("ContainersNotReady")),
            previous,
            input.now,
        ),
        condition("PodScheduled", true, None, previous, input.now),
    ];
    let host_network = spec.host_network == Some(true);
    let pod_ip = if host_network {
        Some(input.host_ip.to_string())
    } else {
        sandbox
            .map(|s| s.ip.clone())
            .filter(|ip| !ip.is_empty())
            .or_else(|| previous.and_then(|p| p.pod_ip.clone()))
    };
    PodStatus {
        phase: Some(phase.into()),
        reason: input
            .plan
            .failure
            .as_ref()
            .map(|f| f.0.clone())
            .or_else(|| previous.and_then(|p| p.reason.clone())),
        message: input
            .plan
            .failure
            .as_ref()
            .map(|f| f.1.clone())
            .or_else(|| previous.and_then(|p| p.message.clone())),
        conditions: Some(conditions),
        host_ip: Some(input.host_ip.into()),
        host_ips: Some(vec![HostIP {
            ip: input.host_ip.into(),
        }]),
        pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        pod_ip,
        start_time: previous
            .and_then(|p| p.start_time.clone())
            .or(Some(Time(input.now))),
        qos_class: Some(super::config::qos_class(pod).into()),
        container_statuses: Some(statuses),
        init_container_statuses: (!inits.is_empty()).then_some(init_statuses),
        ..Default::default()
    }
}

/// Upstream's phase rules for a pod that has not ended by the plan's judgement.
fn phase_of(policy: &str, initialized: bool, statuses: &[ContainerStatus]) -> &'static str {
    if !initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut failed) = (0, 0, 0, 0);
    for s in statuses {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = state.terminated {
            stopped += 1;
            failed += usize::from(t.exit_code != 0);
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match policy {
            "Always" => "Running",
            "OnFailure" if failed > 0 => "Running",
            "Never" if failed > 0 => "Failed",
            _ => "Succeeded",
        };
    }
    "Pending"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::plan::ObservedSandbox;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "a", "image": "busybox"}], "restartPolicy": "Always"}
        }))
        .unwrap()
    }

    fn observed(state: RunState, exit: i32) -> Observed {
        Observed {
            sandboxes: vec![ObservedSandbox {
                id: "sb".into(),
                attempt: 0,
                ready: true,
                created_at: 1,
                ip: "10.1.0.4".into(),
            }],
            containers: vec![ObservedContainer {
                id: "c1".into(),
                name: "a".into(),
                attempt: 0,
                sandbox_id: "sb".into(),
                state,
                exit_code: exit,
                reason: String::new(),
                message: String::new(),
                created_at: Some(Timestamp::from_second(100).unwrap()),
                started_at: Some(Timestamp::from_second(100).unwrap()),
                finished_at: (state == RunState::Exited)
                    .then(|| Timestamp::from_second(110).unwrap()),
                image_ref: "sha256:abc".into(),
                restart_count: 0,
            }],
        }
    }

    fn status(pod: &Pod, observed: &Observed, plan: &Plan) -> PodStatus {
        pod_status(&StatusInput {
            pod,
            observed,
            plan,
            waiting: &BTreeMap::new(),
            readiness: &BTreeMap::new(),
            started: &BTreeMap::new(),
            host_ip: "192.0.2.1",
            runtime_name: "cri-lite",
            now: Timestamp::from_second(120).unwrap(),
        })
    }

    #[test]
    fn a_running_container_makes_a_ready_running_pod() {
        let s = status(&pod(), &observed(RunState::Running, 0), &Plan::default());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.1.0.4"));
        let cs = &s.container_statuses.unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("cri-lite://c1"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn a_crash_loop_waits_with_the_last_termination() {
        let plan = Plan {
            backing_off: vec![("a".into(), Timestamp::from_second(130).unwrap())],
            ..Default::default()
        };
        let s = status(&pod(), &observed(RunState::Exited, 1), &plan);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses.unwrap()[0];
        let waiting = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        assert!(
            waiting
                .message
                .as_deref()
                .unwrap()
                .starts_with("back-off 20s restarting failed container=a pod=web_default(u1)")
        );
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
    }

    #[test]
    fn nothing_started_is_pending_container_creating() {
        let mut seen = observed(RunState::Running, 0);
        seen.containers.clear();
        let s = status(&pod(), &seen, &Plan::default());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
    }

    #[test]
    fn an_ended_pod_reports_completion() {
        let plan = Plan {
            terminal: Some(Terminal::Succeeded),
            ..Default::default()
        };
        let s = status(&pod(), &observed(RunState::Exited, 0), &plan);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
    }
}
