//! Pulling from registries (oci-client): the endpoints the registries file plans (mirrors in
//! order with their rewrites, then the registry itself), each with its own credentials (the
//! CRI `AuthConfig` for the registry's own host) and TLS settings; plain HTTP for loopback and
//! configured insecure registries; the running platform picked from indexes; every manifest
//! and blob checked against its digest before it is stored; layers fetched a few at a time;
//! concurrent pulls of one image joined into one; and registry failures sorted into
//! [`ImageError`] variants that say which endpoint failed and why.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth as ClientAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::client_cert::{BridgeTls, ClientCertBridge};
use super::manifest::{self, Document};
use super::reference::ImageReference;
use super::registries::{Attempt, RegistriesConfig};
use super::store::{NewImage, chain_ids, commit_file, sha256_bytes};
use super::{Image, ImageError, ImageStore};

/// Blobs downloaded at once by one pull.
const CONCURRENT_DOWNLOADS: usize = 3;
/// Connect timeout per registry request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A registry that sends nothing for this long is given up on.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Registry credentials, the fields of the CRI `AuthConfig`. The first that is set wins:
/// `registry_token`, `identity_token` (both sent as bearer tokens), `username`/`password`,
/// `auth` (base64 of `username:password`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User name for basic authentication.
    pub username: String,
    /// Password for basic authentication.
    pub password: String,
    /// Base64 `username:password`, as in Docker's config.json.
    pub auth: String,
    /// An identity (refresh) token, sent as a bearer token.
    pub identity_token: String,
    /// A registry bearer token.
    pub registry_token: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RegistryAuth {
    fn to_client(&self, reference: &str) -> Result<ClientAuth, ImageError> {
        if !self.registry_token.is_empty() {
            return Ok(ClientAuth::Bearer(self.registry_token.clone()));
        }
        if !self.identity_token.is_empty() {
            return Ok(ClientAuth::Bearer(self.identity_token.clone()));
        }
        if !self.username.is_empty() {
            return Ok(ClientAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        if !self.auth.is_empty() {
            let unauthorized = |detail: &str| ImageError::Unauthorized {
                reference: reference.to_string(),
                detail: detail.to_string(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| unauthorized("auth is not valid base64"))?;
            let decoded =
                String::from_utf8(decoded).map_err(|_| unauthorized("auth is not UTF-8"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| unauthorized("auth is not base64 of username:password"))?;
            return Ok(ClientAuth::Basic(user.to_string(), password.to_string()));
        }
        Ok(ClientAuth::Anonymous)
    }
}

/// Whether `registry` (host and optional port) is spoken to over plain HTTP.
pub(crate) fn plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
    };
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || insecure.iter().any(|i| i == registry || i == host)
}

/// The context of one pull, for turning client errors into [`ImageError`]s.
struct PullContext<'a> {
    reference: &'a str,
    registry: &'a str,
}

impl PullContext<'_> {
    fn error(&self, e: OciDistributionError) -> ImageError {
        let reference = self.reference.to_string();
        let not_found = |detail: String| ImageError::NotFound {
            reference: reference.clone(),
            detail,
        };
        let unauthorized = |detail: String| ImageError::Unauthorized {
            reference: reference.clone(),
            detail,
        };
        match e {
            OciDistributionError::ImageManifestNotFoundError(detail) => not_found(detail),
            OciDistributionError::UnauthorizedError { url } => {
                unauthorized(format!("{url}: 401 Unauthorized"))
            }
            OciDistributionError::AuthenticationFailure(detail) => unauthorized(detail),
            OciDistributionError::RegistryError { envelope, url } => {
                let detail = format!(
                    "{url}: {}",
                    envelope
                        .errors
                        .iter()
                        .map(|e| format!("{:?}: {}", e.code, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound,
                    ) => not_found(detail),
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => unauthorized(detail),
                    _ => ImageError::Registry { reference, detail },
                }
            }
            OciDistributionError::ServerError { code, url, message } => {
                let detail = format!("{url}: HTTP {code}: {message}");
                match code {
                    404 => not_found(detail),
                    401 | 403 => unauthorized(detail),
                    _ => ImageError::Registry { reference, detail },
                }
            }
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                ImageError::Unreachable {
                    reference,
                    registry: self.registry.to_string(),
                    detail: error_chain(&e),
                }
            }
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => ImageError::DigestMismatch {
                what: format!("content of {reference}"),
                expected,
                actual,
            },
            OciDistributionError::UnsupportedMediaTypeError(media_type)
            | OciDistributionError::IncompatibleLayerMediaTypeError(media_type) => {
                ImageError::UnsupportedMediaType {
                    media_type,
                    what: reference,
                }
            }
            other => ImageError::Registry {
                reference,
                detail: error_chain(&other),
            },
        }
    }
}

