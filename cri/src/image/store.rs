//! The image store: blobs by digest, the persisted index of images and leases, unpacked
//! layers shared by chain id, and garbage collection of what nothing references.
//!
//! One mutex guards the in-memory state (images, leases, and the digests and chain ids that
//! pulls in progress have pinned); the state file is rewritten under it, so the file always
//! matches memory. Pulls download and unpack outside the lock and only take it to pin and to
//! record the finished image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{Config, ImageConfiguration, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::reference::{ImageReference, validate_digest};
use super::{ImageError, unpack};

/// Version of the state file layout.
const STATE_VERSION: u32 = 1;
/// Prefix of temporary layer directories.
const TMP_PREFIX: &str = ".tmp-";
/// Prefix of layer directories being deleted (renamed under the lock, deleted outside it).
const TRASH_PREFIX: &str = ".trash-";

/// Settings fixed when the store is opened.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Registries (`host` or `host:port`) reached over plain HTTP. Loopback registries
    /// (`localhost`, `127.0.0.0/8`, `[::1]`) always are.
    pub insecure_registries: Vec<String>,
    /// Mirrors, rewrites, credentials and TLS per registry (`--registries`), re-read when
    /// the file changes.
    pub registries: Option<std::sync::Arc<super::RegistriesFile>>,
}

/// An image in the store, as the CRI and the runtime see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The image ID: the digest of its config (`sha256:<hex>`).
    pub id: String,
    /// Normalised `registry/repository:tag` names pointing at it.
    pub repo_tags: Vec<String>,
    /// `registry/repository@<manifest or index digest>` names pointing at it.
    pub repo_digests: Vec<String>,
    /// Digest of the platform manifest the layers came from.
    pub manifest_digest: String,
    /// Bytes of content: manifest, config and compressed layers.
    pub size: u64,
    /// Layers, lowest first.
    pub layers: Vec<Layer>,
    /// The parsed image config (`config.Entrypoint`, `Cmd`, `Env`, `User`, ...).
    pub config: ImageConfiguration,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    /// Digest of the blob as distributed (compressed or not).
    pub digest: String,
    /// Size of that blob.
    pub size: u64,
    /// Digest of the uncompressed tar stream.
    pub diff_id: String,
    /// Identity of this layer on top of the ones below it; names the unpacked directory.
    pub chain_id: String,
}

impl Image {
    /// The execution defaults (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal,
    /// ExposedPorts, Volumes), if the image has any.
    pub fn runtime_config(&self) -> Option<&Config> {
        self.config.config().as_ref()
    }
}

/// Bytes and inodes used by the store, for `ImageFsInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// Mount point of the file system holding the store.
    pub mountpoint: PathBuf,
    /// Bytes allocated under the store root.
    pub used_bytes: u64,
    /// Distinct inodes under the store root.
    pub inodes_used: u64,
}

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    images: BTreeMap<String, Image>,
    leases: BTreeMap<String, Lease>,
}

/// A holder's (container's) claim on the layers of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    image_id: String,
    chain_ids: Vec<String>,
}

struct Inner {
    state: State,
    /// Blob digests and chain ids in use by pulls and imports in progress, with counts.
    pins: HashMap<String, usize>,
}

/// The content-addressed image store. See the module documentation of `crate::image` for the
/// layout on disk.
///
/// `pull` is async and keeps slow work (downloads, hashing, unpacking) off the async threads.
/// The other methods do file system work directly (`remove`, `release` and `lease` may delete
/// layer trees, `import` copies and unpacks) and are best called from
/// `tokio::task::spawn_blocking` or a blocking context; `get`, `list` and `leases` only read
/// memory.
pub struct ImageStore {
    root: PathBuf,
    options: StoreOptions,
    inner: Mutex<Inner>,
    /// Pulls in progress, by normalised reference and credentials, that others may join.
    pub(crate) flights: Mutex<super::pull::Flights>,
    _lock: Flock<File>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Pins on blobs and layers a pull is creating, released when dropped.
pub(crate) struct Pins<'a> {
    store: &'a ImageStore,
    keys: Vec<String>,
}

impl Pins<'_> {
    /// Protects `key` (a blob digest or chain id) from garbage collection until drop.
    pub(crate) fn add(&mut self, key: &str) {
        *self.store.lock().pins.entry(key.to_string()).or_default() += 1;
        self.keys.push(key.to_string());
    }
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let mut inner = self.store.lock();
        for key in &self.keys {
            if let Some(count) = inner.pins.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    inner.pins.remove(key);
                }
            }
        }
    }
}

