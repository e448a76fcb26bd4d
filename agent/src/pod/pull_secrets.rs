//! Image pull credentials from Secrets, matched to an image's registry as the kubelet's
//! credential keyring does.
//!
//! The pod's `imagePullSecrets` come first, then its ServiceAccount's (deduplicated), so a
//! pod need not repeat what its ServiceAccount already names. Secrets of type
//! `kubernetes.io/dockerconfigjson` (`{"auths": {key: entry}}`) and `kubernetes.io/dockercfg`
//! (`{key: entry}`) are read; each key is a registry host, `host:port`, a host with a path
//! prefix, or a glob host (`*.example.com`, one label per `*`), with or without a scheme.
//! Matching ([`Keyring::lookup`]) is pure: every key whose host labels glob-match the image's
//! registry (same number of labels, same port) and whose path is a prefix of the repository
//! matches; more specific keys (reverse lexical order, as upstream) come first; Docker Hub
//! images also get `index.docker.io` credentials when nothing else matched. The worker tries
//! the credentials in order and pulls without any when none match. A secret that is missing
//! or unreadable is skipped with a warning, as the kubelet does.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_cri::v1::AuthConfig;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::Api;
use serde::Deserialize;

/// The secret type holding a `.dockerconfigjson` key.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The legacy secret type holding a `.dockercfg` key.
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";
/// Where Docker Hub's credentials are filed.
const DEFAULT_REGISTRY_KEY: &str = "index.docker.io";

/// Credentials for one registry key.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key as normalised (`host[:port][/path]`).
    pub key: String,
    /// User name (decoded from `auth` when only that was given).
    pub username: String,
    /// Password.
    pub password: String,
    /// An identity token, if the entry has one.
    pub identity_token: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("key", &self.key)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The CRI form.
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            username: self.username.clone(),
            password: self.password.clone(),
            server_address: self.key.clone(),
            identity_token: self.identity_token.clone(),
            ..Default::default()
        }
    }
}

/// Why a secret's credentials could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The secret is of another type.
    #[error("secret {name} has type {kind:?}, not {DOCKER_CONFIG_JSON} or {DOCKER_CFG}")]
    WrongType {
        /// The secret.
        name: String,
        /// Its type.
        kind: String,
    },
    /// The data key the type requires is missing.
    #[error("secret {name} has no {key} key")]
    MissingKey {
        /// The secret.
        name: String,
        /// The data key.
        key: &'static str,
    },
    /// The data does not parse.
    #[error("secret {name}: {key} is not a Docker config: {reason}")]
    Invalid {
        /// The secret.
        name: String,
        /// The data key.
        key: &'static str,
        /// The parse error.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default, alias = "identitytoken")]
    identity_token: String,
}

/// The credentials a secret holds, in key order.
pub fn credentials_of(secret: &Secret) -> Result<Vec<Credential>, SecretError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let kind = secret.type_.clone().unwrap_or_default();
    let key = match kind.as_str() {
        DOCKER_CONFIG_JSON => ".dockerconfigjson",
        DOCKER_CFG => ".dockercfg",
        _ => return Err(SecretError::WrongType { name, kind }),
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .ok_or(SecretError::MissingKey {
            name: name.clone(),
            key,
        })?;
    let invalid = |reason: String| SecretError::Invalid {
        name: name.clone(),
        key,
        reason,
    };
    let entries: BTreeMap<String, Entry> = if kind == DOCKER_CONFIG_JSON {
        serde_json::from_slice::<DockerConfigJson>(&bytes)
            .map_err(|e| invalid(e.to_string()))?
            .auths
    } else {
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?
    };
    let mut out = Vec::new();
    for (raw_key, entry) in entries {
        let Some(key) = normalise_key(&raw_key) else {
            continue;
        };
        let (mut username, mut password) = (entry.username, entry.password);
        if username.is_empty() && !entry.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(entry.auth.trim())
                .map_err(|e| invalid(format!("auth of {raw_key}: {e}")))?;
            let decoded = String::from_utf8_lossy(&decoded).into_owned();
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| invalid(format!("auth of {raw_key} is not user:password")))?;
            username = user.to_string();
            password = pass.to_string();
        }
        out.push(Credential {
            key,
            username,
            password,
            identity_token: entry.identity_token,
        });
    }
    Ok(out)
}

