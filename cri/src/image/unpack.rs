//! Unpacking one layer (a tar stream, gzip-compressed or not) into a directory in the form
//! overlayfs expects of a lower directory: OCI whiteouts (`.wh.<name>`) become character
//! devices 0/0 and opaque markers (`.wh..wh..opq`) become the `trusted.overlay.opaque=y`
//! extended attribute on their directory.
//!
//! Entries keep their mode, ownership (when running as root), times, PAX extended attributes,
//! hard links, symlinks and device nodes. Entry paths with `..` are refused; symlinks met on
//! the way to an entry are followed inside the layer directory only, so nothing is ever
//! written outside it. The uncompressed stream is hashed as it is read and must match the
//! layer's diff id.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::ImageError;

/// Prefix of whiteout entries in OCI layers.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker in OCI layers.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The extended attribute overlayfs reads to treat a directory as opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Extended attributes overlayfs interprets.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
/// PAX records carrying extended attributes.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Symlinks followed while resolving one path before giving up (as the kernel's ELOOP).
const MAX_SYMLINK_HOPS: usize = 40;

/// Unpacks the layer blob at `blob` into `dest` (an empty directory) and returns the
/// `sha256:` digest of the uncompressed tar stream, which the caller compares with the diff id.
pub(crate) fn unpack_layer(blob: &Path, dest: &Path) -> Result<String, ImageError> {
    let mut file = File::open(blob).map_err(ImageError::io("open", blob))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(ImageError::io("read", blob))?;
    let head = io::Cursor::new(magic[..n].to_vec());
    let stream = head.chain(file);
    let decompressed: Box<dyn Read> = match &magic[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(stream)),
        [0x28, 0xb5, 0x2f, 0xfd] => {
            return Err(ImageError::UnsupportedMediaType {
                media_type: "zstd-compressed layer".to_string(),
                what: blob.display().to_string(),
            });
        }
        _ => Box::new(stream),
    };
    let mut hashing = HashingReader {
        inner: decompressed,
        hasher: Sha256::new(),
    };
    Unpacker::new(blob, dest).run(&mut hashing)?;
    io::copy(&mut hashing, &mut io::sink()).map_err(ImageError::io("read", blob))?;
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// A reader that hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// State of one unpack: where, from what, and the directories whose times are set last.
struct Unpacker<'a> {
    blob: &'a Path,
    dest: &'a Path,
    as_root: bool,
    dir_times: Vec<(PathBuf, filetime::FileTime)>,
}

impl<'a> Unpacker<'a> {
    fn new(blob: &'a Path, dest: &'a Path) -> Self {
        Unpacker {
            blob,
            dest,
            as_root: nix::unistd::geteuid().is_root(),
            dir_times: Vec::new(),
        }
    }

    fn invalid(&self, reason: String) -> ImageError {
        ImageError::InvalidContent {
            source_path: self.blob.to_path_buf(),
            reason,
        }
    }

