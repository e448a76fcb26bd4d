//! Images end to end: layouts built by `hack/images`, a real docker-registry on a free
//! loopback port (stopped by PID when the test ends, pass or fail), pulls by tag and digest,
//! the failure kinds, imports, layer sharing and freeing, and the CRI ImageService over a
//! unix socket with the k8s-cri client. Every test has its own directories and ports.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cri::image::{ImageError, ImageStore, RegistryAuth};
use cri::service::image::CriImages;
use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;

mod support;

use support::{Registry, free_port, layouts, timed};

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("read dir").count()
}

#[tokio::test]
async fn pulls_by_tag_and_digest_share_layers_and_removal_frees_them() {
    timed(async {
        let layouts = layouts();
        let registry = Registry::start(None).expect("registry");
        registry.push(&layouts, "busybox", "busybox:1");
        registry.push(&layouts, "pause", "pause:1");
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let layers = root.path().join("layers");

        let tag = format!("{}/busybox:1", registry.address);
        let busybox = store.pull(&tag, None).await.unwrap();
        assert_eq!(busybox.repo_tags, std::slice::from_ref(&tag));
        let config = busybox.runtime_config().unwrap();
        assert_eq!(config.cmd().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(
            config.env().as_deref(),
            Some(&["PATH=/bin".to_string()][..])
        );
        let rootfs = store.lease("c1", &busybox.id).unwrap();
        assert_eq!(rootfs.len(), 1);
        let sh = std::fs::metadata(rootfs[0].join("bin/sh")).unwrap();
        let busybox_bin = std::fs::metadata(rootfs[0].join("bin/busybox")).unwrap();
        assert_eq!(sh.ino(), busybox_bin.ino(), "applets are hard links");
        store.release("c1").unwrap();

        let by_digest = busybox.repo_digests[0].clone();
        assert!(by_digest.starts_with(&format!("{}/busybox@sha256:", registry.address)));
        let again = store.pull(&by_digest, None).await.unwrap();
        assert_eq!(again.id, busybox.id);
        assert_eq!(store.get(&by_digest).unwrap().id, busybox.id);
        assert_eq!(count(&layers), 1, "one layer, unpacked once");

        let pause = store
            .pull(&format!("{}/pause:1", registry.address), None)
            .await
            .unwrap();
        let pause_config = pause.runtime_config().unwrap();
        assert_eq!(
            pause_config.entrypoint().as_deref(),
            Some(&["/pause".to_string(), "-P".to_string()][..])
        );
        assert_eq!(count(&layers), 2);
        assert_eq!(store.list().len(), 2);

        store.remove(&tag).unwrap();
        assert_eq!(count(&layers), 1, "busybox's layer is freed");
        assert!(store.get(&busybox.id).is_none());
        assert!(
            store.remove(&tag).unwrap().is_none(),
            "removing twice succeeds"
        );
    })
    .await;
}

#[tokio::test]
async fn pull_failures_are_told_apart() {
    timed(async {
        let layouts = layouts();
        let registry = Registry::start(None).expect("registry");
        registry.push(&layouts, "busybox", "busybox:1");
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();

        let missing_tag = store
            .pull(&format!("{}/busybox:nope", registry.address), None)
            .await;
        assert!(
            matches!(missing_tag, Err(ImageError::NotFound { .. })),
            "{missing_tag:?}"
        );
        let missing_repo = store
            .pull(&format!("{}/nothing:1", registry.address), None)
            .await;
        assert!(
            matches!(missing_repo, Err(ImageError::NotFound { .. })),
            "{missing_repo:?}"
        );
        let zeros = format!("sha256:{}", "0".repeat(64));
        let missing_digest = store
            .pull(&format!("{}/busybox@{zeros}", registry.address), None)
            .await;
        assert!(
            matches!(missing_digest, Err(ImageError::NotFound { .. })),
            "{missing_digest:?}"
        );

        let closed = format!("127.0.0.1:{}/busybox:1", free_port());
        let unreachable = store.pull(&closed, None).await;
        assert!(
            matches!(unreachable, Err(ImageError::Unreachable { .. })),
            "{unreachable:?}"
        );

        // Over HTTPS (the rustls provider is set up), a name that never resolves.
        let no_dns = store.pull("registry.invalid/busybox:1", None).await;
        assert!(
            matches!(no_dns, Err(ImageError::Unreachable { .. })),
            "{no_dns:?}"
        );

        let invalid = store.pull("Not A Reference", None).await;
        assert!(
            matches!(invalid, Err(ImageError::InvalidReference { .. })),
            "{invalid:?}"
        );

        assert!(store.list().is_empty());
        assert_eq!(count(&root.path().join("layers")), 0);
        assert_eq!(count(&root.path().join("images/ingest")), 0);
        assert_eq!(count(&root.path().join("images/blobs/sha256")), 0);
    })
    .await;
}

#[tokio::test]
async fn a_registry_with_htpasswd_refuses_wrong_credentials() {
    timed(async {
        let registry = Registry::start(Some(("alice", "s3cret"))).expect(
            "a bcrypt hash for htpasswd (python3's crypt module; hack/test.sh installs python3)",
        );
        registry.push(&layouts(), "busybox", "busybox:1");
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let tag = format!("{}/busybox:1", registry.address);

        let anonymous = store.pull(&tag, None).await;
        assert!(
            matches!(anonymous, Err(ImageError::Unauthorized { .. })),
            "{anonymous:?}"
        );
        let wrong = RegistryAuth {
            username: "alice".into(),
            password: "wrong".into(),
            ..Default::default()
        };
        let refused = store.pull(&tag, Some(&wrong)).await;
        assert!(
            matches!(refused, Err(ImageError::Unauthorized { .. })),
            "{refused:?}"
        );

        let right = RegistryAuth {
            username: "alice".into(),
            password: "s3cret".into(),
            ..Default::default()
        };
        let image = store.pull(&tag, Some(&right)).await.unwrap();
        store.remove(&image.id).unwrap();
        let encoded = RegistryAuth {
            auth: "YWxpY2U6czNjcmV0".into(), // base64 of alice:s3cret
            ..Default::default()
        };
        assert_eq!(store.pull(&tag, Some(&encoded)).await.unwrap().id, image.id);
    })
    .await;
}

#[tokio::test]
async fn imports_oci_layouts_and_docker_archives_sharing_layers() {
    timed(async {
        let layouts = layouts();
        let work = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();

        let from_layout = store.import(&layouts.join("busybox")).await.unwrap();
        assert_eq!(from_layout.len(), 1);
        assert_eq!(from_layout[0].repo_tags, ["docker.io/library/busybox:1"]);
        assert!(store.get("busybox:1").is_some());

        let archive = work.path().join("busybox.tar");
        let status = Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!(
                "oci:{}:busybox:1",
                layouts.join("busybox").display()
            ))
            .arg(format!(
                "docker-archive:{}:example.com/tools/busybox:2",
                archive.display()
            ))
            .status()
            .unwrap();
        assert!(status.success(), "skopeo docker-archive export failed");
        let from_archive = store.import(&archive).await.unwrap();
        assert_eq!(from_archive.len(), 1);
        let imported = store.get("example.com/tools/busybox:2").unwrap();
        assert_eq!(
            imported.layers[0].chain_id, from_layout[0].layers[0].chain_id,
            "the same layer, whether gzip from the layout or plain from the archive"
        );
        assert_eq!(count(&root.path().join("layers")), 1);

        // A tar of a layout, and a preload directory with both kinds.
        let preload = work.path().join("preload");
        std::fs::create_dir(&preload).unwrap();
        let status = Command::new("tar")
            .arg("-C")
            .arg(layouts.join("pause"))
            .arg("-cf")
            .arg(preload.join("pause.tar"))
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::rename(&archive, preload.join("busybox.tar")).unwrap();
        std::fs::write(preload.join("README"), "not an image").unwrap();
        let preloaded = store.import_dir(&preload).await.unwrap();
        assert_eq!(preloaded.len(), 2);
        assert!(store.get("pause:1").is_some());
        assert_eq!(count(&root.path().join("layers")), 2);
        assert!(
            store
                .import_dir(&work.path().join("absent"))
                .await
                .unwrap()
                .is_empty()
        );

        let not_an_image = store.import(&preload.join("README")).await;
        assert!(
            matches!(not_an_image, Err(ImageError::InvalidContent { .. })),
            "{not_an_image:?}"
        );
        assert_eq!(count(&root.path().join("images/ingest")), 0);

        for image in store.list() {
            store.remove(&image.id).unwrap();
        }
        assert_eq!(count(&root.path().join("layers")), 0);
        assert_eq!(count(&root.path().join("images/blobs/sha256")), 0);
    })
    .await;
}