/// What a pull or import hands to [`ImageStore::commit_image`].
pub(crate) struct NewImage<'a> {
    /// The platform manifest (already stored as a blob, like the config and layers).
    pub manifest: &'a ImageManifest,
    pub manifest_digest: String,
    pub manifest_size: u64,
    /// Names to point at the image.
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root` with default options.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        Self::open_with(root, StoreOptions::default())
    }

    /// Opens the store under `root`: takes its lock (one process per store), loads the state
    /// and deletes what an interrupted pull, import or removal left behind.
    pub fn open_with(root: impl Into<PathBuf>, options: StoreOptions) -> Result<Self, ImageError> {
        let root = root.into();
        let images = root.join("images");
        for dir in [
            images.join("blobs/sha256"),
            images.join("ingest"),
            root.join("layers"),
        ] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        }
        let lock_path = images.join("lock");
        let lock_file = File::create(&lock_path).map_err(ImageError::io("create", &lock_path))?;
        let lock =
            Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
                if errno == nix::errno::Errno::EWOULDBLOCK {
                    ImageError::Locked {
                        path: lock_path.clone(),
                    }
                } else {
                    ImageError::io("lock", &lock_path)(errno.into())
                }
            })?;
        let state_path = images.join("state.json");
        let state = match fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes).map_err(|e| ImageError::Corrupt {
                    path: state_path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => State {
                version: STATE_VERSION,
                ..State::default()
            },
            Err(e) => return Err(ImageError::io("read", &state_path)(e)),
        };
        if state.version != STATE_VERSION {
            return Err(ImageError::Corrupt {
                path: state_path,
                reason: format!(
                    "state format version {}, this build reads version {STATE_VERSION}",
                    state.version
                ),
            });
        }
        let store = ImageStore {
            root,
            options,
            inner: Mutex::new(Inner {
                state,
                pins: HashMap::new(),
            }),
            flights: Mutex::default(),
            _lock: lock,
        };
        clear_dir(&store.ingest_dir())?;
        let layers = store.root.join("layers");
        for entry in fs::read_dir(&layers).map_err(ImageError::io("read", &layers))? {
            let entry = entry.map_err(ImageError::io("read", &layers))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TRASH_PREFIX)
            {
                remove_path(&entry.path())?;
            }
        }
        store.collect_garbage(store.lock())?;
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The image named by a tag (`busybox`, `127.0.0.1:5000/x:1`), a repo digest
    /// (`x@sha256:...`), an ID (`sha256:<hex>` or `<hex>`) or a unique prefix of an ID.
    pub fn get(&self, reference_or_id: &str) -> Option<Image> {
        let inner = self.lock();
        find(&inner.state, reference_or_id).cloned()
    }

    /// Every image, ordered by ID.
    pub fn list(&self) -> Vec<Image> {
        self.lock().state.images.values().cloned().collect()
    }

    /// Removes the image `reference_or_id` resolves to, with all its names, then deletes the
    /// blobs and layers that no image, lease or pull in progress uses. Removing an image that
    /// does not exist succeeds and returns `None`.
    pub fn remove(&self, reference_or_id: &str) -> Result<Option<Image>, ImageError> {
        let mut inner = self.lock();
        let Some(id) = find(&inner.state, reference_or_id).map(|image| image.id.clone()) else {
            return Ok(None);
        };
        let removed = inner.state.images.remove(&id);
        self.save(&inner)?;
        self.collect_garbage(inner)?;
        Ok(removed)
    }

    /// Records that `holder` (a container) uses the layers of `image` (anything [`get`]
    /// accepts) and returns their unpacked directories, lowest first, for an overlay mount.
    /// The layers outlive the image until [`release`]. A holder has one lease; leasing again
    /// replaces it.
    ///
    /// [`get`]: ImageStore::get
    /// [`release`]: ImageStore::release
    pub fn lease(&self, holder: &str, image: &str) -> Result<Vec<PathBuf>, ImageError> {
        let mut inner = self.lock();
        let found = find(&inner.state, image).ok_or_else(|| ImageError::NotFound {
            reference: image.to_string(),
            detail: "no such image in the store".to_string(),
        })?;
        let lease = Lease {
            image_id: found.id.clone(),
            chain_ids: found.layers.iter().map(|l| l.chain_id.clone()).collect(),
        };
        let dirs = lease.chain_ids.iter().map(|c| self.layer_dir(c)).collect();
        let previous = inner.state.leases.insert(holder.to_string(), lease);
        self.save(&inner)?;
        if previous.is_some() {
            self.collect_garbage(inner)?;
        }
        Ok(dirs)
    }

    /// Drops `holder`'s lease (none is fine) and deletes layers nothing uses any more.
    pub fn release(&self, holder: &str) -> Result<(), ImageError> {
        let mut inner = self.lock();
        if inner.state.leases.remove(holder).is_none() {
            return Ok(());
        }
        self.save(&inner)?;
        self.collect_garbage(inner)
    }

    /// Deletes what nothing references, after a failed pull or import; failures are only
    /// logged (the next open retries).
    pub(crate) fn sweep(&self) {
        if let Err(e) = self.collect_garbage(self.lock()) {
            tracing::warn!(error = %e, "sweeping unreferenced image content failed");
        }
    }

    /// The holders with leases, and the image ID each leased.
    pub fn leases(&self) -> Vec<(String, String)> {
        let inner = self.lock();
        inner
            .state
            .leases
            .iter()
            .map(|(holder, lease)| (holder.clone(), lease.image_id.clone()))
            .collect()
    }

    /// Bytes and inodes under the store root and the mount point holding it. Walks the tree,
    /// counting each inode once (layers share files through hard links).
    pub fn fs_info(&self) -> Result<FsUsage, ImageError> {
        let disk = |e: crate::disk::DiskError| ImageError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        };
        let usage = crate::disk::tree_usage(&self.root).map_err(disk)?;
        Ok(FsUsage {
            mountpoint: crate::disk::mountpoint_of(&self.root).map_err(disk)?,
            used_bytes: usage.bytes,
            inodes_used: usage.inodes,
        })
    }

    // ---- used by pull and import ----

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (the file is written last).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn pins(&self) -> Pins<'_> {
        Pins {
            store: self,
            keys: Vec::new(),
        }
    }

    pub(crate) fn ingest_dir(&self) -> PathBuf {
        self.root.join("images/ingest")
    }

    /// A fresh path in the ingest directory.
    pub(crate) fn ingest_path(&self, what: &str) -> PathBuf {
        self.ingest_dir()
            .join(format!("{what}-{:016x}", rand::random::<u64>()))
    }

    pub(crate) fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
        self.root.join("images/blobs/sha256").join(hex)
    }

    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    pub(crate) fn layer_dir(&self, chain_id: &str) -> PathBuf {
        let hex = chain_id.split_once(':').map_or(chain_id, |(_, hex)| hex);
        self.root.join("layers").join(hex)
    }

    /// Checks that the file at `tmp` hashes to `digest`, syncs it and moves it to its blob
    /// path. `tmp` is removed either way.
    pub(crate) fn commit_blob_file(
        &self,
        tmp: &Path,
        digest: &str,
        what: &str,
    ) -> Result<(), ImageError> {
        commit_file(tmp, &self.blob_path(digest), digest, what)
    }

    /// Stores `bytes` as the blob `digest` after checking the hash.
    pub(crate) fn put_blob(
        &self,
        bytes: &[u8],
        digest: &str,
        what: &str,
    ) -> Result<(), ImageError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let tmp = self.ingest_path("blob");
        let mut file = File::create(&tmp).map_err(ImageError::io("create", &tmp))?;
        file.write_all(bytes)
            .map_err(ImageError::io("write", &tmp))?;
        drop(file);
        self.commit_blob_file(&tmp, digest, what)
    }

    /// Reads and parses the stored config blob `digest`.
    pub(crate) fn read_config(&self, digest: &str) -> Result<ImageConfiguration, ImageError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(ImageError::io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Corrupt {
            path,
            reason: format!("image config {digest}: {e}"),
        })
    }

    /// Unpacks the layers of `new` (blobs already stored, pinned by the caller together with
    /// the chain ids, which `pins` receives here) and records the image under its names:
    /// names move from any image holding them, and an image left without names is removed.
    pub(crate) async fn commit_image(
        &self,
        new: NewImage<'_>,
        pins: &mut Pins<'_>,
    ) -> Result<Image, ImageError> {
        let config_digest = new.manifest.config().digest().to_string();
        let config = self.read_config(&config_digest)?;
        let diff_ids = config.rootfs().diff_ids();
        let blobs = new.manifest.layers();
        if diff_ids.len() != blobs.len() {
            return Err(ImageError::Corrupt {
                path: self.blob_path(&config_digest),
                reason: format!(
                    "image config lists {} layers, manifest {} has {}",
                    diff_ids.len(),
                    new.manifest_digest,
                    blobs.len()
                ),
            });
        }
        let chain_ids = chain_ids(diff_ids);
        let mut layers = Vec::with_capacity(blobs.len());
        for ((blob, diff_id), chain_id) in blobs.iter().zip(diff_ids).zip(&chain_ids) {
            pins.add(chain_id);
            let dir = self.layer_dir(chain_id);
            if !dir.is_dir() {
                let blob_path = self.blob_path(blob.digest().as_ref());
                let diff_id = diff_id.clone();
                let tmp = self
                    .root
                    .join("layers")
                    .join(format!("{TMP_PREFIX}{:016x}", rand::random::<u64>()));
                tokio::task::spawn_blocking(move || {
                    unpack_into_place(&blob_path, &tmp, &dir, &diff_id)
                })
                .await
                .map_err(|e| ImageError::io("unpack", &self.root)(io::Error::other(e)))??;
            }
            layers.push(Layer {
                digest: blob.digest().to_string(),
                size: blob.size(),
                diff_id: diff_id.clone(),
                chain_id: chain_id.clone(),
            });
        }
        let size = new.manifest_size
            + new.manifest.config().size()
            + blobs.iter().map(|b| b.size()).sum::<u64>();
        let image = Image {
            id: config_digest,
            repo_tags: new.repo_tags,
            repo_digests: new.repo_digests,
            manifest_digest: new.manifest_digest,
            size,
            layers,
            config,
        };
        self.record(image)
    }

    fn record(&self, image: Image) -> Result<Image, ImageError> {
        let mut inner = self.lock();
        let images = &mut inner.state.images;
        let mut orphaned = Vec::new();
        for other in images.values_mut().filter(|other| other.id != image.id) {
            let names_before = other.repo_tags.len() + other.repo_digests.len();
            other.repo_tags.retain(|t| !image.repo_tags.contains(t));
            other
                .repo_digests
                .retain(|d| !image.repo_digests.contains(d));
            let lost_all =
                names_before > 0 && other.repo_tags.is_empty() && other.repo_digests.is_empty();
            if lost_all {
                orphaned.push(other.id.clone());
            }
        }
        for id in &orphaned {
            images.remove(id);
        }
        let merged = match images.get_mut(&image.id) {
            Some(existing) => {
                for tag in image.repo_tags {
                    if !existing.repo_tags.contains(&tag) {
                        existing.repo_tags.push(tag);
                    }
                }
                for digest in image.repo_digests {
                    if !existing.repo_digests.contains(&digest) {
                        existing.repo_digests.push(digest);
                    }
                }
                existing.clone()
            }
            None => {
                images.insert(image.id.clone(), image.clone());
                image
            }
        };
        self.save(&inner)?;
        if !orphaned.is_empty() {
            self.collect_garbage(inner)?;
        }
        Ok(merged)
    }

    /// Writes the state file: temporary file, fsync, rename, fsync of the directory.
    fn save(&self, inner: &Inner) -> Result<(), ImageError> {
        let dir = self.root.join("images");
        let path = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        let bytes = serde_json::to_vec_pretty(&inner.state).map_err(|e| ImageError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut file = File::create(&tmp).map_err(ImageError::io("create", &tmp))?;
        file.write_all(&bytes)
            .map_err(ImageError::io("write", &tmp))?;
        file.sync_all().map_err(ImageError::io("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(ImageError::io("rename", &path))?;
        sync_dir(&dir)
    }

    /// Deletes blobs and layer directories that no image, lease or pin names, and temporary
    /// layer directories nothing is writing to. Under the lock, blobs are deleted and dead
    /// layer directories only renamed aside; their trees are deleted after the lock is
    /// released (what a crash leaves of them goes at the next open).
    fn collect_garbage(&self, inner: MutexGuard<'_, Inner>) -> Result<(), ImageError> {
        let mut live: HashSet<&str> = inner.pins.keys().map(String::as_str).collect();
        for image in inner.state.images.values() {
            live.insert(&image.id);
            live.insert(&image.manifest_digest);
            for digest in &image.repo_digests {
                if let Some((_, digest)) = digest.rsplit_once('@') {
                    live.insert(digest);
                }
            }
            for layer in &image.layers {
                live.insert(&layer.digest);
                live.insert(&layer.chain_id);
            }
        }
        for lease in inner.state.leases.values() {
            live.extend(lease.chain_ids.iter().map(String::as_str));
        }
        let live_hex: HashSet<&str> = live
            .iter()
            .map(|key| key.split_once(':').map_or(*key, |(_, hex)| hex))
            .collect();
        let tmp_in_use = !inner.pins.is_empty();
        let layers = self.root.join("layers");
        let mut trash = Vec::new();
        for dir in [self.root.join("images/blobs/sha256"), layers.clone()] {
            let entries = fs::read_dir(&dir).map_err(ImageError::io("read", &dir))?;
            for entry in entries {
                let entry = entry.map_err(ImageError::io("read", &dir))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let keep = live_hex.contains(name.as_ref())
                    || name.starts_with(TRASH_PREFIX)
                    || (tmp_in_use && name.starts_with(TMP_PREFIX));
                if keep {
                    continue;
                }
                let path = entry.path();
                tracing::debug!(path = %path.display(), "removing unreferenced image content");
                if dir == layers {
                    let aside =
                        layers.join(format!("{TRASH_PREFIX}{:016x}", rand::random::<u64>()));
                    fs::rename(&path, &aside).map_err(ImageError::io("rename", &path))?;
                    trash.push(aside);
                } else {
                    remove_path(&path)?;
                }
            }
        }
        drop(inner);
        for path in trash {
            // The state no longer names it; a failure here only leaves garbage for next open.
            if let Err(e) = remove_path(&path) {
                tracing::warn!(error = %e, "deleting an unused layer failed");
            }
        }
        Ok(())
    }
}

/// The image `key` names in `state`; see [`ImageStore::get`].
fn find<'a>(state: &'a State, key: &str) -> Option<&'a Image> {
    if let Some(image) = state.images.get(key) {
        return Some(image);
    }
    let hex = key.strip_prefix("sha256:").unwrap_or(key);
    let is_hex = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_hex && hex.len() == 64 {
        return state.images.get(&format!("sha256:{hex}"));
    }
    if let Ok(reference) = ImageReference::parse(key) {
        let by_name = match (&reference.digest, reference.repo_tag()) {
            (Some(digest), _) => {
                let name = reference.repo_digest(digest);
                state
                    .images
                    .values()
                    .find(|i| i.repo_digests.contains(&name))
            }
            (None, Some(tag)) => state.images.values().find(|i| i.repo_tags.contains(&tag)),
            (None, None) => None,
        };
        if by_name.is_some() {
            return by_name;
        }
    }
    if is_hex {
        let mut matches = state.images.values().filter(|i| {
            i.id.strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(hex))
        });
        let first = matches.next();
        if matches.next().is_none() {
            return first;
        }
    }
    None
}

/// Chain ids of a layer stack: the first is its diff id, each next one
/// `sha256(parent chain id + " " + diff id)`.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_bytes(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

pub(crate) fn sha256_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub(crate) fn sha256_reader(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// Checks that the file at `tmp` hashes to `digest`, syncs it and renames it to `dest` (a
/// blob path). `tmp` is removed either way. Blocking; the pieces are owned-friendly so pulls
/// can run it on the blocking pool.
pub(crate) fn commit_file(
    tmp: &Path,
    dest: &Path,
    digest: &str,
    what: &str,
) -> Result<(), ImageError> {
    let result = (|| {
        check_digest_format(digest, what)?;
        let mut file = File::open(tmp).map_err(ImageError::io("open", tmp))?;
        let actual = sha256_reader(&mut file).map_err(ImageError::io("read", tmp))?;
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        file.sync_all().map_err(ImageError::io("sync", tmp))?;
        fs::rename(tmp, dest).map_err(ImageError::io("rename", dest))?;
        sync_dir(dest.parent().unwrap_or(Path::new("/")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// Refuses digests this store cannot verify (only sha256 is stored).
pub(crate) fn check_digest_format(digest: &str, what: &str) -> Result<(), ImageError> {
    validate_digest(digest).map_err(|reason| ImageError::Corrupt {
        path: PathBuf::from(what),
        reason,
    })?;
    if !digest.starts_with("sha256:") {
        return Err(ImageError::UnsupportedMediaType {
            media_type: digest.to_string(),
            what: format!("{what} (only sha256 digests are supported)"),
        });
    }
    Ok(())
}

/// Unpacks `blob` into `tmp`, checks the diff id, syncs and renames `tmp` to `dest`. On any
/// failure `tmp` is removed; if another pull finished the same layer first, its copy stays.
fn unpack_into_place(
    blob: &Path,
    tmp: &Path,
    dest: &Path,
    diff_id: &str,
) -> Result<(), ImageError> {
    let result = (|| {
        fs::create_dir(tmp).map_err(ImageError::io("create", tmp))?;
        let actual = unpack::unpack_layer(blob, tmp)?;
        if actual != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {}", blob.display()),
                expected: diff_id.to_string(),
                actual,
            });
        }
        let dir = File::open(tmp).map_err(ImageError::io("open", tmp))?;
        nix::unistd::syncfs(&dir).map_err(|e| ImageError::io("sync", tmp)(e.into()))?;
        match fs::rename(tmp, dest) {
            Ok(()) => Ok(()),
            Err(_) if dest.is_dir() => remove_path(tmp),
            Err(e) => Err(ImageError::io("rename", dest)(e)),
        }
    })();
    if result.is_err() {
        let _ = remove_path(tmp);
    }
    result
}

fn remove_path(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(ImageError::io("remove", path))
}

/// Empties `dir`, keeping the directory.
fn clear_dir(dir: &Path) -> Result<(), ImageError> {
    for entry in fs::read_dir(dir).map_err(ImageError::io("read", dir))? {
        let entry = entry.map_err(ImageError::io("read", dir))?;
        remove_path(&entry.path())?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::unpack::tests::TarBuilder;
    use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};

    fn tar_with(files: &[(&str, &str)]) -> Vec<u8> {
        let mut tar = TarBuilder::new();
        for (path, data) in files {
            tar.file(path, data.as_bytes());
        }
        tar.finish()
    }

    /// Stores blobs for an image of `layers` (plain tars, lowest first) and records it as `name`.
    async fn add_image(
        store: &ImageStore,
        name: &str,
        layers: &[Vec<u8>],
    ) -> Result<Image, ImageError> {
        add_image_with_diff_ids(store, name, layers, None).await
    }

    async fn add_image_with_diff_ids(
        store: &ImageStore,
        name: &str,
        layers: &[Vec<u8>],
        diff_ids: Option<Vec<String>>,
    ) -> Result<Image, ImageError> {
        let mut pins = store.pins();
        let mut descriptors = Vec::new();
        for layer in layers {
            let digest = sha256_bytes(layer);
            pins.add(&digest);
            store.put_blob(layer, &digest, "layer")?;
            descriptors.push(Descriptor::new(
                MediaType::ImageLayer,
                layer.len() as u64,
                digest.parse::<oci_spec::image::Digest>().unwrap(),
            ));
        }
        let diff_ids = diff_ids.unwrap_or_else(|| layers.iter().map(|l| sha256_bytes(l)).collect());
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"], "User": "1000", "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = sha256_bytes(&config);
        pins.add(&config_digest);
        store.put_blob(&config, &config_digest, "config")?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config.len() as u64,
                config_digest.parse::<oci_spec::image::Digest>().unwrap(),
            ))
            .layers(descriptors)
            .build()
            .unwrap();
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = sha256_bytes(&manifest_bytes);
        pins.add(&manifest_digest);
        store.put_blob(&manifest_bytes, &manifest_digest, "manifest")?;
        let reference = ImageReference::parse(name).unwrap();
        let new = NewImage {
            manifest: &manifest,
            manifest_digest: manifest_digest.clone(),
            manifest_size: manifest_bytes.len() as u64,
            repo_tags: reference.repo_tag().into_iter().collect(),
            repo_digests: vec![reference.repo_digest(&manifest_digest)],
        };
        store.commit_image(new, &mut pins).await
    }

    /// Runs a test body under a deadline.
    async fn timed(body: impl std::future::Future<Output = ()>) {
        tokio::time::timeout(std::time::Duration::from_secs(60), body)
            .await
            .expect("test timed out");
    }

    fn count(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn images_survive_reopening_and_resolve_by_tag_digest_id_and_prefix() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = ImageStore::open(root.path()).unwrap();
            let image = add_image(&store, "busybox:1", &[tar_with(&[("bin/sh", "elf")])])
                .await
                .unwrap();
            assert_eq!(image.repo_tags, ["docker.io/library/busybox:1"]);
            assert_eq!(
                image.runtime_config().unwrap().cmd().as_deref(),
                Some(&["sh".to_string()][..])
            );
            drop(store);

            let store = ImageStore::open(root.path()).unwrap();
            assert_eq!(store.list(), std::slice::from_ref(&image));
            let hex = image.id.strip_prefix("sha256:").unwrap();
            for key in [
                "busybox:1",
                "docker.io/library/busybox:1",
                image.repo_digests[0].as_str(),
                &format!("busybox@{}", image.manifest_digest),
                image.id.as_str(),
                hex,
                &hex[..12],
                &format!("sha256:{}", &hex[..5]),
            ] {
                assert_eq!(
                    store.get(key).as_ref().map(|i| &i.id),
                    Some(&image.id),
                    "{key}"
                );
            }
            for key in ["busybox", "busybox:2", "other:1", "ffffffffffff"] {
                assert!(store.get(key).is_none(), "{key}");
            }
            let layer = store.layer_dir(&image.layers[0].chain_id);
            assert_eq!(fs::read(layer.join("bin/sh")).unwrap(), b"elf");
        })
        .await;
    }

    #[tokio::test]
    async fn open_deletes_what_an_interrupted_pull_left_behind() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = ImageStore::open(root.path()).unwrap();
            let image = add_image(&store, "kept:1", &[tar_with(&[("a", "1")])])
                .await
                .unwrap();
            drop(store);
            let images = root.path().join("images");
            let layers = root.path().join("layers");
            fs::write(images.join("ingest/download-1"), b"partial").unwrap();
            fs::create_dir(layers.join(".tmp-123")).unwrap();
            fs::write(layers.join(".tmp-123/half"), b"x").unwrap();
            fs::create_dir_all(layers.join(".trash-9/bin")).unwrap();
            fs::write(images.join("blobs/sha256").join("ab".repeat(32)), b"orphan").unwrap();
            fs::create_dir(layers.join("cd".repeat(32))).unwrap();
            fs::write(images.join("state.json.tmp"), b"{trunc").unwrap();

            let store = ImageStore::open(root.path()).unwrap();
            assert_eq!(count(&images.join("ingest")), 0);
            assert_eq!(count(&layers), 1);
            assert!(store.layer_dir(&image.layers[0].chain_id).is_dir());
            // manifest, config, layer
            assert_eq!(count(&images.join("blobs/sha256")), 3);
            assert_eq!(store.get("kept:1").unwrap(), image);
        })
        .await;
    }

    #[tokio::test]
    async fn a_corrupt_state_file_is_an_error_naming_it() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            drop(ImageStore::open(root.path()).unwrap());
            for bad in [
                &b"{not json"[..],
                br#"{"version": 2, "images": {}, "leases": {}}"#,
            ] {
                fs::write(root.path().join("images/state.json"), bad).unwrap();
                let err = ImageStore::open(root.path()).unwrap_err();
                assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
                assert!(err.to_string().contains("state.json"), "{err}");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_second_open_of_one_store_is_refused() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let _store = ImageStore::open(root.path()).unwrap();
            assert!(matches!(
                ImageStore::open(root.path()),
                Err(ImageError::Locked { .. })
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn shared_layers_live_until_no_image_or_lease_uses_them() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = ImageStore::open(root.path()).unwrap();
            let base = tar_with(&[("base", "b")]);
            let a = add_image(&store, "a:1", &[base.clone(), tar_with(&[("a", "a")])])
                .await
                .unwrap();
            let b = add_image(&store, "b:1", &[base, tar_with(&[("b", "b")])])
                .await
                .unwrap();
            assert_eq!(a.layers[0].chain_id, b.layers[0].chain_id);
            assert_ne!(a.layers[1].chain_id, b.layers[1].chain_id);
            let layers = root.path().join("layers");
            assert_eq!(count(&layers), 3);

            let dirs = store.lease("container-1", "b:1").unwrap();
            assert_eq!(
                dirs,
                b.layers
                    .iter()
                    .map(|l| store.layer_dir(&l.chain_id))
                    .collect::<Vec<_>>()
            );
            assert!(dirs[1].join("b").is_file());

            assert_eq!(
                store.remove("a:1").unwrap().map(|i| i.id),
                Some(a.id.clone())
            );
            assert_eq!(
                count(&layers),
                2,
                "a's own layer goes, the shared one stays"
            );
            assert!(!store.layer_dir(&a.layers[1].chain_id).exists());

            store.remove(&b.id).unwrap();
            assert!(store.list().is_empty());
            assert_eq!(count(&layers), 2, "the lease keeps b's layers");
            assert_eq!(
                store.remove("b:1").unwrap(),
                None,
                "removing a missing image succeeds"
            );
            drop(store);

            let store = ImageStore::open(root.path()).unwrap();
            assert_eq!(store.leases(), [("container-1".to_string(), b.id.clone())]);
            assert_eq!(count(&layers), 2, "leases persist across reopening");
            store.release("container-1").unwrap();
            store.release("container-1").unwrap();
            assert_eq!(count(&layers), 0);
            assert_eq!(count(&root.path().join("images/blobs/sha256")), 0);
            assert!(matches!(
                store.lease("c2", "b:1"),
                Err(ImageError::NotFound { .. })
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn a_moved_tag_leaves_the_old_image_known_by_its_repo_digest() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = ImageStore::open(root.path()).unwrap();
            let old = add_image(&store, "app:1", &[tar_with(&[("v", "1")])])
                .await
                .unwrap();
            let mut repo_digest_only = old.clone();
            repo_digest_only.repo_tags.clear();
            let new = add_image(&store, "app:1", &[tar_with(&[("v", "2")])])
                .await
                .unwrap();
            assert_eq!(store.get("app:1").unwrap().id, new.id);
            // The old image keeps its repo digest, as containerd keeps name@digest.
            assert_eq!(store.get(&old.id), Some(repo_digest_only));
        })
        .await;
    }

    #[tokio::test]
    async fn a_layer_not_matching_its_diff_id_is_refused_and_leaves_nothing() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = ImageStore::open(root.path()).unwrap();
            let wrong = vec![sha256_bytes(b"something else")];
            let err =
                add_image_with_diff_ids(&store, "bad:1", &[tar_with(&[("a", "1")])], Some(wrong))
                    .await
                    .unwrap_err();
            assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
            assert_eq!(count(&root.path().join("layers")), 0);
            assert!(store.list().is_empty());
        })
        .await;
    }

    #[tokio::test]
    async fn a_blob_not_matching_its_digest_is_refused() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = ImageStore::open(root.path()).unwrap();
            let err = store
                .put_blob(b"abc", &sha256_bytes(b"abd"), "test blob")
                .unwrap_err();
            assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
            assert_eq!(count(&root.path().join("images/ingest")), 0);
            assert_eq!(count(&root.path().join("images/blobs/sha256")), 0);
        })
        .await;
    }

    #[tokio::test]
    async fn fs_info_counts_bytes_and_inodes_of_the_store() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = ImageStore::open(root.path()).unwrap();
            let empty = store.fs_info().unwrap();
            add_image(&store, "x:1", &[tar_with(&[("big", &"x".repeat(100_000))])])
                .await
                .unwrap();
            let used = store.fs_info().unwrap();
            assert!(
                used.used_bytes >= empty.used_bytes + 200_000,
                "{empty:?} {used:?}"
            );
            assert!(used.inodes_used > empty.inodes_used);
            assert!(root.path().starts_with(&used.mountpoint));
        })
        .await;
    }

    #[tokio::test]
    async fn overlayfs_honours_the_translated_whiteouts() {
        timed(async {
            let root = tempfile::tempdir().unwrap();
            let store = ImageStore::open(root.path()).unwrap();
            let lower = tar_with(&[("etc/passwd", "root"), ("etc/group", "g"), ("var/a", "a")]);
            let upper = tar_with(&[
                ("etc/.wh.passwd", ""),
                ("var/.wh..wh..opq", ""),
                ("var/b", "b"),
            ]);
            let image = add_image(&store, "wh:1", &[lower, upper]).await.unwrap();
            let dirs = store.lease("c", &image.id).unwrap();
            let target = root.path().join("mnt");
            fs::create_dir(&target).unwrap();
            // overlayfs lists lower directories topmost first.
            let lowerdir = dirs
                .iter()
                .rev()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>();
            let options = format!("lowerdir={}", lowerdir.join(":"));
            let mounted = nix::mount::mount(
                Some("overlay"),
                &target,
                Some("overlay"),
                nix::mount::MsFlags::MS_RDONLY,
                Some(options.as_str()),
            );
            if let Err(e) = mounted {
                eprintln!("skipped: cannot mount overlayfs here: {e}");
                return;
            }
            let seen = (
                target.join("etc/passwd").exists(),
                target.join("etc/group").exists(),
                target.join("var/a").exists(),
                target.join("var/b").exists(),
            );
            nix::mount::umount(&target).unwrap();
            assert_eq!(
                seen,
                (false, true, false, true),
                "passwd, group, var/a, var/b"
            );
        })
        .await;
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let diff = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let ids = chain_ids(&[diff('a'), diff('b')]);
        assert_eq!(ids[0], diff('a'));
        assert_eq!(
            ids[1],
            sha256_bytes(format!("{} {}", diff('a'), diff('b')).as_bytes())
        );
    }
}