    fn read_err(&self) -> impl FnOnce(io::Error) -> ImageError + '_ {
        |e| self.invalid(format!("reading tar stream: {e}"))
    }

    fn run(mut self, reader: &mut impl Read) -> Result<(), ImageError> {
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(self.read_err())? {
            let mut entry = entry.map_err(self.read_err())?;
            self.entry(&mut entry)?;
        }
        // Deepest first, so setting a child's times does not disturb its parent's.
        for (path, mtime) in self.dir_times.iter().rev() {
            filetime::set_symlink_file_times(path, *mtime, *mtime)
                .map_err(ImageError::io("set times of", path))?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw_path = entry.path().map_err(self.read_err())?.into_owned();
        let components = self.clean(&raw_path)?;
        let kind = entry.header().entry_type();
        let Some((name, parents)) = components.split_last() else {
            // The layer root itself ("./"): only its metadata matters.
            if kind.is_dir() {
                self.metadata(entry, self.dest)?;
            }
            return Ok(());
        };
        let parent = resolve_in_root(self.dest, parents, true)
            .map_err(|e| self.invalid(format!("{}: {e}", raw_path.display())))?;
        let name_str = name.to_string_lossy();
        if name_str == OPAQUE_MARKER {
            return xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(ImageError::io("set opaque xattr on", &parent));
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                // Other `.wh..wh.` names are aufs metadata, meaningless to overlayfs.
                tracing::debug!(path = %raw_path.display(), "skipping aufs metadata entry");
                return Ok(());
            }
            if matches!(hidden, "" | "." | "..") {
                return Err(self.invalid(format!("whiteout {} names no file", raw_path.display())));
            }
            let target = parent.join(hidden);
            remove_existing(&target)?;
            return mknod(&target, nix::sys::stat::SFlag::S_IFCHR, 0, 0, 0);
        }
        let target = parent.join(name);
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        remove_existing(&target)?;
                        fs::create_dir(&target).map_err(ImageError::io("create", &target))?;
                    }
                    Err(_) => fs::create_dir(&target).map_err(ImageError::io("create", &target))?,
                }
                self.metadata(entry, &target)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_existing(&target)?;
                let mut file = File::create(&target).map_err(ImageError::io("create", &target))?;
                io::copy(entry, &mut file).map_err(self.read_err())?;
                self.metadata(entry, &target)?;
            }
            EntryType::Symlink => {
                let link = entry.link_name().map_err(self.read_err())?.ok_or_else(|| {
                    self.invalid(format!("symlink {} has no target", raw_path.display()))
                })?;
                remove_existing(&target)?;
                symlink(&link, &target).map_err(ImageError::io("symlink", &target))?;
                self.metadata(entry, &target)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(self.read_err())?
                    .ok_or_else(|| {
                        self.invalid(format!("hard link {} has no target", raw_path.display()))
                    })?
                    .into_owned();
                let link_components = self.clean(&link)?;
                let Some((link_name, link_parents)) = link_components.split_last() else {
                    return Err(
                        self.invalid(format!("hard link {} to the root", raw_path.display()))
                    );
                };
                let source = resolve_in_root(self.dest, link_parents, false)
                    .map_err(|e| self.invalid(format!("hard link target {}: {e}", link.display())))?
                    .join(link_name);
                remove_existing(&target)?;
                fs::hard_link(&source, &target).map_err(|e| {
                    self.invalid(format!(
                        "hard link {} to {}: {e}",
                        raw_path.display(),
                        link.display()
                    ))
                })?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (flag, major, minor) = match kind {
                    EntryType::Fifo => (nix::sys::stat::SFlag::S_IFIFO, 0, 0),
                    _ => {
                        let header = entry.header();
                        let major = header.device_major().map_err(self.read_err())?.unwrap_or(0);
                        let minor = header.device_minor().map_err(self.read_err())?.unwrap_or(0);
                        let flag = if kind == EntryType::Char {
                            nix::sys::stat::SFlag::S_IFCHR
                        } else {
                            nix::sys::stat::SFlag::S_IFBLK
                        };
                        (flag, major, minor)
                    }
                };
                remove_existing(&target)?;
                let mode = entry.header().mode().map_err(self.read_err())? & 0o7777;
                mknod(&target, flag, mode, major, minor)?;
                self.metadata(entry, &target)?;
            }
            other => {
                tracing::debug!(path = %raw_path.display(), kind = ?other, "skipping tar entry");
            }
        }
        Ok(())
    }

    /// The entry path as plain names below the root; `..` anywhere is refused.
    fn clean(&self, path: &Path) -> Result<Vec<OsString>, ImageError> {
        let mut out = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(name) => out.push(name.to_os_string()),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(
                        self.invalid(format!("entry {} escapes the layer root", path.display()))
                    );
                }
            }
        }
        Ok(out)
    }

    /// Ownership, mode, extended attributes and times of an entry just written.
    fn metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<(), ImageError> {
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(self.read_err())? & 0o7777;
        let uid = header.uid().map_err(self.read_err())?;
        let gid = header.gid().map_err(self.read_err())?;
        let mtime = filetime::FileTime::from_unix_time(
            i64::try_from(header.mtime().map_err(self.read_err())?).unwrap_or(0),
            0,
        );
        if self.as_root {
            let uid =
                u32::try_from(uid).map_err(|_| self.invalid(format!("uid {uid} too large")))?;
            let gid =
                u32::try_from(gid).map_err(|_| self.invalid(format!("gid {gid} too large")))?;
            lchown(path, Some(uid), Some(gid)).map_err(ImageError::io("chown", path))?;
        }
        if let Some(extensions) = entry.pax_extensions().map_err(self.read_err())? {
            for extension in extensions {
                let extension = extension.map_err(self.read_err())?;
                let Ok(key) = extension.key() else { continue };
                if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    if name.starts_with(OVERLAY_XATTR_PREFIX) {
                        // Only whiteout translation may speak to overlayfs: a layer's own
                        // overlay attributes (redirects, metacopy) could reach other layers.
                        tracing::debug!(path = %path.display(), xattr = name, "refusing overlay xattr from layer");
                        continue;
                    }
                    xattr::set(path, name, extension.value_bytes())
                        .map_err(ImageError::io("set xattr on", path))?;
                }
            }
        }
        // After chown, which clears set-id bits.
        if !kind.is_symlink() {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(ImageError::io("chmod", path))?;
        }
        if kind.is_dir() {
            self.dir_times.push((path.to_path_buf(), mtime));
        } else {
            filetime::set_symlink_file_times(path, mtime, mtime)
                .map_err(ImageError::io("set times of", path))?;
        }
        Ok(())
    }
}

