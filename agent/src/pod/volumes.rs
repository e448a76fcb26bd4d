//! Pod volumes on the node, under `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`: emptyDir
//! (a directory), hostPath (checked against its type), configMap, secret and downwardAPI
//! (files written with an atomic symlink swap as upstream's atomic writer does, so a running
//! pod sees a whole new version or the old one, never a mix), and persistentVolumeClaim (the
//! bound PersistentVolume's hostPath or local path; until the claim is bound the pod waits
//! in ContainerCreating with FailedMount events). Removed with the pod.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    KeyToPath, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod,
    Volume,
};

use super::config::{ConfigError, PodContext};

/// The directory of a pod's state.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ConfigError {
    move |e| ConfigError(format!("{what}: {e}"))
}

/// Writes `files` (relative path → bytes, mode) into `dir` atomically: a new timestamped
/// directory, `..data` swapped to point at it, and top-level names linked through `..data`.
pub fn atomic_write(
    dir: &Path,
    files: &BTreeMap<String, (Vec<u8>, u32)>,
) -> Result<(), ConfigError> {
    fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let current = fs::read_link(dir.join("..data")).ok();
    if let Some(current) = &current {
        let same = files.iter().all(|(path, (bytes, _))| {
            fs::read(dir.join(current).join(path)).ok().as_ref() == Some(bytes)
        }) && count_files(&dir.join(current)) == files.len();
        if same {
            return Ok(());
        }
    }
    let version = format!(
        "..{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
    );
    let version_dir = dir.join(&version);
    for (path, (bytes, mode)) in files {
        if path.split('/').any(|p| p == ".." || p.is_empty()) || path.starts_with("..") {
            return Err(ConfigError(format!("invalid volume file path {path:?}")));
        }
        let target = version_dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        fs::write(&target, bytes).map_err(io(format!("write {}", target.display())))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(*mode))
            .map_err(io(format!("chmod {}", target.display())))?;
    }
    fs::create_dir_all(&version_dir).map_err(io(format!("create {}", version_dir.display())))?;
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).map_err(io(format!("link {}", tmp.display())))?;
    fs::rename(&tmp, dir.join("..data"))
        .map_err(io(format!("swap {}", dir.join("..data").display())))?;
    let top: std::collections::BTreeSet<&str> = files
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link)
                .map_err(io(format!("link {}", link.display())))?;
        }
    }
    // Names no longer present, and old versions, go.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("..") {
                if name != "..data" && name != version && entry.path().is_dir() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            } else if !top.contains(name.as_str()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Files of a volume: relative path to content and mode.
type VolumeFiles = BTreeMap<String, (Vec<u8>, u32)>;

fn project(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
    optional: bool,
) -> Result<VolumeFiles, ConfigError> {
    let mut files = BTreeMap::new();
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => {
                        files.insert(
                            item.path.clone(),
                            (bytes.clone(), item.mode.map_or(default_mode, |m| m as u32)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(ConfigError(format!(
                            "configmap references non-existent config key: {} in {what}",
                            item.key
                        )));
                    }
                }
            }
        }
        _ => {
            for (key, bytes) in data {
                files.insert(key, (bytes, default_mode));
            }
        }
    }
    Ok(files)
}

