//! Image pull secrets end to end: apiserver-lite, our `cri` and the `agent`, with a
//! docker-registry that requires htpasswd credentials in the node's network namespace. A pod
//! without credentials waits in ErrImagePull / ImagePullBackOff with the runtime's message; a
//! pod naming a `kubernetes.io/dockerconfigjson` secret runs; a pod whose ServiceAccount
//! names the secret runs too.

use std::time::Duration;

use e2e::cri::{Registry, layouts};
use e2e::node::TestNode;
use e2e::{ApiServer, wait_until};

fn pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  terminationGracePeriodSeconds: 2
{extra}
  containers:
  - name: main
    image: {image}
    command: [sleep, '3600']
"
    )
}

fn waiting_reason(api: &ApiServer, name: &str) -> String {
    api.jsonpath(
        &["pod", name],
        "{.status.containerStatuses[0].state.waiting.reason}",
    )
}

#[test]
fn pull_secrets_from_the_pod_or_its_service_account_open_a_private_registry() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    let private = Registry::start_in(Some(&node.cri.netns.path()), Some(("alice", "s3cret")))
        .expect("a bcrypt hash for htpasswd (python3's crypt module)");
    for name in ["denied", "own", "inherited"] {
        private.push(&layouts(), "busybox", &format!("{name}/busybox:1"));
    }
    let image = |name: &str| format!("{}/{name}/busybox:1", private.address);

    // No credentials: ErrImagePull with the registry's answer, then back-off.
    api.apply(&pod("denied", &image("denied"), ""));
    wait_until("denied to back off", Duration::from_secs(40), || {
        waiting_reason(&api, "denied") == "ImagePullBackOff"
    });
    let message = api.jsonpath(
        &["pod", "denied"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        message.contains(&image("denied"))
            && message.contains("ErrImagePull: pulling")
            && message.contains("not authorized")
            && message.contains("401 Unauthorized")
            && message.contains(&format!("via http://{}", private.address)),
        "{message}"
    );
    wait_until(
        "the Failed event of the pull",
        Duration::from_secs(20),
        || {
            api.kubectl(&[
                "get",
                "events",
                "-o",
                "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
            ])
            .stdout
            .lines()
            .any(|e| e.starts_with("Failed: Failed to pull image") && e.contains("401"))
        },
    );

    // A dockerconfigjson secret named by the pod (a missing one beside it is skipped).
    api.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", private.address),
        "--docker-username=alice",
        "--docker-password=s3cret",
    ])
    .ok();
    api.apply(&pod(
        "own",
        &image("own"),
        "  imagePullSecrets: [{name: not-there}, {name: regcred}]",
    ));
    wait_until("own to run", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "own"], "{.status.phase}") == "Running"
    });

    // The same secret through the namespace's default ServiceAccount.
    wait_until(
        "the default ServiceAccount",
        Duration::from_secs(30),
        || api.kubectl(&["get", "serviceaccount", "default"]).success(),
    );
    api.kubectl(&[
        "patch",
        "serviceaccount",
        "default",
        "-p",
        r#"{"imagePullSecrets":[{"name":"regcred"}]}"#,
    ])
    .ok();
    api.apply(&pod("inherited", &image("inherited"), ""));
    wait_until("inherited to run", Duration::from_secs(60), || {
        api.jsonpath(&["pod", "inherited"], "{.status.phase}") == "Running"
    });
    let log = node.agent_log();
    assert!(
        log.contains("not-there") && log.contains("image pull secret not found"),
        "the missing secret is reported"
    );
    assert!(
        !log.contains("s3cret"),
        "the password never reaches the log"
    );
}