/// A key without scheme, with `/v1/` or `/v2/` dropped from its path and Docker Hub's legacy
/// URL filed as `index.docker.io`.
fn normalise_key(raw: &str) -> Option<String> {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .unwrap_or(raw);
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, format!("/{path}")),
        None => (rest, String::new()),
    };
    if host.is_empty() {
        return None;
    }
    let path = ["/v1/", "/v2/"]
        .iter()
        .find_map(|p| path.strip_prefix(p).map(|r| format!("/{r}")))
        .unwrap_or(path);
    let path = path.trim_end_matches('/');
    Some(format!("{}{path}", host.to_ascii_lowercase()))
}

/// `registry/repository` of an image, normalised as Docker does (`busybox` is
/// `docker.io/library/busybox`); tag and digest dropped.
pub fn repository_of(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rfind(':') {
        Some(i) if !name[i + 1..].contains('/') => &name[..i],
        _ => name,
    };
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            let first = if first == DEFAULT_REGISTRY_KEY {
                "docker.io"
            } else {
                first
            };
            if first == "docker.io" && !rest.contains('/') {
                format!("docker.io/library/{rest}")
            } else {
                format!("{first}/{rest}")
            }
        }
        Some(_) => format!("docker.io/{name}"),
        None => format!("docker.io/library/{name}"),
    }
}

/// Whether `key` (`host[:port][/path]`, host labels may be globs) matches `repository`
/// (`registry/path`).
fn key_matches(key: &str, repository: &str) -> bool {
    let (key_host, key_path) = key.split_once('/').unwrap_or((key, ""));
    let (repo_host, repo_path) = repository.split_once('/').unwrap_or((repository, ""));
    let split_port = |h: &str| match h.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host.to_string(), port.to_string()),
        _ => (h.to_string(), String::new()),
    };
    let (key_host, key_port) = split_port(key_host);
    let (repo_host, repo_port) = split_port(repo_host);
    if key_port != repo_port {
        return false;
    }
    let key_labels: Vec<&str> = key_host.split('.').collect();
    let repo_labels: Vec<&str> = repo_host.split('.').collect();
    if key_labels.len() != repo_labels.len() {
        return false;
    }
    if !repo_path.starts_with(key_path) {
        return false;
    }
    key_labels
        .iter()
        .zip(&repo_labels)
        .all(|(glob, label)| glob_match(glob, label))
}

/// Shell-style glob on one host label: `*` any run of characters, `?` one character.
fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ti));
            gi += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == '*')
}

/// Credentials by key, from every secret a pod may use.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    entries: Vec<Credential>,
}

impl Keyring {
    /// A keyring of `credentials` (secret order kept for equal keys).
    pub fn new(credentials: Vec<Credential>) -> Self {
        Keyring {
            entries: credentials,
        }
    }

    /// The credentials for `image`, most specific key first.
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        let repository = repository_of(image);
        let mut matched: Vec<&Credential> = self
            .entries
            .iter()
            .filter(|c| key_matches(&c.key, &repository))
            .collect();
        if matched.is_empty() && repository.starts_with("docker.io/") {
            matched = self
                .entries
                .iter()
                .filter(|c| c.key == DEFAULT_REGISTRY_KEY)
                .collect();
        }
        // Stable: equal keys keep secret order.
        matched.sort_by(|a, b| b.key.cmp(&a.key));
        matched.into_iter().cloned().collect()
    }
}

/// The secret names a pod may pull with: its own, then its ServiceAccount's, each once.
pub fn secret_names(pod: &Pod, service_account: Option<&ServiceAccount>) -> Vec<String> {
    let own = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    let inherited = service_account
        .and_then(|sa| sa.image_pull_secrets.clone())
        .unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    for reference in own.into_iter().chain(inherited) {
        if !reference.name.is_empty() && !names.contains(&reference.name) {
            names.push(reference.name);
        }
    }
    names
}

