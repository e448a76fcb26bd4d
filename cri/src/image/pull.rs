//! Pulling from registries (oci-client): credentials from the CRI `AuthConfig`, plain HTTP
//! for loopback and configured insecure registries, the running platform picked from
//! indexes, every manifest and blob checked against its digest before it is stored, and
//! registry failures sorted into [`ImageError`] variants.

use std::net::IpAddr;
use std::sync::Once;
use std::time::Duration;

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth as ClientAuth;
use oci_client::{Client, Reference};

use super::manifest::{self, Document};
use super::reference::ImageReference;
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
fn error_chain(e: &dyn std::error::Error) -> String {
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

impl ImageStore {
    /// Pulls `image_ref` (a tag or digest reference, normalised as Docker does) for the
    /// running platform and returns the stored image. Layers already unpacked are not
    /// downloaded again. The tag (if any) and `name@<digest of what the registry served>` now
    /// name this image, moving from any image that held them.
    /// A failed pull leaves nothing behind: what it stored is unreferenced and swept.
    pub async fn pull(
        &self,
        image_ref: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<Image, ImageError> {
        let result = self.pull_inner(image_ref, auth).await;
        if result.is_err() {
            self.sweep();
        }
        result
    }

    async fn pull_inner(
        &self,
        image_ref: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<Image, ImageError> {
        let reference = ImageReference::parse(image_ref)?;
        let wanted = reference.to_string();
        let ctx = PullContext {
            reference: &wanted,
            registry: &reference.registry,
        };
        let auth = match auth {
            Some(auth) => auth.to_client(&wanted)?,
            None => ClientAuth::Anonymous,
        };
        install_crypto_provider();
        let protocol = if plain_http(&reference.registry, &self.options().insecure_registries) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..ClientConfig::default()
        });
        let registry = reference.registry.clone();
        let repository = reference.repository.clone();
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
        let (manifest, manifest_digest, manifest_size) = match manifest::parse(&top, &wanted)? {
            Document::Manifest(manifest) => (manifest, top_digest.clone(), top.len()),
            Document::Index(index) => {
                let entry =
                    manifest::select_platform(&index).ok_or_else(|| ImageError::NotFound {
                        reference: wanted.clone(),
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
            needed.push(digest);
        }
        let (client, remote, ctx) = (&client, &remote, &ctx);
        futures::stream::iter(needed)
            .map(|digest| async move { self.fetch_blob(client, remote, &digest, ctx).await })
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
        let image = self.commit_image(new, &mut pins).await?;
        tracing::info!(reference = %wanted, id = %image.id, "pulled image");
        Ok(image)
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
        let tmp = self.ingest_path("download");
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(ImageError::io("create", &tmp))?;
        if let Err(e) = client.pull_blob(remote, digest, file).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ctx.error(e));
        }
        let dest = self.blob_path(digest);
        let (digest, what) = (
            digest.to_string(),
            format!("blob {digest} of {}", ctx.reference),
        );
        tokio::task::spawn_blocking(move || commit_file(&tmp, &dest, &digest, &what))
            .await
            .map_err(|e| ImageError::io("store", self.root())(std::io::Error::other(e)))?
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