/// An error and its sources, joined, so "error sending request" carries its cause.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A pull in progress that others may join: its id (so only its own guard removes it) and
/// where its result appears.
pub(crate) type Flight = (u64, watch::Receiver<Option<Result<Image, ImageError>>>);

/// Pulls in progress by key (see [`flight_key`]).
pub(crate) type Flights = HashMap<String, Flight>;

/// Identifies pulls that may share one download: the normalised reference and a hash of the
/// credentials (pulls with other credentials may see other content or other errors).
fn flight_key(reference: &ImageReference, auth: Option<&RegistryAuth>) -> String {
    let mut hasher = Sha256::new();
    if let Some(a) = auth {
        for field in [
            &a.username,
            &a.password,
            &a.auth,
            &a.identity_token,
            &a.registry_token,
        ] {
            hasher.update(field.as_bytes());
            hasher.update([0]);
        }
    }
    format!("{reference} {}", hex::encode(&hasher.finalize()[..8]))
}

/// What a pull does about a flight: lead it, or wait for the leader's result.
enum Role<'a> {
    Lead(FlightGuard<'a>),
    Follow(watch::Receiver<Option<Result<Image, ImageError>>>),
}

/// The leader's end of a flight: publishes the result, and removes the flight when the
/// leader finishes or is dropped (a cancelled pull lets a waiter take over).
struct FlightGuard<'a> {
    store: &'a ImageStore,
    key: String,
    id: u64,
    sender: watch::Sender<Option<Result<Image, ImageError>>>,
}

impl FlightGuard<'_> {
    fn publish(&self, result: &Result<Image, ImageError>) {
        let copy = match result {
            Ok(image) => Ok(image.clone()),
            Err(e) => Err(e.duplicate()),
        };
        self.sender.send_replace(Some(copy));
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = self.store.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            flights.remove(&self.key);
        }
    }
}

/// Removes a partial download when the pull that made it fails or is cancelled.
struct IngestFile(PathBuf);

