//! Jobs end to end on a real node: apiserver-lite with its scheduler and Job controller, our
//! `cri` running busybox through runc, and the `agent`. Jobs created with real `kubectl` run
//! to completion (NonIndexed, Indexed with `JOB_COMPLETION_INDEX`), fail on their backoff
//! limit or deadline, wait while suspended, and go away after their TTL; a podFailurePolicy
//! fails a job at once on a fatal exit code or ignores an expected one.

use std::time::Duration;

use e2e::node::TestNode;
use e2e::{ApiServer, wait_until};

fn job(name: &str, image: &str, spec: &str, command: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: default}}
spec:
{spec}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: [sh, -c, '{command}']
"
    )
}

fn condition(api: &ApiServer, name: &str, kind: &str, field: &str) -> String {
    api.jsonpath(
        &["job", name],
        &format!("{{.status.conditions[?(@.type==\"{kind}\")].{field}}}"),
    )
}

#[test]
fn jobs_run_to_completion_fail_on_limits_suspend_and_expire() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    let image = node.image.clone();
    node.wait_ready(&api);

    // kubectl's own generator: one pod, runs once, logs readable through the job.
    api.kubectl(&[
        "create",
        "job",
        "hello",
        "--image",
        &image,
        "--",
        "sh",
        "-c",
        "echo hello-from-job",
    ])
    .ok();
    // Indexed, two at a time: each pod sees its index.
    api.apply(&job(
        "indexed",
        &image,
        "  completions: 3\n  parallelism: 2\n  completionMode: Indexed",
        "echo index=$JOB_COMPLETION_INDEX host=$(hostname)",
    ));
    // Fails every time: one retry after the 10 s back-off, then BackoffLimitExceeded.
    api.apply(&job("failing", &image, "  backoffLimit: 1", "exit 3"));
    // Runs past its deadline.
    api.apply(&job(
        "slow",
        &image,
        "  activeDeadlineSeconds: 3",
        "sleep 60",
    ));
    // Suspended at creation: no pod until resumed.
    api.apply(&job("later", &image, "  suspend: true", "echo resumed"));
    // Deleted (with its pod) as soon as it finished.
    api.apply(&job(
        "ephemeral",
        &image,
        "  ttlSecondsAfterFinished: 0",
        "true",
    ));

    api.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "job/indexed",
        "--timeout=90s",
    ])
    .ok();
    assert_eq!(api.jsonpath(&["job", "hello"], "{.status.succeeded}"), "1");
    assert_eq!(
        api.kubectl(&["logs", "job/hello"]).ok().trim(),
        "hello-from-job"
    );
    assert!(
        !api.jsonpath(&["job", "hello"], "{.status.completionTime}")
            .is_empty()
    );
    // Counted pods lose the tracking finalizer and stay as Completed pods.
    let finalizers = api.jsonpath(
        &["pods", "-l", "job-name=hello"],
        "{.items[*].metadata.finalizers}",
    );
    assert!(!finalizers.contains("job-tracking"), "{finalizers}");
    assert_eq!(
        api.jsonpath(&["job", "indexed"], "{.status.completedIndexes}"),
        "0-2"
    );
    assert_eq!(
        api.jsonpath(&["job", "indexed"], "{.status.succeeded}"),
        "3"
    );
    let pods = api.jsonpath(
        &["pods", "-l", "job-name=indexed"],
        "{range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    );
    let mut seen: Vec<String> = pods
        .lines()
        .map(|pod| api.kubectl(&["logs", pod]).ok().trim().to_string())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "index=0 host=indexed-0",
            "index=1 host=indexed-1",
            "index=2 host=indexed-2"
        ]
    );

    api.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/slow",
        "--timeout=60s",
    ])
    .ok();
    assert_eq!(
        condition(&api, "slow", "Failed", "reason"),
        "DeadlineExceeded"
    );
    wait_until("the slow job's pod to go", Duration::from_secs(30), || {
        api.jsonpath(&["pods", "-l", "job-name=slow"], "{.items[*].status.phase}")
            .split_whitespace()
            .all(|p| p == "Failed" || p == "Succeeded")
    });

    api.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/failing",
        "--timeout=90s",
    ])
    .ok();
    assert_eq!(
        condition(&api, "failing", "Failed", "reason"),
        "BackoffLimitExceeded"
    );
    assert_eq!(api.jsonpath(&["job", "failing"], "{.status.failed}"), "2");
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=failing",
    ]);
    assert!(events.ok().contains("BackoffLimitExceeded"));

    assert_eq!(
        api.jsonpath(
            &["pods", "-l", "job-name=later"],
            "{.items[*].metadata.name}"
        ),
        ""
    );
    assert_eq!(condition(&api, "later", "Suspended", "status"), "True");
    api.kubectl(&[
        "patch",
        "job",
        "later",
        "-p",
        "{\"spec\":{\"suspend\":false}}",
    ])
    .ok();
    api.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/later",
        "--timeout=60s",
    ])
    .ok();
    assert_eq!(
        condition(&api, "later", "Suspended", "reason"),
        "JobResumed"
    );

    // Deleted in the background: the garbage collector takes its pods, and the controller
    // releases their tracking finalizers although their job is gone.
    api.kubectl(&["delete", "job", "indexed"]).ok();
    wait_until(
        "the indexed job's pods to be gone",
        Duration::from_secs(30),
        || {
            api.jsonpath(
                &["pods", "-l", "job-name=indexed"],
                "{.items[*].metadata.name}",
            )
            .is_empty()
        },
    );

    wait_until(
        "the TTL to delete the finished job",
        Duration::from_secs(60),
        || !api.kubectl(&["get", "job", "ephemeral"]).success(),
    );
    wait_until("its pod to be collected", Duration::from_secs(30), || {
        api.jsonpath(
            &["pods", "-l", "job-name=ephemeral"],
            "{.items[*].metadata.name}",
        )
        .is_empty()
    });
}

