//! The registries file end to end against real docker-registry processes: Docker Hub and
//! registry.k8s.io names served by a local mirror (the image keeps the name asked for), a
//! dead first mirror falling through to the next, a rewrite rule, credentials and a private
//! CA from the file, a TLS registry with its own CA taking the pull request's credentials (as
//! the agent sends pull secrets), client certificates for a registry that requires them, a
//! file edit taking effect without reopening the store, and concurrent pulls of one image
//! downloading once (counted in the registry's access log).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cri::image::{ImageError, ImageStore, RegistriesFile, StoreOptions};
use e2e::cri::{ClientAuth, RegistryOptions};

mod support;

use support::{Registry, free_port, layouts, timed};

/// A store reading the registries file at `path`.
fn store_with(root: &Path, path: &Path) -> ImageStore {
    let options = StoreOptions {
        registries: Some(Arc::new(
            RegistriesFile::load(path).expect("registries file"),
        )),
        ..StoreOptions::default()
    };
    ImageStore::open_with(root, options).expect("open store")
}

/// Writes `yaml` to `path`, making sure the change is seen even within one mtime tick.
fn write_config(path: &Path, yaml: &str) {
    std::fs::write(path, yaml).expect("write registries file");
    let later = std::time::SystemTime::now() + Duration::from_secs(1);
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open registries file");
    file.set_modified(later).expect("set mtime");
}

#[tokio::test]
async fn mirrors_serve_hub_and_k8s_names_under_the_names_asked_for() {
    timed(async {
        let layouts = layouts();
        let registry = Registry::start(None).expect("registry");
        registry.push(&layouts, "busybox", "library/busybox:latest");
        registry.push(&layouts, "pause", "pause:3.10");
        registry.push(&layouts, "busybox", "mirrored/tools/busybox:1");
        let dead = format!("127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("registries.yaml");
        write_config(
            &config,
            &format!(
                "mirrors:\n  docker.io:\n    endpoint: [\"http://{dead}\", \"http://{r}\"]\n  registry.k8s.io:\n    endpoint: [\"http://{r}\"]\n  example.com:\n    endpoint: [\"http://{r}\"]\n    rewrite:\n      \"^team/(.*)$\": \"mirrored/tools/$1\"\n",
                r = registry.address
            ),
        );
        let root = dir.path().join("store");
        let store = store_with(&root, &config);

        let busybox = store.pull("busybox", None).await.unwrap();
        assert_eq!(busybox.repo_tags, ["docker.io/library/busybox:latest"]);
        assert!(
            busybox.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"),
            "{:?}",
            busybox.repo_digests
        );
        assert_eq!(store.get("busybox").unwrap().id, busybox.id);
        assert_eq!(store.get("docker.io/library/busybox").unwrap().id, busybox.id);

        let pause = store.pull("registry.k8s.io/pause:3.10", None).await.unwrap();
        assert_eq!(pause.repo_tags, ["registry.k8s.io/pause:3.10"]);
        assert_eq!(
            registry.requests("GET /v2/pause/manifests/3.10"),
            1,
            "registry.k8s.io/pause is asked of the mirror as pause"
        );

        let rewritten = store.pull("example.com/team/busybox:1", None).await.unwrap();
        assert!(
            rewritten
                .repo_tags
                .contains(&"example.com/team/busybox:1".to_string()),
            "{:?}",
            rewritten.repo_tags
        );
        assert_eq!(rewritten.id, busybox.id);
        assert_eq!(registry.requests("GET /v2/mirrored/tools/busybox/manifests/1"), 1);

        // A pull the mirror cannot serve names every endpoint tried and what each said.
        let missing = store.pull("busybox:nope", None).await.unwrap_err();
        let message = missing.to_string();
        assert!(
            message.contains(&format!("via http://{dead}"))
                && message.contains(&format!("via http://{}", registry.address))
                && message.contains("via https://registry-1.docker.io"),
            "{message}"
        );
        assert!(matches!(missing, ImageError::NotFound { .. }), "{missing:?}");

        // An edit is picked up by the next pull, without reopening the store.
        write_config(
            &config,
            &format!("mirrors:\n  registry.k8s.io:\n    endpoint: [\"http://{dead}\"]\n  quay.io:\n    endpoint: [\"http://{}\"]\n", registry.address),
        );
        store.remove("registry.k8s.io/pause:3.10").unwrap();
        let gone = store.pull("registry.k8s.io/pause:3.10", None).await.unwrap_err();
        assert!(gone.to_string().contains(&format!("via http://{dead}")), "{gone}");
        let quay = store.pull("quay.io/pause:3.10", None).await.unwrap();
        assert_eq!(quay.id, pause.id);
        write_config(&config, "mirrors: [\n");
        let broken = store.pull("quay.io/pause:3.10", None).await.unwrap_err();
        assert!(matches!(broken, ImageError::Config { .. }), "{broken:?}");
    })
    .await;
}

#[tokio::test]
async fn credentials_in_the_file_reach_a_private_mirror() {
    timed(async {
        let registry = Registry::start(Some(("alice", "s3cret"))).expect(
            "a bcrypt hash for htpasswd (python3's crypt module; hack/test.sh installs python3)",
        );
        registry.push(&layouts(), "busybox", "busybox:1");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("registries.yaml");
        let mirrors = format!(
            "mirrors:\n  private.invalid:\n    endpoint: [\"http://{}\"]\n",
            registry.address
        );
        write_config(&config, &mirrors);
        let store = store_with(&dir.path().join("store"), &config);

        let refused = store
            .pull("private.invalid/busybox:1", None)
            .await
            .unwrap_err();
        let message = refused.to_string();
        assert!(
            matches!(refused, ImageError::Unauthorized { .. }),
            "{refused:?}"
        );
        assert!(
            message.contains(&format!("via http://{}", registry.address))
                && message.contains("401"),
            "{message}"
        );

        write_config(
            &config,
            &format!(
                "{mirrors}configs:\n  \"{}\":\n    auth: {{username: alice, password: s3cret}}\n",
                registry.address
            ),
        );
        let image = store.pull("private.invalid/busybox:1", None).await.unwrap();
        assert_eq!(image.repo_tags, ["private.invalid/busybox:1"]);
    })
    .await;
}

/// PEM files in a test directory: a CA, a server certificate for 127.0.0.1 and a client
/// certificate it signed, and a client certificate from another CA.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// `client.cert` and `client.key` in their own directory (skopeo's cert-dir layout).
    client_dir: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
}

fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// Writes a certificate for `names` signed by `issuer` (for clients when `client`) and its key.
fn write_leaf(
    issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    names: &[&str],
    client: bool,
    cert_path: &Path,
    key_path: &Path,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    if client {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "puller");
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    std::fs::write(cert_path, cert.pem()).unwrap();
    std::fs::write(key_path, key.serialize_pem()).unwrap();
}

fn tls_files(dir: &Path) -> TlsFiles {
    let client_dir = dir.join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        client_cert: client_dir.join("client.cert"),
        client_key: client_dir.join("client.key"),
        client_dir,
        stranger_cert: dir.join("stranger.pem"),
        stranger_key: dir.join("stranger-key.pem"),
    };
    let own = ca("registries test CA");
    std::fs::write(&files.ca, own.pem()).unwrap();
    write_leaf(&own, &["127.0.0.1"], false, &files.cert, &files.key);
    write_leaf(&own, &[], true, &files.client_cert, &files.client_key);
    let other = ca("someone else's CA");
    write_leaf(&other, &[], true, &files.stranger_cert, &files.stranger_key);
    files
}

#[tokio::test]
async fn a_mirror_behind_tls_with_its_own_ca_needs_ca_file() {
    timed(async {
        let dir = tempfile::tempdir().unwrap();
        let TlsFiles { ca, cert, key, .. } = tls_files(dir.path());
        let registry = Registry::start_with(RegistryOptions {
            tls: Some((cert, key)),
            ..RegistryOptions::default()
        })
        .expect("registry");
        registry.push(&layouts(), "busybox", "busybox:1");
        let config = dir.path().join("registries.yaml");
        let mirrors = format!(
            "mirrors:\n  secure.invalid:\n    endpoint: [\"https://{}\"]\n",
            registry.address
        );
        write_config(&config, &mirrors);
        let store = store_with(&dir.path().join("store"), &config);

        let untrusted = store
            .pull("secure.invalid/busybox:1", None)
            .await
            .unwrap_err();
        let message = untrusted.to_string();
        assert!(
            message.contains(&format!("via https://{}", registry.address))
                && message.to_ascii_lowercase().contains("certificate"),
            "{message}"
        );

        write_config(
            &config,
            &format!(
                "{mirrors}configs:\n  \"{}\":\n    tls: {{ca_file: {}}}\n",
                registry.address,
                ca.display()
            ),
        );
        let image = store.pull("secure.invalid/busybox:1", None).await.unwrap();
        assert_eq!(image.repo_tags, ["secure.invalid/busybox:1"]);
    })
    .await;
}

