//! Importing images from files: an OCI image layout (a directory, or a tar of one, gzip or
//! not) and a `docker save` archive (`manifest.json` with `Config`, `RepoTags`, `Layers`).
//! Archives are unpacked into the store's ingest directory first and read as directories.
//! Every blob is checked against its digest as it is copied in.
//!
//! Names: an OCI layout entry is named by its `io.containerd.image.name` annotation, else by
//! `org.opencontainers.image.ref.name` when that is a full reference (`busybox:1`,
//! `127.0.0.1:5000/x:y`); a bare tag (`1`, `latest`) names no repository, so such an image is
//! known by ID only. A Docker archive entry is named by its `RepoTags`.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use super::manifest::{self, Document};
use super::reference::ImageReference;
use super::store::{NewImage, Pins, sha256_bytes, sha256_reader};
use super::{Image, ImageError, ImageStore, StoreOptions};

/// containerd's annotation for the full image name in an OCI layout.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for an entry's reference name in a layout index.
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An entry of a `docker save` `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl ImageStore {
    /// Imports every image in `path`: an OCI image layout directory or tarball, or a
    /// `docker save` tarball. Returns the stored images (names moved to them as for a pull).
    /// On failure, images imported before the failing one stay; the rest of what it stored is
    /// swept.
    pub async fn import(&self, path: &Path) -> Result<Vec<Image>, ImageError> {
        let meta = fs::metadata(path).map_err(ImageError::io("read", path))?;
        let staging = self.ingest_path("import");
        let result = if meta.is_dir() {
            self.import_unpacked(path, path).await
        } else {
            match extract_archive(path, &staging) {
                Ok(()) => self.import_unpacked(&staging, path).await,
                Err(e) => Err(e),
            }
        };
        let _ = fs::remove_dir_all(&staging);
        if result.is_err() {
            self.sweep();
        }
        result
    }

    /// Imports every layout directory and archive (`*.tar`, `*.tar.gz`, `*.tgz`) directly in
    /// `dir`, in name order, as a preload at start. A missing `dir` imports nothing; other
    /// entries are skipped; the first failing import is the error.
    pub async fn import_dir(&self, dir: &Path) -> Result<Vec<Image>, ImageError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::io("read", dir)(e)),
        };
        let mut paths = entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ImageError::io("read", dir))?;
        paths.sort();
        let mut images = Vec::new();
        for path in paths {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let importable = if path.is_dir() {
                path.join("oci-layout").is_file() || path.join("manifest.json").is_file()
            } else {
                [".tar", ".tar.gz", ".tgz"]
                    .iter()
                    .any(|s| name.ends_with(s))
            };
            if !importable {
                tracing::debug!(path = %path.display(), "not an image layout or archive, skipped");
                continue;
            }
            let imported = self.import(&path).await?;
            tracing::info!(path = %path.display(), images = imported.len(), "preloaded images");
            images.extend(imported);
        }
        Ok(images)
    }

    /// Imports from an unpacked layout or Docker archive at `dir` (`origin` names it in
    /// errors).
    async fn import_unpacked(&self, dir: &Path, origin: &Path) -> Result<Vec<Image>, ImageError> {
        if dir.join("oci-layout").is_file() {
            self.import_oci_layout(dir, origin).await
        } else if dir.join("manifest.json").is_file() {
            self.import_docker_archive(dir, origin).await
        } else {
            Err(ImageError::InvalidContent {
                source_path: origin.to_path_buf(),
                reason: "neither an OCI image layout (no oci-layout file) nor a docker save archive (no manifest.json)".to_string(),
            })
        }
    }

    async fn import_oci_layout(&self, dir: &Path, origin: &Path) -> Result<Vec<Image>, ImageError> {
        let index_path = dir.join("index.json");
        let index_bytes = fs::read(&index_path).map_err(ImageError::io("read", &index_path))?;
        let what = index_path.display().to_string();
        let Document::Index(index) = manifest::parse(&index_bytes, &what)? else {
            return Err(ImageError::InvalidContent {
                source_path: origin.to_path_buf(),
                reason: "index.json is not an image index".to_string(),
            });
        };
        let mut images = Vec::new();
        for entry in index.manifests() {
            let mut pins = self.pins();
            let top_digest = entry.digest().to_string();
            let top = self.copy_layout_manifest(dir, &top_digest, &mut pins)?;
            let names = layout_names(entry);
            let what = format!("manifest {top_digest} in {}", origin.display());
            let (manifest, manifest_digest, manifest_size) = match manifest::parse(&top, &what)? {
                Document::Manifest(manifest) => (manifest, top_digest.clone(), top.len()),
                Document::Index(nested) => {
                    let chosen =
                        manifest::select_platform(&nested).ok_or_else(|| ImageError::NotFound {
                            reference: what.clone(),
                            detail: format!("no manifest for {}", manifest::platform_name()),
                        })?;
                    let digest = chosen.digest().to_string();
                    let bytes = self.copy_layout_manifest(dir, &digest, &mut pins)?;
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
            self.copy_layout_blob(dir, manifest.config().digest().as_ref(), &mut pins)?;
            for layer in manifest.layers() {
                self.copy_layout_blob(dir, layer.digest().as_ref(), &mut pins)?;
            }
            let new = NewImage {
                manifest: &manifest,
                manifest_digest,
                manifest_size: manifest_size as u64,
                repo_tags: names.iter().filter_map(ImageReference::repo_tag).collect(),
                repo_digests: names.iter().map(|n| n.repo_digest(&top_digest)).collect(),
            };
            images.push(self.commit_image(new, &mut pins).await?);
        }
        Ok(images)
    }

    /// Copies manifest `digest` of the layout at `dir` into the store and returns its bytes.
    fn copy_layout_manifest(
        &self,
        dir: &Path,
        digest: &str,
        pins: &mut Pins<'_>,
    ) -> Result<Vec<u8>, ImageError> {
        let stored = self.copy_layout_blob(dir, digest, pins)?;
        let size = fs::metadata(&stored)
            .map_err(ImageError::io("read", &stored))?
            .len();
        if size > MAX_MANIFEST_BYTES {
            return Err(ImageError::InvalidContent {
                source_path: dir.to_path_buf(),
                reason: format!("manifest {digest} is {size} bytes, too large for a manifest"),
            });
        }
        fs::read(&stored).map_err(ImageError::io("read", &stored))
    }

    /// Copies blob `digest` of the layout at `dir` into the store (checking it) and returns
    /// the stored path.
    fn copy_layout_blob(
        &self,
        dir: &Path,
        digest: &str,
        pins: &mut Pins<'_>,
    ) -> Result<PathBuf, ImageError> {
        let (algorithm, hex) =
            digest
                .split_once(':')
                .ok_or_else(|| ImageError::InvalidContent {
                    source_path: dir.to_path_buf(),
                    reason: format!("malformed digest {digest:?}"),
                })?;
        if hex.contains('/') || algorithm.contains('/') {
            return Err(ImageError::InvalidContent {
                source_path: dir.to_path_buf(),
                reason: format!("malformed digest {digest:?}"),
            });
        }
        let source = dir.join("blobs").join(algorithm).join(hex);
        pins.add(digest);
        self.copy_blob(&source, digest)?;
        Ok(self.blob_path(digest))
    }

    /// Copies `source` into the store as blob `digest`, verifying it.
    fn copy_blob(&self, source: &Path, digest: &str) -> Result<(), ImageError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let tmp = self.ingest_path("copy");
        fs::copy(source, &tmp).map_err(ImageError::io("copy", source))?;
        self.commit_blob_file(&tmp, digest, &source.display().to_string())
    }

    async fn import_docker_archive(
        &self,
        dir: &Path,
        origin: &Path,
    ) -> Result<Vec<Image>, ImageError> {
        let manifest_path = dir.join("manifest.json");
        let bytes = fs::read(&manifest_path).map_err(ImageError::io("read", &manifest_path))?;
        let entries: Vec<DockerEntry> =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::Corrupt {
                path: manifest_path.clone(),
                reason: e.to_string(),
            })?;
        let mut images = Vec::new();
        for entry in entries {
            let mut pins = self.pins();
            let config_path = archive_member(dir, &entry.config, origin)?;
            let config_bytes =
                fs::read(&config_path).map_err(ImageError::io("read", &config_path))?;
            let config_digest = sha256_bytes(&config_bytes);
            pins.add(&config_digest);
            self.put_blob(&config_bytes, &config_digest, &entry.config)?;
            let mut layers = Vec::with_capacity(entry.layers.len());
            for layer in &entry.layers {
                let path = archive_member(dir, layer, origin)?;
                let mut file = File::open(&path).map_err(ImageError::io("open", &path))?;
                let digest = sha256_reader(&mut file).map_err(ImageError::io("read", &path))?;
                let size = fs::metadata(&path)
                    .map_err(ImageError::io("read", &path))?
                    .len();
                let media_type = if is_gzip(&path)? {
                    MediaType::Other(
                        "application/vnd.docker.image.rootfs.diff.tar.gzip".to_string(),
                    )
                } else {
                    MediaType::Other("application/vnd.docker.image.rootfs.diff.tar".to_string())
                };
                pins.add(&digest);
                self.copy_blob(&path, &digest)?;
                layers.push(Descriptor::new(
                    media_type,
                    size,
                    parse_digest(&digest, origin)?,
                ));
            }
            let config = Descriptor::new(
                MediaType::Other("application/vnd.docker.container.image.v1+json".to_string()),
                config_bytes.len() as u64,
                parse_digest(&config_digest, origin)?,
            );
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::Other(manifest::DOCKER_MANIFEST.to_string()))
                .config(config)
                .layers(layers)
                .build()
                .map_err(|e| ImageError::InvalidContent {
                    source_path: origin.to_path_buf(),
                    reason: e.to_string(),
                })?;
            let manifest_bytes =
                serde_json::to_vec(&manifest).map_err(|e| ImageError::InvalidContent {
                    source_path: origin.to_path_buf(),
                    reason: e.to_string(),
                })?;
            let manifest_digest = sha256_bytes(&manifest_bytes);
            pins.add(&manifest_digest);
            self.put_blob(&manifest_bytes, &manifest_digest, "synthesised manifest")?;
            let mut repo_tags = Vec::new();
            for tag in entry.repo_tags.iter().flatten() {
                if let Some(tag) = ImageReference::parse(tag)?.repo_tag() {
                    repo_tags.push(tag);
                }
            }
            let new = NewImage {
                manifest: &manifest,
                manifest_digest,
                manifest_size: manifest_bytes.len() as u64,
                repo_tags,
                repo_digests: Vec::new(),
            };
            images.push(self.commit_image(new, &mut pins).await?);
        }
        Ok(images)
    }
}

/// `cri import PATH...`: opens the store under `root` and imports each path in turn (see
/// [`ImageStore::import`]). A store allows one process at a time, so this fails with
/// [`ImageError::Locked`] while the runtime is running; the preload directory
/// ([`ImageStore::import_dir`]) is the way to add images then.
pub async fn import_offline(
    root: &Path,
    options: StoreOptions,
    paths: &[PathBuf],
) -> Result<Vec<Image>, ImageError> {
    let store = ImageStore::open_with(root, options)?;
    let mut images = Vec::new();
    for path in paths {
        images.extend(store.import(path).await?);
    }
    Ok(images)
}

/// Manifests larger than this are refused rather than read into memory.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Names for a layout index entry, per the module documentation.
fn layout_names(entry: &Descriptor) -> Vec<ImageReference> {
    let annotations = entry.annotations().as_ref();
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    let name =
        get(CONTAINERD_NAME).or_else(|| get(OCI_REF_NAME).filter(|n| n.contains(['/', ':'])));
    name.and_then(|n| ImageReference::parse(n).ok())
        .into_iter()
        .collect()
}

fn parse_digest(digest: &str, origin: &Path) -> Result<Digest, ImageError> {
    digest.parse().map_err(|e| ImageError::InvalidContent {
        source_path: origin.to_path_buf(),
        reason: format!("digest {digest}: {e}"),
    })
}

/// `member` of an unpacked archive at `dir`, refusing names that leave it.
fn archive_member(dir: &Path, member: &str, origin: &Path) -> Result<PathBuf, ImageError> {
    let relative = Path::new(member);
    let plain = relative.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    if !plain {
        return Err(ImageError::InvalidContent {
            source_path: origin.to_path_buf(),
            reason: format!("archive member {member:?} leaves the archive"),
        });
    }
    Ok(dir.join(relative))
}

fn is_gzip(path: &Path) -> Result<bool, ImageError> {
    let mut magic = [0u8; 2];
    let mut file = File::open(path).map_err(ImageError::io("open", path))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x1f, 0x8b]),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(ImageError::io("read", path)(e)),
    }
}

/// Unpacks the (possibly gzip-compressed) tar `archive` into `dest`. tar refuses members
/// that would land outside `dest`.
fn extract_archive(archive: &Path, dest: &Path) -> Result<(), ImageError> {
    fs::create_dir(dest).map_err(ImageError::io("create", dest))?;
    let file = File::open(archive).map_err(ImageError::io("open", archive))?;
    let reader: Box<dyn Read> = if is_gzip(archive)? {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    tar::Archive::new(reader)
        .unpack(dest)
        .map_err(|e| ImageError::InvalidContent {
            source_path: archive.to_path_buf(),
            reason: format!("unpacking archive: {e}"),
        })
}