#[test]
fn cronjobs_start_jobs_on_schedule_and_keep_their_history() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    let image = node.image.clone();
    api.kubectl(&[
        "create",
        "cronjob",
        "tick",
        "--image",
        &image,
        "--schedule",
        "* * * * *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ])
    .ok();
    let uid = api.jsonpath(&["cronjob", "tick"], "{.metadata.uid}");
    // Four finished runs from "earlier": one more than the default history of 3.
    for (i, minute) in ["10", "11", "12", "13"].iter().enumerate() {
        api.apply(&format!(
            "apiVersion: batch/v1
kind: Job
metadata:
  name: old-{i}
  namespace: default
  ownerReferences:
  - {{apiVersion: batch/v1, kind: CronJob, name: tick, uid: {uid}, controller: true}}
spec:
  suspend: true
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: main, image: {image}}}]
"
        ));
        let status = format!(
            "{{\"status\":{{\"startTime\":\"2026-01-01T10:{minute}:00Z\",\
             \"completionTime\":\"2026-01-01T10:{minute}:01Z\",\"succeeded\":1,\
             \"conditions\":[{{\"type\":\"Complete\",\"status\":\"True\"}}]}}}}"
        );
        api.kubectl(&[
            "patch",
            "job",
            &format!("old-{i}"),
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .ok();
    }
    wait_until(
        "the oldest finished job to be pruned",
        Duration::from_secs(20),
        || !api.kubectl(&["get", "job", "old-0"]).success(),
    );
    assert!(api.kubectl(&["get", "job", "old-1"]).success());

    // The first scheduled run: at most a minute away.
    wait_until("a scheduled run", Duration::from_secs(70), || {
        !api.jsonpath(&["cronjob", "tick"], "{.status.lastScheduleTime}")
            .is_empty()
    });
    let last = api.jsonpath(&["cronjob", "tick"], "{.status.lastScheduleTime}");
    let scheduled: jiff::Timestamp = last.parse().expect("lastScheduleTime");
    assert_eq!(scheduled.as_second() % 60, 0, "{last}");
    let name = format!("tick-{}", scheduled.as_second() / 60);
    assert_eq!(
        api.jsonpath(
            &["job", &name],
            "{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}"
        ),
        last.replace('Z', "+00:00")
    );
    api.kubectl(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ])
    .ok();
    assert_eq!(
        api.kubectl(&["logs", &format!("job/{name}")]).ok().trim(),
        "tick"
    );
    wait_until(
        "the run to count as the last success",
        Duration::from_secs(20),
        || {
            api.jsonpath(&["cronjob", "tick"], "{.status.lastSuccessfulTime}")
                .as_str()
                > "2026-01-01T10:13:01Z"
                && api
                    .jsonpath(&["cronjob", "tick"], "{.status.active}")
                    .is_empty()
        },
    );
    // History still 3: the next oldest went.
    wait_until("history to stay at three", Duration::from_secs(20), || {
        !api.kubectl(&["get", "job", "old-1"]).success()
    });
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=tick",
    ]);
    let events = events.ok();
    assert!(
        events.contains("SuccessfulCreate") && events.contains("SawCompletedJob"),
        "{events}"
    );
}

#[test]
fn pod_failure_policy_fails_at_once_or_ignores_failures() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    let image = node.image.clone();
    node.wait_ready(&api);

    // Exit code 42 is fatal: the job fails with the first pod, whatever the backoff limit.
    api.apply(&job(
        "fatal",
        &image,
        "  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes: {containerName: main, operator: In, values: [42]}",
        "exit 42",
    ));
    // Exit code 3 is ignored: with backoffLimit 0 the job keeps replacing its pod.
    api.apply(&job(
        "ignoring",
        &image,
        "  backoffLimit: 0
  podFailurePolicy:
    rules:
    - action: Ignore
      onExitCodes: {operator: In, values: [3]}",
        "sleep 1; exit 3",
    ));

    wait_until("fatal Failed", Duration::from_secs(60), || {
        condition(&api, "fatal", "Failed", "status") == "True"
    });
    assert_eq!(
        condition(&api, "fatal", "Failed", "reason"),
        "PodFailurePolicy"
    );
    let message = condition(&api, "fatal", "Failed", "message");
    assert!(
        message.starts_with("Container main for pod default/fatal-")
            && message.ends_with("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );
    let fatal_pods = api.kubectl(&["get", "pods", "-l", "job-name=fatal", "-o", "name"]);
    assert_eq!(fatal_pods.ok().lines().count(), 1, "{}", fatal_pods.ok());

    wait_until(
        "the ignoring job's third pod",
        Duration::from_secs(90),
        || {
            api.kubectl(&["get", "pods", "-l", "job-name=ignoring", "-o", "name"])
                .ok()
                .lines()
                .count()
                >= 3
        },
    );
    let failed = api.jsonpath(&["job", "ignoring"], "{.status.failed}");
    assert!(
        matches!(failed.as_str(), "" | "0"),
        "ignored failures are not counted: {failed}"
    );
    assert_eq!(condition(&api, "ignoring", "Failed", "status"), "");
    api.kubectl(&["delete", "job", "fatal", "ignoring", "--wait=false"])
        .ok();
}