#[tokio::test]
async fn a_tls_registry_with_its_own_ca_takes_the_pull_requests_credentials() {
    timed(async {
        let dir = tempfile::tempdir().unwrap();
        let TlsFiles { ca, cert, key, .. } = tls_files(dir.path());
        let registry = Registry::start_with(RegistryOptions {
            tls: Some((cert, key)),
            credentials: Some(("bob".into(), "hunter2".into())),
            ..RegistryOptions::default()
        })
        .expect("a bcrypt hash for htpasswd (python3's crypt module)");
        registry.push(&layouts(), "busybox", "busybox:1");
        // The file says the (loopback, so plain HTTP by default) registry speaks HTTPS and
        // gives its CA; the credentials come with the pull, as the agent's pull secrets do.
        let config = dir.path().join("registries.yaml");
        write_config(
            &config,
            &format!(
                "mirrors:\n  \"{0}\":\n    endpoint: [\"https://{0}\"]\nconfigs:\n  \"{0}\":\n    tls: {{ca_file: {1}}}\n",
                registry.address,
                ca.display()
            ),
        );
        let store = store_with(&dir.path().join("store"), &config);
        let reference = format!("{}/busybox:1", registry.address);

        let refused = store.pull(&reference, None).await.unwrap_err();
        assert!(
            matches!(refused, ImageError::Unauthorized { .. })
                && refused.to_string().contains("401"),
            "{refused:?}"
        );
        let wrong = cri::image::RegistryAuth {
            username: "bob".into(),
            password: "wrong".into(),
            ..Default::default()
        };
        let refused = store.pull(&reference, Some(&wrong)).await.unwrap_err();
        assert!(
            matches!(refused, ImageError::Unauthorized { .. }),
            "{refused:?}"
        );
        let right = cri::image::RegistryAuth {
            username: "bob".into(),
            password: "hunter2".into(),
            ..Default::default()
        };
        let image = store.pull(&reference, Some(&right)).await.unwrap();
        assert_eq!(image.repo_tags, [reference]);
    })
    .await;
}

#[tokio::test]
async fn a_registry_requiring_client_certificates_gets_the_configured_one() {
    timed(async {
        let dir = tempfile::tempdir().unwrap();
        let files = tls_files(dir.path());
        let registry = Registry::start_with(RegistryOptions {
            tls: Some((files.cert.clone(), files.key.clone())),
            client_auth: Some(ClientAuth {
                ca: files.ca.clone(),
                push_cert_dir: files.client_dir.clone(),
            }),
            ..RegistryOptions::default()
        })
        .expect("registry");
        registry.push(&layouts(), "busybox", "busybox:1");
        let config = dir.path().join("registries.yaml");
        let mirrors = format!(
            "mirrors:\n  mtls.invalid:\n    endpoint: [\"https://{}\"]\n",
            registry.address
        );
        let with_client = |cert: &Path, key: &Path| {
            format!(
                "{mirrors}configs:\n  \"{}\":\n    tls: {{ca_file: {}, cert_file: {}, key_file: {}}}\n",
                registry.address,
                files.ca.display(),
                cert.display(),
                key.display()
            )
        };
        // The CA alone is not enough: the registry wants a certificate.
        write_config(
            &config,
            &format!(
                "{mirrors}configs:\n  \"{}\":\n    tls: {{ca_file: {}}}\n",
                registry.address,
                files.ca.display()
            ),
        );
        let store = store_with(&dir.path().join("store"), &config);
        let refused = store.pull("mtls.invalid/busybox:1", None).await.unwrap_err();
        assert!(
            refused.to_string().contains(&format!(
                "via https://{}",
                registry.address
            )) && refused.to_string().contains("BadCertificate"),
            "{refused}"
        );
        // A certificate from a CA the registry does not trust is refused too.
        write_config(&config, &with_client(&files.stranger_cert, &files.stranger_key));
        let stranger = store.pull("mtls.invalid/busybox:1", None).await.unwrap_err();
        assert!(
            stranger.to_string().contains(&format!(
                "via https://{}",
                registry.address
            )) && stranger.to_string().contains("BadCertificate"),
            "{stranger}"
        );

        write_config(&config, &with_client(&files.client_cert, &files.client_key));
        let image = store.pull("mtls.invalid/busybox:1", None).await.unwrap();
        assert_eq!(image.repo_tags, ["mtls.invalid/busybox:1"]);
        assert!(registry.requests("GET /v2/busybox/blobs/") >= 1);
    })
    .await;
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_download_it_once() {
    timed(async {
        let registry = Registry::start(None).expect("registry");
        registry.push(&layouts(), "busybox", "busybox:1");
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        let tag = format!("{}/busybox:1", registry.address);

        let (a, b, c) = tokio::join!(
            store.pull(&tag, None),
            store.pull(&tag, None),
            store.pull(&tag, None)
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert_eq!(
            (a.id.as_str(), b.id.as_str()),
            (c.id.as_str(), c.id.as_str())
        );
        let blobs = a.layers.len() + 1;
        assert_eq!(
            registry.requests("GET /v2/busybox/blobs/"),
            blobs,
            "config and layers fetched once for three pulls"
        );
        assert_eq!(registry.requests("GET /v2/busybox/manifests/1"), 1);

        // A pull that leads and is cancelled lets the one waiting on it take over; nothing
        // partial is left in the ingest directory.
        store.remove(&a.id).unwrap();
        let (cancelled, finished) = tokio::join!(
            tokio::time::timeout(Duration::from_millis(1), store.pull(&tag, None)),
            store.pull(&tag, None)
        );
        assert!(cancelled.is_err(), "the first pull was cut short");
        assert_eq!(finished.unwrap().id, a.id);
        let ingest = std::fs::read_dir(root.path().join("images/ingest"))
            .unwrap()
            .count();
        assert_eq!(ingest, 0, "no partial downloads left");
    })
    .await;
}