/// Reads the keyring for `pod` from the API: its ServiceAccount, then each named secret. A
/// missing or unusable secret is skipped with a warning.
pub async fn keyring_for(client: &kube::Client, pod: &Pod) -> Keyring {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = match accounts.get_opt(sa_name).await {
        Ok(account) => account,
        Err(e) => {
            tracing::warn!(namespace, service_account = sa_name, error = %e, "reading the ServiceAccount for its imagePullSecrets failed");
            None
        }
    };
    let names = secret_names(pod, account.as_ref());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut credentials = Vec::new();
    for name in names {
        match secrets.get_opt(&name).await {
            Ok(Some(secret)) => match credentials_of(&secret) {
                Ok(found) => credentials.extend(found),
                Err(e) => {
                    tracing::warn!(namespace, secret = %name, error = %e, "unusable image pull secret")
                }
            },
            Ok(None) => tracing::warn!(
                namespace,
                secret = %name,
                "image pull secret not found; pulling without it"
            ),
            Err(e) => {
                tracing::warn!(namespace, secret = %name, error = %e, "reading image pull secret failed")
            }
        }
    }
    Keyring::new(credentials)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{LocalObjectReference, PodSpec};

    use super::*;

    fn credential(key: &str, user: &str) -> Credential {
        Credential {
            key: key.to_string(),
            username: user.to_string(),
            password: "p".to_string(),
            identity_token: String::new(),
        }
    }

    fn users(keyring: &Keyring, image: &str) -> Vec<String> {
        keyring
            .lookup(image)
            .into_iter()
            .map(|c| c.username)
            .collect()
    }

    fn secret(kind: &str, key: &str, data: &str) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            },
            type_: Some(kind.to_string()),
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(data.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn images_normalise_to_registry_and_repository() {
        for (image, repository) in [
            ("busybox", "docker.io/library/busybox"),
            ("busybox:1.36", "docker.io/library/busybox"),
            ("user/app", "docker.io/user/app"),
            ("docker.io/busybox", "docker.io/library/busybox"),
            ("index.docker.io/user/app:1", "docker.io/user/app"),
            ("127.0.0.1:5000/x/y:1", "127.0.0.1:5000/x/y"),
            ("localhost/x", "localhost/x"),
            ("reg.example.com/a/b@sha256:0123", "reg.example.com/a/b"),
            (
                "reg.example.com:5000/a:1@sha256:01",
                "reg.example.com:5000/a",
            ),
        ] {
            assert_eq!(repository_of(image), repository, "{image}");
        }
    }

    #[test]
    fn hosts_ports_paths_and_globs_match_as_upstream() {
        let keyring = Keyring::new(vec![
            credential("reg.example.com", "host"),
            credential("reg.example.com:5000", "port"),
            credential("reg.example.com/team", "path"),
            credential("*.example.com", "glob"),
        ]);
        assert_eq!(
            users(&keyring, "reg.example.com/team/app"),
            ["path", "host", "glob"]
        );
        assert_eq!(
            users(&keyring, "reg.example.com/other/app"),
            ["host", "glob"]
        );
        assert_eq!(users(&keyring, "reg.example.com:5000/x"), ["port"]);
        assert_eq!(users(&keyring, "a.example.com/x"), ["glob"]);
        assert!(
            users(&keyring, "a.b.example.com/x").is_empty(),
            "one label per *"
        );
        assert!(users(&keyring, "example.com/x").is_empty());
        assert!(users(&keyring, "reg.example.org/x").is_empty());
        assert!(users(&keyring, "busybox").is_empty());
    }

    #[test]
    fn docker_hub_images_match_docker_io_and_fall_back_to_index_docker_io() {
        let hub = Keyring::new(vec![credential("index.docker.io", "hub")]);
        assert_eq!(users(&hub, "busybox"), ["hub"]);
        assert_eq!(users(&hub, "user/app:2"), ["hub"]);
        assert!(users(&hub, "quay.io/x").is_empty());
        let both = Keyring::new(vec![
            credential("index.docker.io", "hub"),
            credential("docker.io", "dio"),
        ]);
        assert_eq!(users(&both, "busybox"), ["dio"]);
    }

    #[test]
    fn equal_keys_keep_secret_order() {
        let keyring = Keyring::new(vec![
            credential("reg.lan", "first"),
            credential("reg.lan", "second"),
        ]);
        assert_eq!(users(&keyring, "reg.lan/x"), ["first", "second"]);
    }

    #[test]
    fn keys_lose_scheme_and_api_version_paths() {
        assert_eq!(
            normalise_key("https://index.docker.io/v1/").as_deref(),
            Some("index.docker.io")
        );
        assert_eq!(
            normalise_key("http://Reg.lan:5000").as_deref(),
            Some("reg.lan:5000")
        );
        assert_eq!(
            normalise_key("reg.lan/v2/team/").as_deref(),
            Some("reg.lan/team")
        );
        assert_eq!(normalise_key("https:///x"), None);
    }

    #[test]
    fn both_secret_types_parse_and_auth_is_decoded() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let json = secret(
            DOCKER_CONFIG_JSON,
            ".dockerconfigjson",
            &format!(
                r#"{{"auths":{{"https://reg.lan:5000":{{"auth":"{auth}"}},"other.lan":{{"username":"u","password":"p","identitytoken":"t"}}}}}}"#
            ),
        );
        let mut found = credentials_of(&json).unwrap();
        found.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(found.len(), 2);
        assert_eq!(
            (
                found[0].key.as_str(),
                found[0].username.as_str(),
                found[0].password.as_str()
            ),
            ("other.lan", "u", "p")
        );
        assert_eq!(found[0].identity_token, "t");
        assert_eq!(
            (
                found[1].key.as_str(),
                found[1].username.as_str(),
                found[1].password.as_str()
            ),
            ("reg.lan:5000", "alice", "pa:ss")
        );
        let cri = found[1].auth_config();
        assert_eq!(cri.server_address, "reg.lan:5000");
        assert_eq!(cri.username, "alice");

        let cfg = secret(
            DOCKER_CFG,
            ".dockercfg",
            r#"{"reg.lan":{"username":"bob","password":"x"}}"#,
        );
        assert_eq!(credentials_of(&cfg).unwrap()[0].username, "bob");
        assert!(!format!("{:?}", found[1]).contains("pa:ss"));
    }

    #[test]
    fn unusable_secrets_say_why() {
        let opaque = secret("Opaque", "x", "{}");
        assert!(matches!(
            credentials_of(&opaque),
            Err(SecretError::WrongType { .. })
        ));
        let missing = secret(DOCKER_CONFIG_JSON, ".dockercfg", "{}");
        assert!(matches!(
            credentials_of(&missing),
            Err(SecretError::MissingKey { .. })
        ));
        let junk = secret(DOCKER_CONFIG_JSON, ".dockerconfigjson", "nope");
        assert!(matches!(
            credentials_of(&junk),
            Err(SecretError::Invalid { .. })
        ));
        let bad_auth = secret(DOCKER_CFG, ".dockercfg", r#"{"reg.lan":{"auth":"!!"}}"#);
        assert!(matches!(
            credentials_of(&bad_auth),
            Err(SecretError::Invalid { .. })
        ));
    }

    #[test]
    fn pod_secrets_come_first_then_the_service_accounts_once_each() {
        let refs = |names: &[&str]| {
            Some(
                names
                    .iter()
                    .map(|n| LocalObjectReference {
                        name: n.to_string(),
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let pod = Pod {
            spec: Some(PodSpec {
                image_pull_secrets: refs(&["a", "b"]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sa = ServiceAccount {
            image_pull_secrets: refs(&["b", "c"]),
            ..Default::default()
        };
        assert_eq!(secret_names(&pod, Some(&sa)), ["a", "b", "c"]);
        assert_eq!(secret_names(&pod, None), ["a", "b"]);
        assert_eq!(secret_names(&Pod::default(), Some(&sa)), ["b", "c"]);
    }
}