impl Drop for IngestFile {
    fn drop(&mut self) {
        // Gone already when the blob was committed (renamed into place).
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Layers at least this large in total get progress lines.
const PROGRESS_BYTES: u64 = 16 << 20;

/// The one endpoint failure's detail, or every endpoint's, under the kind that says most:
/// the first failure that is not "unreachable" (a mirror's 401 says more than the
/// unreachable default endpoint after it).
fn combine(reference: &str, mut failures: Vec<(String, ImageError)>) -> ImageError {
    let details: Vec<String> = failures
        .iter()
        .map(|(endpoint, e)| format!("via {endpoint}: {}", detail_of(e)))
        .collect();
    let detail = details.join("; ");
    let primary = failures
        .iter()
        .position(|(_, e)| !matches!(e, ImageError::Unreachable { .. }))
        .unwrap_or(0);
    if failures.is_empty() {
        return ImageError::Registry {
            reference: reference.to_string(),
            detail: "no endpoint to pull from".to_string(),
        };
    }
    let (endpoint, error) = failures.swap_remove(primary);
    match error {
        ImageError::NotFound { reference, .. } => ImageError::NotFound { reference, detail },
        ImageError::Unauthorized { reference, .. } => {
            ImageError::Unauthorized { reference, detail }
        }
        ImageError::Unreachable { reference, .. } => ImageError::Unreachable {
            reference,
            registry: endpoint,
            detail,
        },
        ImageError::Registry { reference, .. } => ImageError::Registry { reference, detail },
        other if details.len() == 1 => other,
        _ => ImageError::Registry {
            reference: reference.to_string(),
            detail,
        },
    }
}

/// The part of an error that says what the endpoint answered.
fn detail_of(e: &ImageError) -> String {
    match e {
        ImageError::NotFound { detail, .. }
        | ImageError::Unauthorized { detail, .. }
        | ImageError::Unreachable { detail, .. }
        | ImageError::Registry { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

/// Errors about this machine rather than the endpoint: no other endpoint can help.
fn is_local(e: &ImageError) -> bool {
    matches!(
        e,
        ImageError::Io { .. }
            | ImageError::Corrupt { .. }
            | ImageError::Locked { .. }
            | ImageError::Config { .. }
            | ImageError::InvalidReference { .. }
    )
}

impl ImageStore {
    /// Pulls `image_ref` (a tag or digest reference, normalised as Docker does) for the
    /// running platform and returns the stored image. The endpoints come from the registries
    /// file (mirrors in order, then the registry itself); the first that serves the image
    /// wins. Layers already unpacked are not downloaded again, and concurrent pulls of the
    /// same reference with the same credentials share one download. The tag (if any) and
    /// `name@<digest of what was served>` under the name asked for (whatever mirror served
    /// it) now name this image, moving from any image that held them.
    /// A failed pull leaves nothing behind: what it stored is unreferenced and swept.
    pub async fn pull(
        &self,
        image_ref: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<Image, ImageError> {
        let reference = ImageReference::parse(image_ref)?;
        let key = flight_key(&reference, auth);
        loop {
            match self.join_flight(&key) {
                Role::Lead(guard) => {
                    let result = self.pull_endpoints(&reference, auth).await;
                    if result.is_err() {
                        self.sweep();
                    }
                    guard.publish(&result);
                    return result;
                }
                Role::Follow(mut receiver) => {
                    tracing::debug!(reference = %reference, "joining a pull in progress");
                    loop {
                        if let Some(result) = receiver.borrow_and_update().as_ref() {
                            return match result {
                                Ok(image) => Ok(image.clone()),
                                Err(e) => Err(e.duplicate()),
                            };
                        }
                        if receiver.changed().await.is_err() {
                            break;
                        }
                    }
                    if let Some(result) = receiver.borrow().as_ref() {
                        return match result {
                            Ok(image) => Ok(image.clone()),
                            Err(e) => Err(e.duplicate()),
                        };
                    }
                    // The leader was cancelled without a result: take over.
                }
            }
        }
    }

    fn join_flight(&self, key: &str) -> Role<'_> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, receiver)) = flights.get(key) {
            return Role::Follow(receiver.clone());
        }
        let (sender, receiver) = watch::channel(None);
        let id = rand::random::<u64>();
        flights.insert(key.to_string(), (id, receiver));
        Role::Lead(FlightGuard {
            store: self,
            key: key.to_string(),
            id,
            sender,
        })
    }

    /// Tries each endpoint of the plan in turn.
    async fn pull_endpoints(
        &self,
        reference: &ImageReference,
        auth: Option<&RegistryAuth>,
    ) -> Result<Image, ImageError> {
        let config = match &self.options().registries {
            Some(file) => file.current()?,
            None => Arc::new(RegistriesConfig::default()),
        };
        let attempts = config.plan(reference, &self.options().insecure_registries, auth);
        let wanted = reference.to_string();
        let mut failures = Vec::new();
        for attempt in &attempts {
            match self.pull_from(reference, &wanted, attempt).await {
                Ok(image) => {
                    tracing::info!(
                        reference = %wanted,
                        endpoint = %attempt.endpoint,
                        repository = %attempt.repository,
                        id = %image.id,
                        "pulled image"
                    );
                    return Ok(image);
                }
                Err(e) if is_local(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        reference = %wanted,
                        endpoint = %attempt.endpoint,
                        error = %e,
                        "pull through endpoint failed"
                    );
                    failures.push((attempt.endpoint.to_string(), e));
                }
            }
        }
        Err(combine(&wanted, failures))
    }

    /// Pulls `reference` through one endpoint.
    async fn pull_from(
        &self,
        reference: &ImageReference,
        wanted: &str,
        attempt: &Attempt,
    ) -> Result<Image, ImageError> {
        let ctx = PullContext {
            reference: wanted,
            registry: &attempt.endpoint.host,
        };
        let auth = match &attempt.host.auth {
            Some(auth) => auth.to_client(wanted)?,
            None => ClientAuth::Anonymous,
        };
        install_crypto_provider();
        // A client certificate is presented through a loopback bridge (the registry client
        // has no client identity); the bridge lives as long as this attempt.
        let bridge = match (
            &attempt.host.client_identity_pem,
            attempt.endpoint.plain_http,
        ) {
            (Some(identity_pem), false) => {
                let tls = BridgeTls {
                    identity_pem,
                    ca_pem: attempt.host.ca_pem.as_deref(),
                    insecure_skip_verify: attempt.host.insecure_skip_verify,
                    connect_timeout: CONNECT_TIMEOUT,
                    read_timeout: READ_TIMEOUT,
                };
                let bridge = ClientCertBridge::start(&attempt.endpoint.host, tls)
                    .await
                    .map_err(|e| ImageError::Registry {
                        reference: wanted.to_string(),
                        detail: e.to_string(),
                    })?;
                tracing::debug!(endpoint = %attempt.endpoint, bridge = bridge.local_host(), "presenting a client certificate through a loopback bridge");
                Some(bridge)
            }
            _ => None,
        };
        let protocol = if attempt.endpoint.plain_http || bridge.is_some() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::try_from(ClientConfig {
            protocol,
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            accept_invalid_certificates: attempt.host.insecure_skip_verify,
            extra_root_certificates: attempt
                .host
                .ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            ..ClientConfig::default()
        })
        .map_err(|e| ImageError::Registry {
            reference: wanted.to_string(),
            detail: format!("client for {}: {}", attempt.endpoint, error_chain(&e)),
        })?;
        let registry = bridge.as_ref().map_or_else(
            || attempt.endpoint.host.clone(),
            |bridge| bridge.local_host().to_string(),
        );
        let repository = attempt.repository.clone();
        let remote = match (&reference.digest, &reference.tag) {
            (Some(digest), _) => Reference::with_digest(registry, repository, digest.clone()),
            (None, tag) => {
                Reference::with_tag(registry, repository, tag.clone().unwrap_or_default())
            }
        };

        let mut pins = self.pins();
        let (top, _) = client
            .pull_manifest_raw(&remote, &auth, &manifest::ACCEPTED)
            .await
            .map_err(|e| ctx.error(e))?;
        let top_digest = sha256_bytes(&top);
        if let Some(expected) = &reference.digest
            && *expected != top_digest
        {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {wanted}"),
                expected: expected.clone(),
                actual: top_digest,
            });
        }
        pins.add(&top_digest);
        self.put_blob(&top, &top_digest, &format!("manifest of {wanted}"))?;
        let (manifest, manifest_digest, manifest_size) = match manifest::parse(&top, wanted)? {
            Document::Manifest(manifest) => (manifest, top_digest.clone(), top.len()),
            Document::Index(index) => {
                let entry =
                    manifest::select_platform(&index).ok_or_else(|| ImageError::NotFound {
                        reference: wanted.to_string(),
                        detail: format!(
                            "no manifest for {} in its index",
                            manifest::platform_name()
                        ),
                    })?;
                let digest = entry.digest().to_string();
                let (bytes, _) = client
                    .pull_manifest_raw(
                        &remote.clone_with_digest(digest.clone()),
                        &auth,
                        &manifest::ACCEPTED,
                    )
                    .await
                    .map_err(|e| ctx.error(e))?;
                let what = format!("manifest {digest} of {wanted}");
                pins.add(&digest);
                self.put_blob(&bytes, &digest, &what)?;
                match manifest::parse(&bytes, &what)? {
                    Document::Manifest(manifest) => (manifest, digest, bytes.len()),
                    Document::Index(_) => {
                        return Err(ImageError::UnsupportedMediaType {
                            media_type: "nested index".to_string(),
                            what,
                        });
                    }
                }
            }
        };

        let config_digest = manifest.config().digest().to_string();
        pins.add(&config_digest);
        self.fetch_blob(&client, &remote, &config_digest, &ctx)
            .await?;
        let config = self.read_config(&config_digest)?;
        let chains = chain_ids(config.rootfs().diff_ids());
        let mut needed = Vec::new();
        for (i, layer) in manifest.layers().iter().enumerate() {
            let digest = layer.digest().to_string();
            pins.add(&digest);
            if let Some(chain) = chains.get(i) {
                pins.add(chain);
                if self.layer_dir(chain).is_dir() {
                    continue;
                }
            }
            needed.push((digest, layer.size()));
        }
        let total: u64 = needed.iter().map(|(_, size)| *size).sum();
        let count = needed.len();
        let done = AtomicU64::new(0);
        let layers_done = AtomicU64::new(0);
        let (client, remote, ctx, done, layers_done) =
            (&client, &remote, &ctx, &done, &layers_done);
        futures::stream::iter(needed)
            .map(|(digest, size)| async move {
                self.fetch_blob(client, remote, &digest, ctx).await?;
                let bytes = done.fetch_add(size, Ordering::Relaxed) + size;
                let n = layers_done.fetch_add(1, Ordering::Relaxed) + 1;
                if total >= PROGRESS_BYTES {
                    tracing::info!(
                        reference = %ctx.reference,
                        endpoint = %ctx.registry,
                        layers = %format!("{n}/{count}"),
                        mib = %format!("{}/{}", bytes >> 20, total >> 20),
                        "pull progress"
                    );
                }
                Ok::<(), ImageError>(())
            })
            .buffer_unordered(CONCURRENT_DOWNLOADS)
            .try_collect::<Vec<()>>()
            .await?;

        let new = NewImage {
            manifest: &manifest,
            manifest_digest,
            manifest_size: manifest_size as u64,
            repo_tags: reference.repo_tag().into_iter().collect(),
            repo_digests: vec![reference.repo_digest(&top_digest)],
        };
        self.commit_image(new, &mut pins).await
    }

    /// Downloads blob `digest` into the store unless it is there already.
    async fn fetch_blob(
        &self,
        client: &Client,
        remote: &Reference,
        digest: &str,
        ctx: &PullContext<'_>,
    ) -> Result<(), ImageError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let tmp = IngestFile(self.ingest_path("download"));
        let file = tokio::fs::File::create(&tmp.0)
            .await
            .map_err(ImageError::io("create", &tmp.0))?;
        client
            .pull_blob(remote, digest, file)
            .await
            .map_err(|e| ctx.error(e))?;
        let dest = self.blob_path(digest);
        let (digest, what) = (
            digest.to_string(),
            format!("blob {digest} of {}", ctx.reference),
        );
        let path = tmp.0.clone();
        let result = tokio::task::spawn_blocking(move || commit_file(&path, &dest, &digest, &what))
            .await
            .map_err(|e| ImageError::io("store", self.root())(std::io::Error::other(e)))?;
        drop(tmp);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let insecure = vec!["registry.lan:5000".to_string(), "other.lan".to_string()];
        for yes in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
            "registry.lan:5000",
            "other.lan:443",
        ] {
            assert!(plain_http(yes, &insecure), "{yes}");
        }
        for no in [
            "docker.io",
            "registry.lan:5001",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!plain_http(no, &insecure), "{no}");
        }
    }

    #[test]
    fn endpoint_failures_combine_under_the_most_telling_kind() {
        let unreachable = |e: &str| ImageError::Unreachable {
            reference: "r".into(),
            registry: e.into(),
            detail: "connection refused".into(),
        };
        let combined = combine(
            "r",
            vec![
                ("http://a:1".into(), unreachable("a:1")),
                (
                    "http://b:2".into(),
                    ImageError::Unauthorized {
                        reference: "r".into(),
                        detail: "401 Unauthorized".into(),
                    },
                ),
                ("https://c".into(), unreachable("c")),
            ],
        );
        assert!(
            matches!(combined, ImageError::Unauthorized { .. }),
            "{combined:?}"
        );
        assert_eq!(
            combined.to_string(),
            "pulling r: not authorized: via http://a:1: connection refused; \
             via http://b:2: 401 Unauthorized; via https://c: connection refused"
        );
        let all_down = combine(
            "r",
            vec![
                ("http://a:1".into(), unreachable("a:1")),
                ("https://c".into(), unreachable("c")),
            ],
        );
        assert!(
            matches!(all_down, ImageError::Unreachable { .. }),
            "{all_down:?}"
        );
        let mismatch = combine(
            "r",
            vec![(
                "http://a:1".into(),
                ImageError::DigestMismatch {
                    what: "w".into(),
                    expected: "e".into(),
                    actual: "a".into(),
                },
            )],
        );
        assert!(
            matches!(mismatch, ImageError::DigestMismatch { .. }),
            "{mismatch:?}"
        );
        assert!(matches!(
            combine("r", Vec::new()),
            ImageError::Registry { .. }
        ));
    }

    #[test]
    fn flights_are_keyed_by_reference_and_credentials() {
        let busybox = ImageReference::parse("busybox").unwrap();
        let same = ImageReference::parse("docker.io/library/busybox:latest").unwrap();
        let auth = RegistryAuth {
            username: "u".into(),
            password: "hunter2".into(),
            ..Default::default()
        };
        assert_eq!(flight_key(&busybox, None), flight_key(&same, None));
        assert_ne!(
            flight_key(&busybox, None),
            flight_key(&busybox, Some(&auth))
        );
        assert!(!flight_key(&busybox, Some(&auth)).contains("hunter2"));
    }

    #[test]
    fn credentials_map_to_bearer_then_basic() {
        let bearer = RegistryAuth {
            registry_token: "t".into(),
            username: "u".into(),
            ..Default::default()
        };
        assert_eq!(
            bearer.to_client("x").unwrap(),
            ClientAuth::Bearer("t".into())
        );
        let basic = RegistryAuth {
            username: "u".into(),
            password: "hunter2".into(),
            ..Default::default()
        };
        assert_eq!(
            basic.to_client("x").unwrap(),
            ClientAuth::Basic("u".into(), "hunter2".into())
        );
        let encoded = RegistryAuth {
            auth: base64::engine::general_purpose::STANDARD.encode("me:se:cret"),
            ..Default::default()
        };
        assert_eq!(
            encoded.to_client("x").unwrap(),
            ClientAuth::Basic("me".into(), "se:cret".into())
        );
        let broken = RegistryAuth {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(matches!(
            broken.to_client("x"),
            Err(ImageError::Unauthorized { .. })
        ));
        assert_eq!(
            RegistryAuth::default().to_client("x").unwrap(),
            ClientAuth::Anonymous
        );
        assert!(!format!("{basic:?}").contains("hunter2"));
    }
}
