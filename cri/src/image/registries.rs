//! The registries file (`--registries`, k3s `registries.yaml` format): mirrors with ordered
//! endpoints and repository rewrites per registry host (`"*"` for every host without its own
//! entry), and per-host credentials and TLS settings.
//!
//! Parsing and validation are pure ([`RegistriesConfig::parse`]); [`RegistriesConfig::plan`]
//! turns an image reference into the ordered list of endpoints a pull tries, following
//! containerd's semantics as k3s documents them: the mirror endpoints in order, then the
//! registry's own "default endpoint" as a last resort; rewrites apply to mirror endpoints only.
//! [`RegistriesFile`] re-reads the file whenever its modification time or size changes, so
//! edits take effect on the next pull without a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use regex::Regex;
use serde::Deserialize;

use super::ImageError;
use super::pull::RegistryAuth;
use super::reference::ImageReference;

/// The host Docker Hub's `docker.io` names are served from.
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";

/// A validated registries file.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConfig {
    mirrors: BTreeMap<String, Mirror>,
    configs: BTreeMap<String, HostConfig>,
}

/// The mirror entry of one registry host.
#[derive(Debug, Clone, Default)]
struct Mirror {
    endpoints: Vec<Endpoint>,
    /// `(pattern, replacement)` in file order; the first that matches is applied.
    rewrites: Vec<(Regex, String)>,
}

/// A registry endpoint: scheme and `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// `host[:port]`, as requests address it.
    pub host: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.plain_http { "http" } else { "https" };
        write!(f, "{scheme}://{}", self.host)
    }
}

/// Credentials and TLS settings for one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfig {
    /// Credentials sent to the host.
    pub auth: Option<RegistryAuth>,
    /// PEM of extra CA certificates to trust for the host (`tls.ca_file`, read at load).
    pub ca_pem: Option<Vec<u8>>,
    /// `tls.insecure_skip_verify`.
    pub insecure_skip_verify: bool,
    /// `tls.cert_file` then `tls.key_file` (PEM, read at load): the client certificate the
    /// host's endpoints are shown, through a loopback bridge (`super::client_cert`).
    pub client_identity_pem: Option<Vec<u8>>,
}

/// One endpoint a pull tries, with everything needed to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Where requests go.
    pub endpoint: Endpoint,
    /// The repository path asked of that endpoint (rewritten for mirrors).
    pub repository: String,
    /// Whether this is the registry's own (default) endpoint rather than a mirror.
    pub upstream: bool,
    /// Credentials and TLS for the endpoint's host.
    pub host: HostConfig,
}

/// A field of the registries file that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The path of the field (`mirrors."docker.io".endpoint[0]`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads a PEM file named by `field`, which must hold a block of one of `labels`
/// (`CERTIFICATE`, `PRIVATE KEY` also matching `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn read_pem(
    fs: &dyn ReadFile,
    path: &Path,
    field: &str,
    labels: &[&str],
) -> Result<Vec<u8>, ConfigError> {
    let pem = fs
        .read(path)
        .map_err(|e| bad(field, format!("read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&pem);
    let found = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|label| labels.iter().any(|wanted| label.ends_with(wanted)))
    });
    if !found {
        return Err(bad(
            field,
            format!("{} holds no PEM {}", path.display(), labels.join(" or ")),
        ));
    }
    Ok(pem)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    mirrors: Option<serde_yaml::Mapping>,
    #[serde(default)]
    configs: Option<serde_yaml::Mapping>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    #[serde(default)]
    endpoint: Vec<String>,
    #[serde(default)]
    rewrite: Option<serde_yaml::Mapping>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// Reads files named by the config (CA bundles); a trait so parsing is tested without disk.
pub trait ReadFile {
    /// The bytes of `path`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// Reads from the real file system.
#[derive(Debug, Clone, Copy)]
pub struct RealFs;

impl ReadFile for RealFs {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

fn key_string(key: &serde_yaml::Value, field: &str) -> Result<String, ConfigError> {
    match key {
        serde_yaml::Value::String(s) => Ok(s.clone()),
        other => Err(bad(field, format!("key {other:?} is not a string"))),
    }
}

/// Checks a registry host key: `host`, `host:port` or `*`.
fn validate_host(host: &str, field: &str) -> Result<(), ConfigError> {
    if host == "*" {
        return Ok(());
    }
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{host:?} is not a registry host (host, host:port or \"*\")"),
        ))
    }
}