fn volume_files(
    pod: &Pod,
    ctx: &PodContext,
    volume: &Volume,
) -> Result<Option<(&'static str, VolumeFiles)>, ConfigError> {
    if let Some(cm) = &volume.config_map {
        let optional = cm.optional == Some(true);
        let data: BTreeMap<String, Vec<u8>> = match ctx.config_maps.get(&cm.name) {
            Some(c) => c
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .chain(
                    c.binary_data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.0.clone())),
                )
                .collect(),
            None if optional => BTreeMap::new(),
            None => return Err(ConfigError(format!("configmap \"{}\" not found", cm.name))),
        };
        let mode = cm.default_mode.map_or(0o644, |m| m as u32);
        return Ok(Some((
            "kubernetes.io~configmap",
            project(data, cm.items.as_ref(), mode, &cm.name, optional)?,
        )));
    }
    if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional == Some(true);
        let data: BTreeMap<String, Vec<u8>> = match ctx.secrets.get(&name) {
            Some(secret) => secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            None if optional => BTreeMap::new(),
            None => return Err(ConfigError(format!("secret \"{name}\" not found"))),
        };
        let mode = s.default_mode.map_or(0o644, |m| m as u32);
        return Ok(Some((
            "kubernetes.io~secret",
            project(data, s.items.as_ref(), mode, &name, optional)?,
        )));
    }
    if let Some(d) = &volume.downward_api {
        let mut files = BTreeMap::new();
        let mode = d.default_mode.map_or(0o644, |m| m as u32);
        for item in d.items.iter().flatten() {
            let value = match &item.field_ref {
                Some(f) => downward_field(pod, ctx, &f.field_path)?,
                None => String::new(),
            };
            files.insert(
                item.path.clone(),
                (value.into_bytes(), item.mode.map_or(mode, |m| m as u32)),
            );
        }
        return Ok(Some(("kubernetes.io~downward-api", files)));
    }
    Ok(None)
}

fn downward_field(pod: &Pod, ctx: &PodContext, path: &str) -> Result<String, ConfigError> {
    let render = |map: &Option<BTreeMap<String, String>>| {
        map.iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    };
    match path {
        "metadata.labels" => Ok(render(&pod.metadata.labels)),
        "metadata.annotations" => Ok(render(&pod.metadata.annotations)),
        "metadata.name" => Ok(pod.metadata.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(pod.metadata.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(pod.metadata.uid.clone().unwrap_or_default()),
        "spec.nodeName" => Ok(ctx.node_name.clone()),
        other => Err(ConfigError(format!(
            "unsupported downwardAPI fieldRef {other:?}"
        ))),
    }
}

/// Prepares every volume of the pod and returns the host path of each.
pub fn prepare(
    root: &Path,
    pod: &Pod,
    ctx: &PodContext,
) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let volumes_dir = pod_dir(root, uid).join("volumes");
    let mut paths = BTreeMap::new();
    for volume in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let path = if volume.empty_dir.is_some() {
            let dir = volumes_dir
                .join("kubernetes.io~empty-dir")
                .join(&volume.name);
            fs::create_dir_all(&dir).map_err(io(format!("create emptyDir {}", dir.display())))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
                .map_err(io(format!("chmod {}", dir.display())))?;
            dir
        } else if let Some(host) = &volume.host_path {
            let path = PathBuf::from(&host.path);
            check_host_path(&path, host.type_.as_deref().unwrap_or(""))?;
            path
        } else if let Some(source) = &volume.persistent_volume_claim {
            claim_path(ctx, &volume.name, source)?
        } else if let Some((plugin, files)) = volume_files(pod, ctx, volume)? {
            let dir = volumes_dir.join(plugin).join(&volume.name);
            atomic_write(&dir, &files)?;
            dir
        } else {
            return Err(ConfigError(format!(
                "volume {:?}: this volume type is not supported by this node",
                volume.name
            )));
        };
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

/// How a FailedMount message starts while claims are not ready (upstream's words); such a
/// pod waits in ContainerCreating rather than failing.
const UNMOUNTED: &str = "Unable to attach or mount volumes";

/// Whether `e` says the pod waits for its claims to be bound.
pub fn is_waiting_for_volumes(e: &ConfigError) -> bool {
    e.0.starts_with(UNMOUNTED)
}

/// The claims the pod's volumes use.
pub fn claim_names(pod: &Pod) -> Vec<String> {
    pod_volumes(pod)
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// Volumes whose mounts are all read-only: claims with `readOnly`.
pub fn read_only_volumes(pod: &Pod) -> std::collections::BTreeSet<String> {
    pod_volumes(pod)
        .filter(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.read_only == Some(true))
        })
        .map(|v| v.name.clone())
        .collect()
}

fn pod_volumes(pod: &Pod) -> impl Iterator<Item = &Volume> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
}

