//! Image references as the CRI sees them, normalised the way Docker and containerd do:
//! `busybox` is `docker.io/library/busybox:latest`, `foo/bar@sha256:...` is
//! `docker.io/foo/bar@sha256:...`, `127.0.0.1:5000/x:1` stays as it is.

use std::fmt;

use super::ImageError;

/// The registry a reference names when it names none.
const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a reference without tag or digest gets.
const DEFAULT_TAG: &str = "latest";
/// Longest `registry/repository` accepted (Docker's limit).
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// Registry host and optional port, `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Manifest digest (`sha256:<hex>`) when the reference pins one.
    pub digest: Option<String>,
}

impl ImageReference {
    /// Parses and normalises `reference`.
    pub fn parse(reference: &str) -> Result<Self, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        if reference.is_empty() {
            return Err(invalid("empty reference"));
        }
        if reference.len() == 64 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "64-character hexadecimal strings are image IDs, not names",
            ));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|reason| invalid(&reason))?;
                (rest, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid("invalid tag"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("repository name longer than 255 characters"));
        }
        let (registry, repository) = split_registry(name);
        if registry.is_empty() || !registry.bytes().all(valid_registry_byte) {
            return Err(invalid("invalid registry host"));
        }
        if repository.to_ascii_lowercase() != repository {
            return Err(invalid("repository name must be lowercase"));
        }
        if repository.is_empty() || !repository.split('/').all(valid_path_component) {
            return Err(invalid("invalid repository name"));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, the CRI `repoTags` entry, if the reference has a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.name()))
    }

    /// `registry/repository@digest`, the CRI `repoDigests` entry for a manifest digest.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Checks `algorithm:hex` for the algorithms images use.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("digest {digest:?} lacks an algorithm"))?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(format!("unsupported digest algorithm {algorithm:?}")),
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} is not {len} lowercase hex digits"
        ));
    }
    Ok(())
}

/// Splits off the registry as Docker does: the first component is a registry only if it has
/// a `.` or `:`, is `localhost`, or has upper case letters.
fn split_registry(name: &str) -> (String, String) {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_ascii_lowercase() != first =>
        {
            (first, rest.to_string())
        }
        _ => (DEFAULT_REGISTRY, name.to_string()),
    };
    let registry = if registry == "index.docker.io" {
        DEFAULT_REGISTRY
    } else {
        registry
    };
    let path = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (registry.to_string(), path)
}

fn valid_registry_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(s: &str) -> String {
        match ImageReference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_are_docker_hub_library_images_tagged_latest() {
        assert_eq!(normal("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normal("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normal("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(normal("user/app"), "docker.io/user/app:latest");
        assert_eq!(normal("user/app:2"), "docker.io/user/app:2");
        assert_eq!(
            normal("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normal("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn registries_with_dots_ports_or_localhost_are_kept() {
        assert_eq!(
            normal("127.0.0.1:5000/busybox:1"),
            "127.0.0.1:5000/busybox:1"
        );
        assert_eq!(normal("localhost/x"), "localhost/x:latest");
        assert_eq!(
            normal("localhost:5000/a/b/c"),
            "localhost:5000/a/b/c:latest"
        );
        assert_eq!(
            normal("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(normal("[::1]:5000/x:y"), "[::1]:5000/x:y");
    }

    #[test]
    fn digests_pin_without_a_default_tag() {
        let r = ImageReference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.repo_tag(), None);
        let both = ImageReference::parse(&format!("busybox:1@{D}")).unwrap();
        assert_eq!(
            both.repo_tag().as_deref(),
            Some("docker.io/library/busybox:1")
        );
        assert_eq!(
            both.repo_digest(D),
            format!("docker.io/library/busybox@{D}")
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "a/-b",
            "a/b_",
            "a..b",
            "x y",
            &"a".repeat(256),
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(
                matches!(
                    ImageReference::parse(bad),
                    Err(ImageError::InvalidReference { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn separators_follow_the_distribution_grammar() {
        for good in ["a.b", "a_b", "a__b", "a---b", "a-b.c_d"] {
            assert!(valid_path_component(good), "{good}");
        }
        for bad in ["a___b", "a._b", ".a", "a-", ""] {
            assert!(!valid_path_component(bad), "{bad}");
        }
    }
}