/// Parses an endpoint URL: `http(s)://host[:port]` with an optional `/v2` path; a bare host
/// means HTTPS, as containerd takes it.
pub fn parse_endpoint(raw: &str, field: &str) -> Result<Endpoint, ConfigError> {
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("https://{raw}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| bad(field, format!("{raw:?} is not a URL: {e}")))?;
    let plain_http = match url.scheme() {
        "http" => true,
        "https" => false,
        other => {
            return Err(bad(
                field,
                format!("scheme {other:?} of {raw:?} is not http or https"),
            ));
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad(field, format!("{raw:?} names no host")))?;
    if !matches!(url.path(), "" | "/" | "/v2" | "/v2/") {
        return Err(bad(
            field,
            format!(
                "{raw:?} has path {:?}; only endpoints at the root (or /v2) are supported",
                url.path()
            ),
        ));
    }
    if url.query().is_some() || !url.username().is_empty() {
        return Err(bad(
            field,
            format!("{raw:?}: put credentials under configs, not in the URL"),
        ));
    }
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    Ok(Endpoint { plain_http, host })
}

impl RegistriesConfig {
    /// Parses and validates the YAML text of a registries file; CA files are read through
    /// `fs`. Errors name the field.
    pub fn parse(yaml: &str, fs: &dyn ReadFile) -> Result<Self, ConfigError> {
        let raw: RawFile = if yaml.trim().is_empty() {
            RawFile::default()
        } else {
            serde_yaml::from_str(yaml).map_err(|e| bad("(file)", e.to_string()))?
        };
        let mut config = RegistriesConfig::default();
        for (key, value) in raw.mirrors.unwrap_or_default() {
            let host = key_string(&key, "mirrors")?;
            let field = format!("mirrors.{host:?}");
            validate_host(&host, &field)?;
            let raw: RawMirror =
                serde_yaml::from_value(value).map_err(|e| bad(&field, e.to_string()))?;
            let mut mirror = Mirror::default();
            for (i, endpoint) in raw.endpoint.iter().enumerate() {
                mirror
                    .endpoints
                    .push(parse_endpoint(endpoint, &format!("{field}.endpoint[{i}]"))?);
            }
            for (pattern, replacement) in raw.rewrite.unwrap_or_default() {
                let pattern = key_string(&pattern, &format!("{field}.rewrite"))?;
                let rule = format!("{field}.rewrite.{pattern:?}");
                let serde_yaml::Value::String(replacement) = replacement else {
                    return Err(bad(rule, "the replacement must be a string"));
                };
                let regex = Regex::new(&pattern)
                    .map_err(|e| bad(&rule, format!("invalid regular expression: {e}")))?;
                mirror.rewrites.push((regex, replacement));
            }
            config.mirrors.insert(host, mirror);
        }
        for (key, value) in raw.configs.unwrap_or_default() {
            let host = key_string(&key, "configs")?;
            let field = format!("configs.{host:?}");
            // Keys may be written as URLs; containerd matches on the host.
            let host = if host.contains("://") {
                parse_endpoint(&host, &field)?.host
            } else {
                validate_host(&host, &field)?;
                host
            };
            let raw: RawConfig =
                serde_yaml::from_value(value).map_err(|e| bad(&field, e.to_string()))?;
            let mut host_config = HostConfig::default();
            if let Some(auth) = raw.auth {
                let any = [
                    &auth.username,
                    &auth.password,
                    &auth.auth,
                    &auth.identitytoken,
                ]
                .iter()
                .any(|s| !s.is_empty());
                if !any {
                    return Err(bad(
                        format!("{field}.auth"),
                        "set username and password, auth, or identitytoken",
                    ));
                }
                if auth.username.is_empty() != auth.password.is_empty() {
                    return Err(bad(
                        format!("{field}.auth"),
                        "username and password go together",
                    ));
                }
                host_config.auth = Some(RegistryAuth {
                    username: auth.username,
                    password: auth.password,
                    auth: auth.auth,
                    identity_token: auth.identitytoken,
                    registry_token: String::new(),
                });
            }
            if let Some(tls) = raw.tls {
                if let Some(ca) = &tls.ca_file {
                    let ca_field = format!("{field}.tls.ca_file");
                    host_config.ca_pem = Some(read_pem(fs, ca, &ca_field, &["CERTIFICATE"])?);
                }
                host_config.client_identity_pem = match (tls.cert_file, tls.key_file) {
                    (Some(cert), Some(key)) => {
                        let mut pem = read_pem(
                            fs,
                            &cert,
                            &format!("{field}.tls.cert_file"),
                            &["CERTIFICATE"],
                        )?;
                        let key =
                            read_pem(fs, &key, &format!("{field}.tls.key_file"), &["PRIVATE KEY"])?;
                        pem.push(b'\n');
                        pem.extend_from_slice(&key);
                        Some(pem)
                    }
                    (None, None) => None,
                    _ => {
                        return Err(bad(
                            format!("{field}.tls"),
                            "cert_file and key_file go together",
                        ));
                    }
                };
                host_config.insecure_skip_verify = tls.insecure_skip_verify;
            }
            config.configs.insert(host, host_config);
        }
        Ok(config)
    }

    /// The settings for `host`: its own entry, else `"*"`'s, else none.
    fn host_config(&self, host: &str) -> HostConfig {
        self.configs
            .get(host)
            .or_else(|| self.configs.get("*"))
            .cloned()
            .unwrap_or_default()
    }

    /// The endpoints a pull of `reference` tries, in order: the mirror endpoints of its
    /// registry (or of `"*"`), with the repository rewritten by the first matching rule, then
    /// the registry itself. `insecure` lists hosts whose default endpoint is plain HTTP
    /// (loopback ones always are). `request_auth` (from PullImage) is used for the registry's
    /// own host and wins over the file's credentials there.
    pub fn plan(
        &self,
        reference: &ImageReference,
        insecure: &[String],
        request_auth: Option<&RegistryAuth>,
    ) -> Vec<Attempt> {
        let registry = reference.registry.as_str();
        let mut attempts = Vec::new();
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        let auth_for = |host: &str, upstream: bool| {
            let mut config = if upstream {
                self.configs
                    .get(registry)
                    .or_else(|| self.configs.get(host))
                    .or_else(|| self.configs.get("*"))
                    .cloned()
                    .unwrap_or_default()
            } else {
                self.host_config(host)
            };
            if (upstream || host == registry)
                && let Some(auth) = request_auth
            {
                config.auth = Some(auth.clone());
            }
            config
        };
        if let Some(mirror) = mirror {
            for endpoint in &mirror.endpoints {
                let repository = rewrite(&mirror.rewrites, &reference.repository);
                attempts.push(Attempt {
                    host: auth_for(&endpoint.host, false),
                    endpoint: endpoint.clone(),
                    repository,
                    upstream: false,
                });
            }
        }
        let upstream_host = if registry == "docker.io" {
            DOCKER_HUB_ENDPOINT.to_string()
        } else {
            registry.to_string()
        };
        let upstream = Endpoint {
            plain_http: super::pull::plain_http(registry, insecure),
            host: upstream_host,
        };
        let repeated = attempts
            .iter()
            .any(|a| a.endpoint == upstream && a.repository == reference.repository);
        if !repeated {
            attempts.push(Attempt {
                host: auth_for(&upstream.host, true),
                endpoint: upstream,
                repository: reference.repository.clone(),
                upstream: true,
            });
        }
        attempts
    }
}

/// `repository` after the first rule whose pattern matches it (unchanged when none does).
fn rewrite(rules: &[(Regex, String)], repository: &str) -> String {
    rules
        .iter()
        .find(|(regex, _)| regex.is_match(repository))
        .map_or_else(
            || repository.to_string(),
            |(regex, replacement)| regex.replace(repository, replacement.as_str()).into_owned(),
        )
}

/// A registries file, re-read when its modification time or size changes.
#[derive(Debug)]
pub struct RegistriesFile {
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, u64, Arc<RegistriesConfig>)>>,
}

impl RegistriesFile {
    /// Loads `path` now, so a broken file stops the daemon at start.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let file = RegistriesFile {
            path: path.into(),
            cached: Mutex::new(None),
        };
        file.current()?;
        Ok(file)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config as the file says now: the cached one unless the file changed.
    pub fn current(&self) -> Result<Arc<RegistriesConfig>, ImageError> {
        let meta = std::fs::metadata(&self.path).map_err(ImageError::io("stat", &self.path))?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((mtime, len, config)) = cached.as_ref()
            && (*mtime, *len) == stamp
        {
            return Ok(config.clone());
        }
        let text =
            std::fs::read_to_string(&self.path).map_err(ImageError::io("read", &self.path))?;
        let config = RegistriesConfig::parse(&text, &RealFs).map_err(|e| ImageError::Config {
            path: self.path.clone(),
            field: e.field,
            reason: e.reason,
        })?;
        let config = Arc::new(config);
        tracing::info!(
            path = %self.path.display(),
            mirrors = config.mirrors.len(),
            configs = config.configs.len(),
            "loaded registries config"
        );
        *cached = Some((stamp.0, stamp.1, config.clone()));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeFs(BTreeMap<PathBuf, Vec<u8>>);

    impl ReadFile for FakeFs {
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn no_files() -> FakeFs {
        FakeFs(BTreeMap::new())
    }

    fn parse(yaml: &str) -> RegistriesConfig {
        match RegistriesConfig::parse(yaml, &no_files()) {
            Ok(c) => c,
            Err(e) => panic!("{yaml}: {e}"),
        }
    }

    fn error(yaml: &str) -> ConfigError {
        match RegistriesConfig::parse(yaml, &no_files()) {
            Ok(c) => panic!("{yaml} was accepted: {c:?}"),
            Err(e) => e,
        }
    }

    fn reference(s: &str) -> ImageReference {
        ImageReference::parse(s).unwrap()
    }

    fn targets(attempts: &[Attempt]) -> Vec<String> {
        attempts
            .iter()
            .map(|a| format!("{}/{}", a.endpoint, a.repository))
            .collect()
    }

    #[test]
    fn mirrors_are_tried_in_order_then_the_default_endpoint() {
        let config = parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\", \"https://mirror.lan:8443/v2\"]\n",
        );
        let plan = config.plan(&reference("busybox"), &[], None);
        assert_eq!(
            targets(&plan),
            [
                "http://127.0.0.1:5000/library/busybox",
                "https://mirror.lan:8443/library/busybox",
                "https://registry-1.docker.io/library/busybox",
            ]
        );
        assert_eq!(
            plan.iter().map(|a| a.upstream).collect::<Vec<_>>(),
            [false, false, true]
        );
        let other = config.plan(&reference("quay.io/x/y:1"), &[], None);
        assert_eq!(targets(&other), ["https://quay.io/x/y"]);
    }

    #[test]
    fn the_wildcard_mirror_serves_hosts_without_their_own_entry() {
        let config = parse(
            "mirrors:\n  \"*\":\n    endpoint: [\"http://127.0.0.1:6000\"]\n  registry.k8s.io:\n    endpoint: [\"http://127.0.0.1:7000\"]\n",
        );
        assert_eq!(
            targets(&config.plan(&reference("registry.k8s.io/pause:3.10"), &[], None)),
            [
                "http://127.0.0.1:7000/pause",
                "https://registry.k8s.io/pause"
            ]
        );
        assert_eq!(
            targets(&config.plan(&reference("ghcr.io/a/b"), &[], None)),
            ["http://127.0.0.1:6000/a/b", "https://ghcr.io/a/b"]
        );
    }

    #[test]
    fn rewrites_apply_to_mirrors_only_first_match_wins() {
        let config = parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\"]\n    rewrite:\n      \"^library/(.*)\": \"hub/$1\"\n      \"^(.*)$\": \"never/$1\"\n",
        );
        assert_eq!(
            targets(&config.plan(&reference("busybox:1"), &[], None)),
            [
                "http://127.0.0.1:5000/hub/busybox",
                "https://registry-1.docker.io/library/busybox"
            ]
        );
        assert_eq!(
            targets(&config.plan(&reference("user/app"), &[], None)),
            [
                "http://127.0.0.1:5000/never/user/app",
                "https://registry-1.docker.io/user/app"
            ]
        );
    }

    #[test]
    fn a_mirror_listing_the_registry_itself_is_not_tried_twice() {
        let config =
            parse("mirrors:\n  127.0.0.1:5000:\n    endpoint: [\"http://127.0.0.1:5000\"]\n");
        let plan = config.plan(&reference("127.0.0.1:5000/x:1"), &[], None);
        assert_eq!(targets(&plan), ["http://127.0.0.1:5000/x"]);
    }

    #[test]
    fn credentials_come_from_configs_per_endpoint_host_and_the_request_wins_upstream() {
        let config = parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.lan\"]\nconfigs:\n  mirror.lan:\n    auth: {username: m, password: mp}\n    tls: {insecure_skip_verify: true}\n  docker.io:\n    auth: {auth: dTpw}\n",
        );
        let request = RegistryAuth {
            username: "pod".into(),
            password: "secret".into(),
            ..Default::default()
        };
        let plan = config.plan(&reference("busybox"), &[], Some(&request));
        assert_eq!(plan[0].host.auth.as_ref().unwrap().username, "m");
        assert!(plan[0].host.insecure_skip_verify);
        assert_eq!(plan[1].endpoint.host, "registry-1.docker.io");
        assert_eq!(plan[1].host.auth.as_ref(), Some(&request));
        let without = config.plan(&reference("busybox"), &[], None);
        assert_eq!(without[1].host.auth.as_ref().unwrap().auth, "dTpw");
    }

    #[test]
    fn the_wildcard_config_covers_hosts_without_their_own() {
        let config = parse(
            "configs:\n  \"*\":\n    tls: {insecure_skip_verify: true}\n  reg.lan:\n    auth: {identitytoken: tok}\n",
        );
        let plan = config.plan(&reference("other.lan/x"), &[], None);
        assert!(plan[0].host.insecure_skip_verify);
        let own = config.plan(&reference("reg.lan/x"), &[], None);
        assert!(!own[0].host.insecure_skip_verify);
        assert_eq!(own[0].host.auth.as_ref().unwrap().identity_token, "tok");
    }

    #[test]
    fn default_endpoints_are_plain_http_for_loopback_and_insecure_hosts() {
        let config = RegistriesConfig::default();
        let insecure = vec!["reg.lan:5000".to_string()];
        for (image, plain) in [
            ("127.0.0.1:5000/x", true),
            ("localhost:5000/x", true),
            ("reg.lan:5000/x", true),
            ("reg.lan:5001/x", false),
        ] {
            let plan = config.plan(&reference(image), &insecure, None);
            assert_eq!(plan[0].endpoint.plain_http, plain, "{image}");
        }
    }

    #[test]
    fn ca_files_are_read_and_must_hold_certificates() {
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        let fs = FakeFs(BTreeMap::from([
            (PathBuf::from("/ca.pem"), pem.clone()),
            (PathBuf::from("/junk"), b"hello".to_vec()),
        ]));
        let config =
            RegistriesConfig::parse("configs:\n  reg.lan:\n    tls: {ca_file: /ca.pem}\n", &fs)
                .unwrap();
        let plan = config.plan(&reference("reg.lan/x"), &[], None);
        assert_eq!(plan[0].host.ca_pem.as_deref(), Some(&pem[..]));
        let missing =
            RegistriesConfig::parse("configs:\n  reg.lan:\n    tls: {ca_file: /nope}\n", &fs)
                .unwrap_err();
        assert_eq!(missing.field, "configs.\"reg.lan\".tls.ca_file");
        let junk =
            RegistriesConfig::parse("configs:\n  reg.lan:\n    tls: {ca_file: /junk}\n", &fs)
                .unwrap_err();
        assert!(junk.reason.contains("no PEM CERTIFICATE"), "{junk}");
    }

    #[test]
    fn client_certificates_are_read_with_their_keys() {
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec();
        let key = b"-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n".to_vec();
        let fs = FakeFs(BTreeMap::from([
            (PathBuf::from("/c.pem"), cert.clone()),
            (PathBuf::from("/k.pem"), key.clone()),
        ]));
        let config = RegistriesConfig::parse(
            "configs:\n  reg.lan:\n    tls: {cert_file: /c.pem, key_file: /k.pem}\n",
            &fs,
        )
        .unwrap();
        let plan = config.plan(&reference("reg.lan/x"), &[], None);
        let identity = plan[0].host.client_identity_pem.as_deref().unwrap();
        let text = String::from_utf8_lossy(identity);
        assert!(text.contains("BEGIN CERTIFICATE") && text.contains("BEGIN EC PRIVATE KEY"));
        // A key where the certificate belongs, or the reverse, is refused by field.
        let swapped = RegistriesConfig::parse(
            "configs:\n  reg.lan:\n    tls: {cert_file: /k.pem, key_file: /c.pem}\n",
            &fs,
        )
        .unwrap_err();
        assert_eq!(swapped.field, "configs.\"reg.lan\".tls.cert_file");
        let no_key = RegistriesConfig::parse(
            "configs:\n  reg.lan:\n    tls: {cert_file: /c.pem, key_file: /nope}\n",
            &fs,
        )
        .unwrap_err();
        assert_eq!(no_key.field, "configs.\"reg.lan\".tls.key_file");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
                "mirrors.\"docker.io\".endpoint[0]",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"http://x/some/path\"]\n",
                "mirrors.\"docker.io\".endpoint[0]",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"http://u:p@x\"]\n",
                "mirrors.\"docker.io\".endpoint[0]",
            ),
            (
                "mirrors:\n  docker.io:\n    rewrite: {\"(\": \"x\"}\n",
                "mirrors.\"docker.io\".rewrite.\"(\"",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoints: []\n",
                "mirrors.\"docker.io\"",
            ),
            ("mirrors:\n  \"a b\": {}\n", "mirrors.\"a b\""),
            (
                "configs:\n  x.lan:\n    auth: {}\n",
                "configs.\"x.lan\".auth",
            ),
            (
                "configs:\n  x.lan:\n    auth: {username: u}\n",
                "configs.\"x.lan\".auth",
            ),
            (
                "configs:\n  x.lan:\n    tls: {cert_file: /c}\n",
                "configs.\"x.lan\".tls",
            ),
            ("mirror: {}\n", "(file)"),
        ];
        for (yaml, field) in cases {
            assert_eq!(error(yaml).field, field, "{yaml}");
        }
    }

    #[test]
    fn an_empty_file_configures_nothing() {
        let config = parse("");
        assert_eq!(
            targets(&config.plan(&reference("busybox"), &[], None)),
            ["https://registry-1.docker.io/library/busybox"]
        );
        let config =
            parse("configs:\n  https://reg.lan:8443:\n    tls: {insecure_skip_verify: true}\n");
        assert!(
            config.plan(&reference("reg.lan:8443/x"), &[], None)[0]
                .host
                .insecure_skip_verify
        );
    }

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.yaml");
        std::fs::write(
            &path,
            "mirrors:\n  docker.io:\n    endpoint: [\"http://a:1\"]\n",
        )
        .unwrap();
        let file = RegistriesFile::load(&path).unwrap();
        let plan = file
            .current()
            .unwrap()
            .plan(&reference("busybox"), &[], None);
        assert_eq!(plan[0].endpoint.host, "a:1");
        std::fs::write(
            &path,
            "mirrors:\n  docker.io:\n    endpoint: [\"http://bb:22\"]\n",
        )
        .unwrap();
        let plan = file
            .current()
            .unwrap()
            .plan(&reference("busybox"), &[], None);
        assert_eq!(plan[0].endpoint.host, "bb:22");
        std::fs::write(&path, "mirrors: [\n").unwrap();
        assert!(matches!(file.current(), Err(ImageError::Config { .. })));
    }
}