/// Removes whatever is at `path` (a later layer entry replaces an earlier one); nothing there
/// is fine.
fn remove_existing(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(ImageError::io("remove", path))
}

fn mknod(
    path: &Path,
    kind: nix::sys::stat::SFlag,
    mode: u32,
    major: u32,
    minor: u32,
) -> Result<(), ImageError> {
    let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
    nix::sys::stat::mknod(
        path,
        kind,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        dev,
    )
    .map_err(|e| ImageError::io("mknod", path)(e.into()))
}

/// Resolves `components` below `root`, following symlinks as if `root` were `/` (an absolute
/// target or `..` never leaves `root`). With `create`, missing directories are made (0755).
/// Returns a path below `root` that names no symlink.
pub(crate) fn resolve_in_root(
    root: &Path,
    components: &[OsString],
    create: bool,
) -> io::Result<PathBuf> {
    let mut queue: VecDeque<OsString> = components.iter().cloned().collect();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(name) = queue.pop_front() {
        if name == OsStr::new(".") || name.is_empty() {
            continue;
        }
        if name == OsStr::new("..") {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&name);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for component in target.components().rev() {
                    match component {
                        Component::Normal(n) => queue.push_front(n.to_os_string()),
                        Component::ParentDir => queue.push_front(OsString::from("..")),
                        Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                    }
                }
            }
            Ok(meta) if meta.is_dir() => resolved.push(name),
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is not a directory",
                    candidate.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&candidate)?;
                fs::set_permissions(&candidate, fs::Permissions::from_mode(0o755))?;
                resolved.push(name);
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// Builds tar archives for tests, including entries `tar::Builder` would refuse.
    pub(crate) struct TarBuilder {
        builder: tar::Builder<Vec<u8>>,
    }

    impl TarBuilder {
        pub(crate) fn new() -> Self {
            TarBuilder {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        fn append(
            &mut self,
            kind: EntryType,
            path: &str,
            link: Option<&str>,
            mode: u32,
            data: &[u8],
        ) -> &mut Self {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_uid(1000);
            header.set_gid(1001);
            header.set_mtime(1_000_000);
            header.set_size(data.len() as u64);
            // Raw name bytes: tar::Builder refuses `..`, which these tests need.
            let name = &mut header.as_gnu_mut().unwrap().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            self.builder.append(&header, data).unwrap();
            self
        }

        pub(crate) fn dir(&mut self, path: &str) -> &mut Self {
            self.append(EntryType::Directory, path, None, 0o755, b"")
        }

        pub(crate) fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
            self.append(EntryType::Regular, path, None, 0o644, data)
        }

        pub(crate) fn file_mode(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
            self.append(EntryType::Regular, path, None, mode, data)
        }

        pub(crate) fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
            self.append(EntryType::Symlink, path, Some(target), 0o777, b"")
        }

        pub(crate) fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
            self.append(EntryType::Link, path, Some(target), 0o644, b"")
        }

        pub(crate) fn finish(&mut self) -> Vec<u8> {
            let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
            builder.into_inner().unwrap()
        }
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn unpack(data: &[u8]) -> (tempfile::TempDir, Result<String, ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        fs::write(&blob, data).unwrap();
        let dest = dir.path().join("root");
        fs::create_dir(&dest).unwrap();
        let result = unpack_layer(&blob, &dest);
        (dir, result)
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    #[test]
    fn whiteouts_become_overlay_char_devices_and_opaque_xattrs() {
        let tar = TarBuilder::new()
            .dir("etc/")
            .file("etc/.wh.passwd", b"")
            .dir("var/")
            .file("var/.wh..wh..opq", b"")
            .file("var/kept", b"x")
            .finish();
        let (dir, result) = unpack(&tar);
        assert_eq!(result.unwrap(), sha(&tar));
        let root = dir.path().join("root");
        let meta = fs::symlink_metadata(root.join("etc/passwd")).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), 0);
        assert!(!root.join("etc/.wh.passwd").exists());
        assert_eq!(
            xattr::get(root.join("var"), OVERLAY_OPAQUE_XATTR)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert!(!root.join("var/.wh..wh..opq").exists());
        assert_eq!(fs::read(root.join("var/kept")).unwrap(), b"x");
    }

    #[test]
    fn gzip_and_plain_layers_unpack_to_the_same_tree_and_diff_id() {
        let tar = TarBuilder::new().file("a/b/c", b"hello").finish();
        let (plain_dir, plain) = unpack(&tar);
        let (gz_dir, gz) = unpack(&gzip(&tar));
        assert_eq!(plain.unwrap(), sha(&tar));
        assert_eq!(gz.unwrap(), sha(&tar));
        for dir in [plain_dir.path(), gz_dir.path()] {
            assert_eq!(fs::read(dir.join("root/a/b/c")).unwrap(), b"hello");
        }
    }

    #[test]
    fn links_modes_owners_and_times_are_kept() {
        let tar = TarBuilder::new()
            .dir("bin/")
            .file_mode("bin/busybox", 0o4755, b"elf")
            .hardlink("bin/sh", "bin/busybox")
            .symlink("bin/ls", "busybox")
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let bin = dir.path().join("root/bin");
        let busybox = fs::metadata(bin.join("busybox")).unwrap();
        assert_eq!(busybox.mode() & 0o7777, 0o4755);
        assert_eq!(busybox.mtime(), 1_000_000);
        assert_eq!(busybox.ino(), fs::metadata(bin.join("sh")).unwrap().ino());
        assert_eq!(busybox.nlink(), 2);
        assert_eq!(fs::read_link(bin.join("ls")).unwrap(), Path::new("busybox"));
        assert_eq!(fs::symlink_metadata(&bin).unwrap().mtime(), 1_000_000);
        if nix::unistd::geteuid().is_root() {
            assert_eq!((busybox.uid(), busybox.gid()), (1000, 1001));
        }
    }

    #[test]
    fn entries_with_dot_dot_are_refused() {
        for path in ["../evil", "a/../../evil", "a/../b"] {
            let tar = TarBuilder::new().file(path, b"x").finish();
            let (dir, result) = unpack(&tar);
            assert!(
                matches!(result, Err(ImageError::InvalidContent { .. })),
                "{path}: {result:?}"
            );
            assert!(!dir.path().join("evil").exists());
        }
        let tar = TarBuilder::new()
            .file("x", b"x")
            .hardlink("y", "../../etc/passwd")
            .finish();
        assert!(matches!(
            unpack(&tar).1,
            Err(ImageError::InvalidContent { .. })
        ));
    }

    #[test]
    fn symlinks_on_the_way_to_an_entry_stay_inside_the_layer() {
        let outside = tempfile::tempdir().unwrap();
        let outside_path = outside.path().to_str().unwrap().to_string();
        let tar = TarBuilder::new()
            .symlink("abs", &outside_path)
            .file("abs/owned", b"x")
            .symlink("rel", "../../../../..")
            .file("rel/owned2", b"x")
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        assert!(!outside.path().join("owned").exists());
        let root = dir.path().join("root");
        assert!(
            root.join(outside_path.trim_start_matches('/'))
                .join("owned")
                .is_file()
        );
        assert!(root.join("owned2").is_file());
        assert!(!dir.path().join("owned2").exists());
    }

    #[test]
    fn whiteouts_naming_no_file_are_refused_and_aufs_metadata_skipped() {
        for name in ["d/.wh.", "d/.wh..", "d/.wh..."] {
            let tar = TarBuilder::new()
                .dir("d/")
                .file("d/keep", b"x")
                .file(name, b"")
                .finish();
            let (dir, result) = unpack(&tar);
            assert!(
                matches!(result, Err(ImageError::InvalidContent { .. })),
                "{name}: {result:?}"
            );
            assert!(
                dir.path().join("root/d/keep").exists(),
                "{name} removed its directory"
            );
        }
        let tar = TarBuilder::new()
            .file(".wh..wh.plnk/1", b"")
            .file(".wh..wh.aufs", b"")
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        assert!(!dir.path().join("root/.wh..wh.aufs").exists());
    }

    #[test]
    fn overlay_xattrs_in_a_layer_are_not_applied() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([
                ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
                ("SCHILY.xattr.user.kept", &b"1"[..]),
            ])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(1);
        header.set_path("f").unwrap();
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let (dir, result) = unpack(&builder.into_inner().unwrap());
        result.unwrap();
        let file = dir.path().join("root/f");
        assert_eq!(xattr::get(&file, "trusted.overlay.redirect").unwrap(), None);
        assert_eq!(
            xattr::get(&file, "user.kept").unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let tar = TarBuilder::new()
            .file("x", b"file")
            .dir("x/")
            .file("x/y", b"in dir")
            .symlink("z", "x")
            .file("z", b"now a file")
            .finish();
        let (dir, result) = unpack(&tar);
        result.unwrap();
        let root = dir.path().join("root");
        assert_eq!(fs::read(root.join("x/y")).unwrap(), b"in dir");
        assert_eq!(fs::read(root.join("z")).unwrap(), b"now a file");
    }

    #[test]
    fn truncated_and_zstd_layers_are_errors() {
        let tar = TarBuilder::new().file("a", &[7u8; 4096]).finish();
        assert!(unpack(&tar[..1000]).1.is_err());
        assert!(matches!(
            unpack(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]).1,
            Err(ImageError::UnsupportedMediaType { .. })
        ));
    }
}