/// Serves the ImageService over a unix socket in `dir` and returns a client of it.
async fn serve(
    store: Arc<ImageStore>,
    dir: &Path,
) -> ImageServiceClient<tonic::transport::Channel> {
    let socket = dir.join("cri.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CriImages::new(store).into_server())
            .serve_with_incoming(incoming),
    );
    let channel = support::unix_channel(&socket).await;
    ImageServiceClient::new(channel)
}

fn spec(image: &str) -> Option<api::ImageSpec> {
    Some(api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

#[tokio::test]
async fn the_image_service_answers_over_a_unix_socket() {
    timed(async {
        let layouts = layouts();
        let registry = Registry::start(None).expect("registry");
        registry.push(&layouts, "busybox", "busybox:1");
        let root = tempfile::tempdir().unwrap();
        let sockets = tempfile::tempdir().unwrap();
        let store = Arc::new(ImageStore::open(root.path()).unwrap());
        let mut client = serve(store.clone(), sockets.path()).await;
        let tag = format!("{}/busybox:1", registry.address);

        let pulled = client
            .pull_image(api::PullImageRequest {
                image: spec(&tag),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");

        let listed = client
            .list_images(api::ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.images.len(), 1);
        let image = &listed.images[0];
        assert_eq!(image.id, pulled.image_ref);
        assert_eq!(image.repo_tags, std::slice::from_ref(&tag));
        assert!(image.size > 1_000_000, "{image:?}");
        let filtered = client
            .list_images(api::ListImagesRequest {
                filter: Some(api::ImageFilter {
                    image: spec("other:1"),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(filtered.images.is_empty());

        let status = client
            .image_status(api::ImageStatusRequest {
                image: spec(&tag),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.image.as_ref().map(|i| &i.id),
            Some(&pulled.image_ref)
        );
        let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
        assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");
        let missing = client
            .image_status(api::ImageStatusRequest {
                image: spec("missing:1"),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(missing.image.is_none(), "a missing image is no error");

        let fs = client
            .image_fs_info(api::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let usage = &fs.image_filesystems[0];
        assert!(
            usage.used_bytes.as_ref().unwrap().value > 1_000_000,
            "{usage:?}"
        );
        assert!(usage.inodes_used.as_ref().unwrap().value > 3);
        assert!(!usage.fs_id.as_ref().unwrap().mountpoint.is_empty());

        let not_found = client
            .pull_image(api::PullImageRequest {
                image: spec(&format!("{}/busybox:missing", registry.address)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(not_found.code(), tonic::Code::NotFound, "{not_found:?}");
        assert!(
            not_found.message().contains("busybox:missing"),
            "{not_found:?}"
        );
        let invalid = client
            .pull_image(api::PullImageRequest {
                image: spec("busybox:-bad"),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), tonic::Code::InvalidArgument, "{invalid:?}");

        for _ in 0..2 {
            client
                .remove_image(api::RemoveImageRequest {
                    image: spec(&pulled.image_ref),
                })
                .await
                .unwrap();
        }
        assert!(store.list().is_empty());
        assert_eq!(count(&root.path().join("layers")), 0);
    })
    .await;
}

#[tokio::test]
async fn cri_import_refuses_a_store_the_runtime_holds() {
    timed(async {
        let layouts = layouts();
        let root = tempfile::tempdir().unwrap();
        let paths = [layouts.join("pause")];
        let running = ImageStore::open(root.path()).unwrap();
        let refused = cri::image::import_offline(root.path(), Default::default(), &paths).await;
        assert!(
            matches!(refused, Err(ImageError::Locked { .. })),
            "{refused:?}"
        );
        drop(running);
        let imported = cri::image::import_offline(root.path(), Default::default(), &paths)
            .await
            .unwrap();
        assert_eq!(imported[0].repo_tags, ["docker.io/library/pause:1"]);
        assert!(
            ImageStore::open(root.path())
                .unwrap()
                .get("pause:1")
                .is_some()
        );
    })
    .await;
}

#[tokio::test]
async fn a_layout_with_a_corrupt_blob_is_refused_and_leaves_nothing() {
    timed(async {
        let layouts = layouts();
        let work = tempfile::tempdir().unwrap();
        let copy = work.path().join("busybox");
        let status = Command::new("cp")
            .arg("-r")
            .arg(layouts.join("busybox"))
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        // The largest blob is the layer; corrupt it.
        let blobs = copy.join("blobs/sha256");
        let layer = std::fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        std::fs::write(&layer, b"not the layer").unwrap();

        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let refused = store.import(&copy).await;
        assert!(
            matches!(refused, Err(ImageError::DigestMismatch { .. })),
            "{refused:?}"
        );
        assert!(store.list().is_empty());
        assert_eq!(count(&root.path().join("images/blobs/sha256")), 0);
        assert_eq!(count(&root.path().join("images/ingest")), 0);
        assert_eq!(count(&root.path().join("layers")), 0);
    })
    .await;
}

/// Builds an OCI layout at `dir` whose one entry (`multi:1`) is an index of busybox for this
/// machine's architecture and pause labelled as s390x; returns the index digest.
fn multi_platform_layout(layouts: &Path, dir: &Path) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut entries = Vec::new();
    let this_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for (name, arch) in [("pause", "s390x"), ("busybox", this_arch)] {
        let layout = layouts.join(name);
        for blob in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
            let blob = blob.unwrap();
            std::fs::copy(blob.path(), blobs.join(blob.file_name())).unwrap();
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let mut entry = index["manifests"][0].clone();
        entry.as_object_mut().unwrap().remove("annotations");
        entry["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        entries.push(entry);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let digest = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&index)))
    };
    std::fs::write(blobs.join(&digest["sha256:".len()..]), &index).unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi:1"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    digest
}

#[tokio::test]
async fn indexes_yield_the_image_for_this_platform_from_registries_and_layouts() {
    timed(async {
        let layouts = layouts();
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("multi");
        let index_digest = multi_platform_layout(&layouts, &layout);
        let registry = Registry::start(None).expect("registry");
        let status = Command::new("skopeo")
            .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:multi:1", layout.display()))
            .arg(format!("docker://{}/multi:1", registry.address))
            .status()
            .unwrap();
        assert!(status.success(), "skopeo push of the index failed");

        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let pulled = store
            .pull(&format!("{}/multi:1", registry.address), None)
            .await
            .unwrap();
        let cmd = pulled.runtime_config().and_then(|c| c.cmd().clone());
        assert_eq!(cmd, Some(vec!["sh".to_string()]), "busybox, not pause");
        assert_eq!(
            pulled.repo_digests,
            [format!("{}/multi@{index_digest}", registry.address)],
            "the repo digest is the index's"
        );
        assert_ne!(pulled.manifest_digest, index_digest);

        let imported = store.import(&layout).await.unwrap();
        assert_eq!(imported[0].id, pulled.id);
        let both = [
            format!("{}/multi:1", registry.address),
            "docker.io/library/multi:1".to_string(),
        ];
        assert_eq!(imported[0].repo_tags, both, "one image, named both ways");
        assert_eq!(count(&root.path().join("layers")), 1);
    })
    .await;
}