/// The volume bound to claim `name` of `namespace`, from the claim and the volume it names
/// (as the API server has them), or why the pod cannot use it yet, in upstream's words.
pub fn bound_volume(
    namespace: &str,
    name: &str,
    claim: Option<&PersistentVolumeClaim>,
    volume: Option<PersistentVolume>,
) -> Result<PersistentVolume, String> {
    let claim = claim.ok_or_else(|| {
        format!("failed to fetch PVC from API server: persistentvolumeclaims {name:?} not found")
    })?;
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let (Some("Bound"), Some(volume_name)) = (phase, volume_name) else {
        return Err(format!(
            "error processing PVC {namespace}/{name}: PVC is not bound"
        ));
    };
    let volume = volume.ok_or_else(|| {
        format!(
            "failed to fetch PV {volume_name:?} from API server: persistentvolumes {volume_name:?} not found"
        )
    })?;
    let claim_ref_uid = volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.clone());
    if claim_ref_uid.is_some() && claim_ref_uid != claim.metadata.uid {
        return Err(format!(
            "error processing PVC {namespace}/{name}: the PV {volume_name:?} is bound to another claim"
        ));
    }
    Ok(volume)
}

/// The host directory of a claim's volume: the bound PersistentVolume's hostPath or local
/// path.
fn claim_path(
    ctx: &PodContext,
    volume: &str,
    source: &PersistentVolumeClaimVolumeSource,
) -> Result<PathBuf, ConfigError> {
    let unmounted = |why: &str| {
        ConfigError(format!(
            "{UNMOUNTED}: unmounted volumes=[{volume}], unattached volumes=[{volume}]: {why}"
        ))
    };
    let pv = match ctx.claims.get(&source.claim_name) {
        Some(Ok(pv)) => pv,
        Some(Err(why)) => return Err(unmounted(why)),
        None => return Err(unmounted("the claim was not looked up")),
    };
    let spec = pv.spec.clone().unwrap_or_default();
    if let Some(host) = &spec.host_path {
        let path = PathBuf::from(&host.path);
        check_host_path(&path, host.type_.as_deref().unwrap_or(""))?;
        return Ok(path);
    }
    if let Some(local) = &spec.local {
        let path = PathBuf::from(&local.path);
        if !path.exists() {
            return Err(ConfigError(format!(
                "MountVolume.NewMounter initialization failed for volume {:?} : path {:?} does not exist",
                pv.metadata.name.as_deref().unwrap_or_default(),
                local.path
            )));
        }
        return Ok(path);
    }
    Err(ConfigError(format!(
        "volume {volume:?}: persistent volume {:?} is of a type not supported by this node (hostPath and local are)",
        pv.metadata.name.as_deref().unwrap_or_default()
    )))
}

fn check_host_path(path: &Path, kind: &str) -> Result<(), ConfigError> {
    let meta = fs::metadata(path);
    let fail = |what: &str| {
        Err(ConfigError(format!(
            "hostPath type check failed: {} is not a {what}",
            path.display()
        )))
    };
    match kind {
        "DirectoryOrCreate" => {
            if meta.is_err() {
                fs::create_dir_all(path).map_err(io(format!("create {}", path.display())))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                    .map_err(io(format!("chmod {}", path.display())))?;
            } else if !path.is_dir() {
                return fail("directory");
            }
        }
        "Directory" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => return fail("directory"),
        "FileOrCreate" => {
            if meta.is_err() {
                fs::write(path, b"").map_err(io(format!("create {}", path.display())))?;
            } else if !path.is_file() {
                return fail("file");
            }
        }
        "File" if !meta.as_ref().is_ok_and(|m| m.is_file()) => return fail("file"),
        "Socket" | "CharDevice" | "BlockDevice" if meta.is_err() => return fail(kind),
        _ => {}
    }
    Ok(())
}

