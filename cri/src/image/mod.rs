//! Images: a content-addressed store of pulled and imported OCI images with their layers
//! unpacked once, shared by every image and container that uses them.
//!
//! [`ImageStore`] is the one entry point; the gRPC `ImageService` (`crate::service::image`) and
//! the runtime both hold it behind an `Arc`. Layout under the store root:
//!
//! ```text
//! <root>/images/state.json          images and leases, replaced atomically
//! <root>/images/blobs/sha256/<hex>  manifests, configs and layer blobs, by digest
//! <root>/images/ingest/             downloads and imports in progress (emptied at open)
//! <root>/layers/<chain id hex>/     one unpacked layer (overlayfs lower dir form)
//! <root>/layers/.tmp-*              unpacks in progress (removed at open)
//! ```
//!
//! A blob or layer directory appears under its final name only once complete (written to a
//! temporary name, synced, renamed), and the state file names an image only after all its
//! layers exist, so whatever a crash leaves behind is either complete or unreferenced; `open`
//! deletes the unreferenced.

mod client_cert;
mod import;
mod manifest;
mod pull;
mod reference;
pub mod registries;
mod store;
mod unpack;

use std::path::PathBuf;

pub use import::import_offline;
/// The image config types, so users of the store need not name oci-spec themselves.
pub use oci_spec::image::{Config, ImageConfiguration};
pub use pull::RegistryAuth;
pub use reference::ImageReference;
pub use registries::{RegistriesConfig, RegistriesFile};
pub use store::{FsUsage, Image, ImageStore, Layer, StoreOptions};

/// Everything that can go wrong with images. The gRPC layer maps each variant to a status
/// code; every message names the image, registry or path involved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image, tag or digest does not exist (registry 404, manifest or blob unknown).
    #[error("image {reference} not found: {detail}")]
    NotFound {
        /// The reference as asked for.
        reference: String,
        /// What the registry or store said.
        detail: String,
    },
    /// The registry refused the credentials, or asked for some and none were given.
    #[error("pulling {reference}: not authorized: {detail}")]
    Unauthorized {
        /// The reference being pulled.
        reference: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry could not be reached (connection refused, DNS, timeout).
    #[error("pulling {reference}: registry {registry} unreachable: {detail}")]
    Unreachable {
        /// The reference being pulled.
        reference: String,
        /// The registry host (and port).
        registry: String,
        /// The transport error.
        detail: String,
    },
    /// The string is not a valid image reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The string given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// Content did not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob, manifest or layer.
        what: String,
        /// The digest that names it.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// A manifest, config or layer of a kind this store cannot use.
    #[error("unsupported media type {media_type} for {what}")]
    UnsupportedMediaType {
        /// The media type (or a description of the content).
        media_type: String,
        /// Which object had it.
        what: String,
    },
    /// A layer or archive that cannot be unpacked safely (a path escaping the root, a bad
    /// link), or an import source that is not a valid image layout or archive.
    #[error("invalid content in {source_path}: {reason}")]
    InvalidContent {
        /// The layer blob or archive.
        source_path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Disk or file system error, with the path it happened on.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("write", "rename", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data (the state file) or imported metadata that does not parse.
    #[error("corrupt {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// Another process holds the store (only one may open a store root at a time).
    #[error(
        "image store lock {path} is held by another process (a running cri?); \
         stop it, or put the image in its preload directory instead"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The registries file (`--registries`) is invalid; pulls fail until it is fixed.
    #[error("registries config {path}: {field}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The field at fault (`mirrors."docker.io".endpoint[0]`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other registry failure (5xx, protocol violations), with the registry's message.
    #[error("pulling {reference}: {detail}")]
    Registry {
        /// The reference being pulled.
        reference: String,
        /// What went wrong.
        detail: String,
    },
}

impl ImageError {
    /// A copy for every waiter on a shared pull (an I/O error keeps its kind and text).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            ImageError::NotFound { reference, detail } => ImageError::NotFound {
                reference: reference.clone(),
                detail: detail.clone(),
            },
            ImageError::Unauthorized { reference, detail } => ImageError::Unauthorized {
                reference: reference.clone(),
                detail: detail.clone(),
            },
            ImageError::Unreachable {
                reference,
                registry,
                detail,
            } => ImageError::Unreachable {
                reference: reference.clone(),
                registry: registry.clone(),
                detail: detail.clone(),
            },
            ImageError::InvalidReference { reference, reason } => ImageError::InvalidReference {
                reference: reference.clone(),
                reason: reason.clone(),
            },
            ImageError::DigestMismatch {
                what,
                expected,
                actual,
            } => ImageError::DigestMismatch {
                what: what.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
            },
            ImageError::UnsupportedMediaType { media_type, what } => {
                ImageError::UnsupportedMediaType {
                    media_type: media_type.clone(),
                    what: what.clone(),
                }
            }
            ImageError::InvalidContent {
                source_path,
                reason,
            } => ImageError::InvalidContent {
                source_path: source_path.clone(),
                reason: reason.clone(),
            },
            ImageError::Io { op, path, source } => ImageError::Io {
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            ImageError::Corrupt { path, reason } => ImageError::Corrupt {
                path: path.clone(),
                reason: reason.clone(),
            },
            ImageError::Locked { path } => ImageError::Locked { path: path.clone() },
            ImageError::Config {
                path,
                field,
                reason,
            } => ImageError::Config {
                path: path.clone(),
                field: field.clone(),
                reason: reason.clone(),
            },
            ImageError::Registry { reference, detail } => ImageError::Registry {
                reference: reference.clone(),
                detail: detail.clone(),
            },
        }
    }

    /// An [`ImageError::Io`] for `path`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}
