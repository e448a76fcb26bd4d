//! Reading manifests and indexes, from a registry or an image layout alike: telling an index
//! from a manifest, picking the running platform, and refusing what is not a container image.

use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, Os};

use super::ImageError;

/// OCI image index.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list.
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker image manifest, schema 2.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Every manifest kind a pull accepts, indexes first.
pub(crate) const ACCEPTED: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// A manifest document: an index to choose from, or an image manifest.
pub(crate) enum Document {
    Index(ImageIndex),
    Manifest(ImageManifest),
}

/// Parses `bytes` (named `what` in errors) as an index or image manifest.
pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Document, ImageError> {
    let corrupt = |reason: String| ImageError::Corrupt {
        path: what.into(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let media_type = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    let is_index = match media_type {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => value.get("manifests").is_some(),
        other => {
            return Err(ImageError::UnsupportedMediaType {
                media_type: other.to_string(),
                what: what.to_string(),
            });
        }
    };
    if is_index {
        return serde_json::from_value(value)
            .map(Document::Index)
            .map_err(|e| corrupt(e.to_string()));
    }
    let manifest: ImageManifest =
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    let config_type = manifest.config().media_type().to_string();
    if !CONFIG_TYPES.contains(&config_type.as_str()) {
        return Err(ImageError::UnsupportedMediaType {
            media_type: config_type,
            what: format!("config of {what} (not a container image)"),
        });
    }
    for layer in manifest.layers() {
        let layer_type = layer.media_type().to_string();
        if !layer_type.contains("tar") || layer_type.contains("zstd") {
            return Err(ImageError::UnsupportedMediaType {
                media_type: layer_type,
                what: format!("layer {} of {what}", layer.digest()),
            });
        }
    }
    Ok(Document::Manifest(manifest))
}

/// The entry of `index` for the running platform (linux and this machine's architecture);
/// entries without a platform are taken when nothing matches exactly.
pub(crate) fn select_platform(index: &ImageIndex) -> Option<&Descriptor> {
    let (os, arch) = (Os::default(), Arch::default());
    let exact = index.manifests().iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == os && *p.architecture() == arch)
    });
    exact.or_else(|| index.manifests().iter().find(|d| d.platform().is_none()))
}

/// The running platform, as `os/arch`, for messages.
pub(crate) fn platform_name() -> String {
    format!("{}/{}", Os::default(), Arch::default())
}