/// Removes the pod's directory (its volumes and state).
pub fn remove(root: &Path, uid: &str) {
    let _ = fs::remove_dir_all(pod_dir(root, uid));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(phase: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "c1"},
            "spec": {"volumeName": volume},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn host_pv(path: &Path, claim_uid: &str) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv1"},
            "spec": {"hostPath": {"path": path}, "claimRef": {"uid": claim_uid}},
        }))
        .unwrap()
    }

    fn pod_with_claim(read_only: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [], "volumes": [
                {"name": "vol", "persistentVolumeClaim": {"claimName": "data", "readOnly": read_only}}
            ]},
        }))
        .unwrap()
    }

    #[test]
    fn claims_resolve_to_their_bound_volume_only() {
        let dir = tempfile::tempdir().unwrap();
        let pv = host_pv(dir.path(), "c1");
        let err = bound_volume("ns", "data", None, None).unwrap_err();
        assert!(
            err.contains("persistentvolumeclaims \"data\" not found"),
            "{err}"
        );
        let err = bound_volume("ns", "data", Some(&claim("Pending", None)), None).unwrap_err();
        assert!(err.contains("PVC is not bound"), "{err}");
        let err = bound_volume("ns", "data", Some(&claim("Bound", Some("pv1"))), None).unwrap_err();
        assert!(err.contains("persistentvolumes \"pv1\" not found"), "{err}");
        let other = host_pv(dir.path(), "someone-else");
        assert!(
            bound_volume(
                "ns",
                "data",
                Some(&claim("Bound", Some("pv1"))),
                Some(other)
            )
            .is_err()
        );
        let got = bound_volume(
            "ns",
            "data",
            Some(&claim("Bound", Some("pv1"))),
            Some(pv.clone()),
        );
        assert_eq!(got, Ok(pv));
    }

    #[test]
    fn a_pod_waits_for_its_claim_then_mounts_the_volume_path() {
        let root = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let pod = pod_with_claim(true);
        assert_eq!(claim_names(&pod), vec!["data".to_string()]);
        assert!(read_only_volumes(&pod).contains("vol"));
        assert!(read_only_volumes(&pod_with_claim(false)).is_empty());
        let mut ctx = PodContext::default();
        ctx.claims.insert(
            "data".into(),
            bound_volume("ns", "data", Some(&claim("Pending", None)), None),
        );
        let err = prepare(root.path(), &pod, &ctx).unwrap_err();
        assert!(is_waiting_for_volumes(&err), "{err:?}");
        assert!(err.0.contains("unmounted volumes=[vol]"), "{err:?}");
        ctx.claims
            .insert("data".into(), Ok(host_pv(data.path(), "c1")));
        let paths = prepare(root.path(), &pod, &ctx).unwrap();
        assert_eq!(paths["vol"], data.path());
        // Other errors are not a wait.
        assert!(!is_waiting_for_volumes(&ConfigError(
            "configmap \"x\" not found".into()
        )));
    }

    #[test]
    fn atomic_writes_swap_versions_and_drop_old_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("a".to_string(), (b"1".to_vec(), 0o644));
        files.insert("sub/b".to_string(), (b"2".to_vec(), 0o400));
        atomic_write(dir.path(), &files).unwrap();
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"1");
        assert_eq!(fs::read(dir.path().join("sub/b")).unwrap(), b"2");
        let mode = fs::metadata(dir.path().join("sub/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o400);
        let mut next = BTreeMap::new();
        next.insert("a".to_string(), (b"3".to_vec(), 0o644));
        std::thread::sleep(std::time::Duration::from_millis(2));
        atomic_write(dir.path(), &next).unwrap();
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"3");
        assert!(
            fs::symlink_metadata(dir.path().join("sub")).is_err(),
            "a name no longer present is gone"
        );
        let versions = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.path().is_dir()
                    && e.file_name().to_string_lossy().starts_with("..")
                    && e.file_name() != "..data"
            })
            .count();
        assert_eq!(versions, 1);
        assert!(
            atomic_write(
                dir.path(),
                &BTreeMap::from([("../x".to_string(), (vec![], 0o644))])
            )
            .is_err()
        );
    }
}
