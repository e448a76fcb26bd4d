//! Pods whose images name Docker Hub and registry.k8s.io run offline through mirrors: the
//! node's registry serves `library/busybox:latest` and `pause:3.10`, and the runtime's
//! registries file (written after the runtime started, so read on change) sends `docker.io`
//! and `registry.k8s.io` there. Two pods pulling busybox at once download its blobs once.

use std::time::Duration;

use e2e::cri::layouts;
use e2e::node::TestNode;
use e2e::{ApiServer, wait_until};

#[test]
fn busybox_and_registry_k8s_io_pause_run_through_mirrors() {
    let api = ApiServer::start().expect("apiserver-lite");
    let node = TestNode::start(&api);
    node.registry
        .push(&layouts(), "busybox", "library/busybox:latest");
    node.registry.push(&layouts(), "pause", "pause:3.10");
    let local = format!("http://{}", node.registry.address);
    std::fs::write(
        node.cri.registries(),
        format!(
            "mirrors:\n  docker.io:\n    endpoint: [\"{local}\"]\n  registry.k8s.io:\n    endpoint: [\"{local}\"]\n"
        ),
    )
    .expect("write the registries file");

    let mut pods = String::new();
    for (name, image, command) in [
        ("hub-a", "busybox", "    command: [sleep, '3600']\n"),
        ("hub-b", "busybox", "    command: [sleep, '3600']\n"),
        ("pause", "registry.k8s.io/pause:3.10", ""),
    ] {
        pods.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {image}\n{command}"
        ));
    }
    api.apply(&pods);
    for name in ["hub-a", "hub-b", "pause"] {
        wait_until(&format!("{name} to run"), Duration::from_secs(60), || {
            api.jsonpath(&["pod", name], "{.status.phase}") == "Running"
        });
    }
    let image_id = api.jsonpath(&["pod", "hub-a"], "{.status.containerStatuses[0].imageID}");
    assert!(image_id.contains("sha256:"), "{image_id}");
    let pause_image = api.jsonpath(&["pod", "pause"], "{.status.containerStatuses[0].image}");
    assert!(
        pause_image.contains("registry.k8s.io/pause:3.10"),
        "{pause_image}"
    );
    assert_eq!(
        node.registry.requests("GET /v2/library/busybox/blobs/"),
        2,
        "busybox's config and layer are downloaded once for both pods"
    );
    assert_eq!(node.registry.requests("GET /v2/pause/manifests/3.10"), 1);
}
