//! ServiceAccount tokens: the signing keys, TokenRequest (`serviceaccounts/{name}/token`) and
//! the authentication of the tokens it hands out.
//!
//! Tokens are JWTs as upstream's bound tokens: ES256 (ECDSA P-256) signed, claims `iss`,
//! `sub` (`system:serviceaccount:<ns>:<name>`), `aud`, `exp`, `iat`, `nbf`, `jti` and the
//! private `kubernetes.io` claim naming the namespace, the ServiceAccount and the object the
//! token is bound to (a Pod, with its node, or a Secret), each with its uid. A token
//! authenticates while its signature, issuer, audience and lifetime check out and while the
//! ServiceAccount and the bound object still exist with the recorded uids (a pod deleted for
//! more than 60 s no longer counts, as upstream).
//!
//! The signing key is `--service-account-signing-key-file` or, when not given, a key pair
//! generated once and kept as `<pki>/sa.key` and `<pki>/sa.pub`. Tokens verify against the
//! signing key's public half and any `--service-account-key-file`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use apimachinery::resources;
use apimachinery::status::{ApiError, FieldCause};
use async_trait::async_trait;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::PublicKeyData;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

use crate::auth::UserInfo;
use crate::storage::Store;

/// The issuer when `--service-account-issuer` is not given (upstream's usual value).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The shortest lifetime a TokenRequest may ask for.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The lifetime when a TokenRequest names none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The longest lifetime a TokenRequest may ask for (2^32 s, as upstream).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// How long after its deletion timestamp a pod's tokens stay valid.
const DELETED_POD_GRACE_SECONDS: i64 = 60;

/// Why keys could not be loaded or a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A key file holds no usable key.
    #[error("{path}: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Signing failed.
    #[error("signing the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The token is not one of ours or no longer valid.
    #[error("invalid service account token: {0}")]
    Invalid(String),
}

/// A name and uid inside the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Object name.
    pub name: String,
    /// Object uid.
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The node of the bound pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// The claims of a ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Unique token id.
    #[serde(default)]
    pub jti: String,
    /// What the token belongs and is bound to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

/// The user name of a ServiceAccount.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl Claims {
    /// The user the claims authenticate (before the live checks).
    pub fn user(&self) -> UserInfo {
        let ns = &self.kubernetes.namespace;
        UserInfo {
            name: username(ns, &self.kubernetes.serviceaccount.name),
            uid: self.kubernetes.serviceaccount.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }
    }

    /// Checks issuer, audiences and lifetime at `now` (Unix seconds): the pure part of
    /// verification.
    pub fn check(&self, issuer: &str, audiences: &[String], now: i64) -> Result<(), TokenError> {
        if self.iss != issuer {
            return Err(TokenError::Invalid(format!(
                "issuer {:?} is not {issuer:?}",
                self.iss
            )));
        }
        if !self.aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::Invalid(format!(
                "audiences {:?} do not include any of {audiences:?}",
                self.aud
            )));
        }
        if now >= self.exp {
            return Err(TokenError::Invalid("token has expired".into()));
        }
        if now < self.nbf {
            return Err(TokenError::Invalid("token is not valid yet".into()));
        }
        let expected_sub = username(
            &self.kubernetes.namespace,
            &self.kubernetes.serviceaccount.name,
        );
        if self.sub != expected_sub {
            return Err(TokenError::Invalid(format!(
                "subject {:?} does not match the kubernetes.io claim",
                self.sub
            )));
        }
        Ok(())
    }
}

/// A public key tokens verify against.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PublicKey {
    /// Upstream's key id: the URL-safe base64 SHA-256 of the key's SubjectPublicKeyInfo DER.
    key_id: String,
    /// The uncompressed P-256 point (0x04, x, y).
    point: Vec<u8>,
}

impl PublicKey {
    fn new(spki_der: &[u8], point: Vec<u8>) -> Self {
        PublicKey {
            key_id: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(spki_der)),
            point,
        }
    }

    /// The key as a JSON Web Key.
    fn jwk(&self) -> Value {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.key_id,
            "crv": "P-256",
            "alg": "ES256",
            "x": b64.encode(&self.point[1..33]),
            "y": b64.encode(&self.point[33..65]),
        })
    }
}

/// The keys tokens are signed with and verified against.
pub struct Keys {
    signing: EncodingKey,
    key_id: String,
    verifying: Vec<DecodingKey>,
    public: Vec<PublicKey>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("key_id", &self.key_id)
            .field("verifying", &self.verifying.len())
            .finish()
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.into(),
        source,
    }
}

fn key_err(path: &Path, why: impl Into<String>) -> TokenError {
    TokenError::Key {
        path: path.into(),
        why: why.into(),
    }
}

/// A private ECDSA P-256 key from PEM (PKCS#8 or SEC1 as rcgen reads them).
fn parse_signing_key(path: &Path, pem: &str) -> Result<rcgen::KeyPair, TokenError> {
    let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| key_err(path, e.to_string()))?;
    if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(key_err(
            path,
            "only ECDSA P-256 keys are supported for service account tokens (ES256)",
        ));
    }
    Ok(pair)
}

/// The public keys of every public key, certificate or private key in `pem`.
fn parse_public_keys(path: &Path, pem: &str) -> Result<Vec<PublicKey>, TokenError> {
    use x509_parser::prelude::FromDer;
    let mut points = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| key_err(path, format!("PEM: {e}")))?;
        let (spki, point) = match block.label.as_str() {
            "PUBLIC KEY" => {
                let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&block.contents)
                    .map_err(|e| key_err(path, format!("public key: {e}")))?;
                (spki.raw.to_vec(), spki.subject_public_key.data.to_vec())
            }
            "CERTIFICATE" => {
                let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                    .map_err(|e| key_err(path, format!("certificate: {e}")))?;
                let spki = cert.public_key();
                (spki.raw.to_vec(), spki.subject_public_key.data.to_vec())
            }
            label if label.ends_with("PRIVATE KEY") => {
                let text = format!(
                    "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                    base64::engine::general_purpose::STANDARD.encode(&block.contents)
                );
                let pair = parse_signing_key(path, &text)?;
                (
                    pair.subject_public_key_info(),
                    pair.public_key_raw().to_vec(),
                )
            }
            _ => continue,
        };
        if point.len() != 65 || point[0] != 4 {
            return Err(key_err(
                path,
                "only ECDSA P-256 public keys are supported for service account tokens",
            ));
        }
        points.push(PublicKey::new(&spki, point));
    }
    if points.is_empty() {
        return Err(key_err(path, "no public key found"));
    }
    Ok(points)
}

impl Keys {
    /// Loads the signing key (`signing_key_file`, or `<pki_dir>/sa.key`, generated and
    /// persisted on first start) and the extra verification keys of `key_files`.
    pub fn load_or_generate(
        pki_dir: &Path,
        signing_key_file: Option<&Path>,
        key_files: &[PathBuf],
    ) -> Result<Self, TokenError> {
        let pair = match signing_key_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(io_err(path))?;
                parse_signing_key(path, &pem)?
            }
            None => {
                let path = pki_dir.join("sa.key");
                match crate::pki::read(&path).map_err(|e| key_err(&path, e.to_string()))? {
                    Some(pem) => parse_signing_key(&path, &pem)?,
                    None => {
                        let pair = rcgen::KeyPair::generate()
                            .map_err(|e| key_err(&path, e.to_string()))?;
                        let public = pki_dir.join("sa.pub");
                        crate::pki::write_private(&public, &pair.public_key_pem())
                            .map_err(|e| key_err(&public, e.to_string()))?;
                        crate::pki::write_private(&path, &pair.serialize_pem())
                            .map_err(|e| key_err(&path, e.to_string()))?;
                        tracing::info!(path = %path.display(), "generated the service account signing key");
                        pair
                    }
                }
            }
        };
        let own = PublicKey::new(
            &pair.subject_public_key_info(),
            pair.public_key_raw().to_vec(),
        );
        let mut public = vec![own.clone()];
        for path in key_files {
            let pem = std::fs::read_to_string(path).map_err(io_err(path))?;
            for key in parse_public_keys(path, &pem)? {
                if !public.contains(&key) {
                    public.push(key);
                }
            }
        }
        Ok(Keys {
            signing: EncodingKey::from_ec_der(&pair.serialize_der()),
            key_id: own.key_id,
            verifying: public
                .iter()
                .map(|k| DecodingKey::from_ec_der(&k.point))
                .collect(),
            public,
        })
    }
}

/// Issues and verifies ServiceAccount tokens.
#[derive(Debug)]
pub struct TokenService {
    /// `--service-account-issuer`.
    pub issuer: String,
    /// The audiences the API server accepts, and the default of a TokenRequest.
    pub api_audiences: Vec<String>,
    keys: Keys,
}

impl TokenService {
    /// A service issuing as `issuer`, accepting `api_audiences` (the issuer when empty).
    pub fn new(issuer: String, api_audiences: Vec<String>, keys: Keys) -> Self {
        let api_audiences = if api_audiences.is_empty() {
            vec![issuer.clone()]
        } else {
            api_audiences
        };
        TokenService {
            issuer,
            api_audiences,
            keys,
        }
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.keys.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.keys.signing).map_err(TokenError::Sign)
    }

    /// `/openid/v1/jwks`: every public key tokens verify against, as a JSON Web Key Set.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys.public.iter().map(PublicKey::jwk).collect::<Vec<_>>()})
    }

    /// `/.well-known/openid-configuration`, with the key set at `jwks_uri`.
    pub fn openid_configuration(&self, jwks_uri: &str) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// The claims of a token whose signature one of our keys verifies; nothing else checked.
    pub fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let mut last = TokenError::Invalid("no verification key".into());
        for key in &self.keys.verifying {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    /// The user of a ServiceAccount token, checked in full at `now`: signature, claims and
    /// the live objects the token names.
    pub async fn authenticate(
        &self,
        token: &str,
        objects: &dyn Objects,
        now: i64,
    ) -> Result<UserInfo, TokenError> {
        let claims = self.verify_signature(token)?;
        claims.check(&self.issuer, &self.api_audiences, now)?;
        let k = &claims.kubernetes;
        let live = |e: ApiError| TokenError::Invalid(format!("looking up bound objects: {e}"));
        let sa = objects
            .get("serviceaccounts", &k.namespace, &k.serviceaccount.name)
            .await
            .map_err(live)?;
        check_live(
            "ServiceAccount",
            &k.namespace,
            &k.serviceaccount,
            sa.as_ref(),
        )?;
        if let Some(pod_ref) = &k.pod {
            let pod = objects
                .get("pods", &k.namespace, &pod_ref.name)
                .await
                .map_err(live)?;
            check_live("Pod", &k.namespace, pod_ref, pod.as_ref())?;
            let deleted = pod
                .as_ref()
                .and_then(|p| p["metadata"]["deletionTimestamp"].as_str())
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            if let Some(deleted) = deleted
                && deleted.as_second() + DELETED_POD_GRACE_SECONDS < now
            {
                return Err(TokenError::Invalid(format!(
                    "pod {}/{} was deleted more than {DELETED_POD_GRACE_SECONDS}s ago",
                    k.namespace, pod_ref.name
                )));
            }
        }
        if let Some(secret_ref) = &k.secret {
            let secret = objects
                .get("secrets", &k.namespace, &secret_ref.name)
                .await
                .map_err(live)?;
            check_live("Secret", &k.namespace, secret_ref, secret.as_ref())?;
        }
        Ok(claims.user())
    }
}

fn check_live(
    kind: &str,
    namespace: &str,
    want: &ObjectRef,
    found: Option<&Value>,
) -> Result<(), TokenError> {
    let found = found.ok_or_else(|| {
        TokenError::Invalid(format!("{kind} {namespace}/{} has been deleted", want.name))
    })?;
    let uid = found["metadata"]["uid"].as_str().unwrap_or_default();
    if uid != want.uid {
        return Err(TokenError::Invalid(format!(
            "{kind} UID ({uid}) does not match claim ({})",
            want.uid
        )));
    }
    Ok(())
}

/// Reads the objects tokens name (the store in the server, a map in tests).
#[async_trait]
pub trait Objects: Send + Sync {
    /// The core/v1 object `plural` `namespace/name` (`namespace` empty for cluster-scoped
    /// kinds), if it exists.
    async fn get(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError>;
}

/// [`Objects`] over the store.
pub struct StoreObjects<'a>(pub &'a dyn Store);

#[async_trait]
impl Objects for StoreObjects<'_> {
    async fn get(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let resource = resources::find("", "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("no resource {plural}")))?;
        let namespace = Some(namespace).filter(|ns| !ns.is_empty());
        let key = resource.storage_key(namespace, name);
        let kv = self
            .0
            .get(&key)
            .await
            .map_err(|e| ApiError::internal(format!("reading {key}: {e}")))?;
        kv.map(|kv| {
            serde_json::from_slice(&kv.value).map_err(|e| {
                ApiError::internal(format!("stored object {key} is not valid JSON: {e}"))
            })
        })
        .transpose()
    }
}

fn invalid_request(name: &str, field: &str, value: &Value, why: String) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![FieldCause::invalid(field, value.clone(), why)],
    )
}

/// Answers a TokenRequest for ServiceAccount `namespace/name` at `now` (Unix seconds): checks
/// the request, the ServiceAccount and the bound object, and returns the TokenRequest with
/// `status.token` and `status.expirationTimestamp`.
pub async fn token_request(
    service: &TokenService,
    objects: &dyn Objects,
    namespace: &str,
    name: &str,
    body: &Value,
    now: i64,
) -> Result<Value, ApiError> {
    if body["kind"].as_str().is_some_and(|k| k != "TokenRequest") {
        return Err(ApiError::bad_request(format!(
            "expected a TokenRequest, got {}",
            body["kind"]
        )));
    }
    let spec = &body["spec"];
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        v => v.as_i64().ok_or_else(|| {
            invalid_request(
                name,
                "spec.expirationSeconds",
                v,
                "must be an integer".into(),
            )
        })?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid_request(
            name,
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes".into(),
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid_request(
            name,
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds".into(),
        ));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let audiences = if audiences.is_empty() {
        service.api_audiences.clone()
    } else {
        audiences
    };
    let sa = objects
        .get("serviceaccounts", namespace, name)
        .await?
        .ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
    let mut claim = KubernetesClaim {
        namespace: namespace.into(),
        serviceaccount: ObjectRef {
            name: name.into(),
            uid: sa["metadata"]["uid"].as_str().unwrap_or_default().into(),
        },
        pod: None,
        secret: None,
        node: None,
    };
    let bound = &spec["boundObjectRef"];
    if !bound.is_null() {
        let kind = bound["kind"].as_str().unwrap_or_default();
        let api_version = bound["apiVersion"].as_str().unwrap_or("v1");
        let bound_name = bound["name"].as_str().unwrap_or_default();
        let plural = match (kind, api_version) {
            ("Pod", "v1") => "pods",
            ("Secret", "v1") => "secrets",
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{name}\" to object of type {api_version}, Kind={kind}"
                )));
            }
        };
        let object = objects
            .get(plural, namespace, bound_name)
            .await?
            .ok_or_else(|| ApiError::not_found(plural, bound_name))?;
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(want) = bound["uid"].as_str().filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict(
                plural,
                bound_name,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        let reference = ObjectRef {
            name: bound_name.into(),
            uid,
        };
        if plural == "pods" {
            if let Some(node_name) = object["spec"]["nodeName"].as_str() {
                claim.node = Some(ObjectRef {
                    name: node_name.into(),
                    uid: node_uid(objects, node_name).await,
                });
            }
            claim.pod = Some(reference);
        } else {
            claim.secret = Some(reference);
        }
    }
    let claims = Claims {
        iss: service.issuer.clone(),
        sub: username(namespace, name),
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: claim,
    };
    let token = service
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = jiff::Timestamp::from_second(claims.exp)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut metadata = body["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(namespace);
    metadata["creationTimestamp"] = Value::Null;
    let mut spec = spec.clone();
    if !spec.is_object() {
        spec = json!({});
    }
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    spec["boundObjectRef"] = bound.clone();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": metadata,
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}

/// The uid of node `name` (empty when the node is gone).
async fn node_uid(objects: &dyn Objects, name: &str) -> String {
    objects
        .get("nodes", "", name)
        .await
        .ok()
        .flatten()
        .and_then(|n| n["metadata"]["uid"].as_str().map(String::from))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    /// Objects in a map keyed by `plural/namespace/name`.
    #[derive(Default)]
    struct FakeObjects(Mutex<HashMap<String, Value>>);

    impl FakeObjects {
        fn put(&self, plural: &str, ns: &str, name: &str, uid: &str) {
            self.0.lock().unwrap().insert(
                format!("{plural}/{ns}/{name}"),
                json!({"metadata": {"name": name, "namespace": ns, "uid": uid}, "spec": {}}),
            );
        }
        fn edit(&self, plural: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
            f(self
                .0
                .lock()
                .unwrap()
                .get_mut(&format!("{plural}/{ns}/{name}"))
                .unwrap());
        }
        fn remove(&self, plural: &str, ns: &str, name: &str) {
            self.0
                .lock()
                .unwrap()
                .remove(&format!("{plural}/{ns}/{name}"));
        }
    }

    #[async_trait]
    impl Objects for FakeObjects {
        async fn get(
            &self,
            plural: &str,
            namespace: &str,
            name: &str,
        ) -> Result<Option<Value>, ApiError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&format!("{plural}/{namespace}/{name}"))
                .cloned())
        }
    }

    fn service(dir: &Path) -> TokenService {
        TokenService::new(
            DEFAULT_ISSUER.into(),
            Vec::new(),
            Keys::load_or_generate(dir, None, &[]).unwrap(),
        )
    }

    fn world() -> FakeObjects {
        let objects = FakeObjects::default();
        objects.put("serviceaccounts", "ns1", "default", "sa-uid");
        objects.put("pods", "ns1", "web", "pod-uid");
        objects.edit("pods", "ns1", "web", |p| {
            p["spec"]["nodeName"] = json!("n1")
        });
        objects.put("nodes", "", "n1", "node-uid");
        objects
    }

    async fn issue(service: &TokenService, objects: &FakeObjects, spec: Value) -> Value {
        token_request(
            service,
            objects,
            "ns1",
            "default",
            &json!({"kind": "TokenRequest", "spec": spec}),
            NOW,
        )
        .await
        .unwrap()
    }

    /// Claims of service account a/b (uid u), bound to nothing, valid for ten minutes from NOW.
    fn unbound_claims() -> Claims {
        Claims {
            iss: DEFAULT_ISSUER.into(),
            sub: username("a", "b"),
            aud: vec![DEFAULT_ISSUER.into()],
            exp: NOW + 600,
            iat: NOW,
            nbf: NOW,
            jti: String::new(),
            kubernetes: KubernetesClaim {
                namespace: "a".into(),
                serviceaccount: ObjectRef {
                    name: "b".into(),
                    uid: "u".into(),
                },
                pod: None,
                secret: None,
                node: None,
            },
        }
    }

    fn token(answer: &Value) -> &str {
        answer["status"]["token"].as_str().unwrap()
    }

    #[tokio::test]
    async fn a_requested_token_carries_upstream_claims_and_authenticates_as_the_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        let objects = world();
        let answer = issue(
            &service,
            &objects,
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}}),
        )
        .await;
        assert_eq!(answer["spec"]["expirationSeconds"], 3600);
        assert_eq!(
            answer["status"]["expirationTimestamp"],
            jiff::Timestamp::from_second(NOW + 3600)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        );
        let claims = service.verify_signature(token(&answer)).unwrap();
        assert_eq!(claims.sub, "system:serviceaccount:ns1:default");
        assert_eq!(claims.aud, [DEFAULT_ISSUER]);
        assert_eq!((claims.iat, claims.nbf, claims.exp), (NOW, NOW, NOW + 3600));
        assert_eq!(claims.kubernetes.serviceaccount.uid, "sa-uid");
        let pod = claims.kubernetes.pod.as_ref().unwrap();
        assert_eq!((pod.name.as_str(), pod.uid.as_str()), ("web", "pod-uid"));
        let node = claims.kubernetes.node.as_ref().unwrap();
        assert_eq!((node.name.as_str(), node.uid.as_str()), ("n1", "node-uid"));

        let user = service
            .authenticate(token(&answer), &objects, NOW + 10)
            .await
            .unwrap();
        assert_eq!(user.name, "system:serviceaccount:ns1:default");
        assert_eq!(user.uid, "sa-uid");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
    }

    #[tokio::test]
    async fn tampered_expired_and_foreign_audience_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        let objects = world();
        let answer = issue(&service, &objects, json!({"expirationSeconds": 600})).await;
        let good = token(&answer);
        assert!(service.authenticate(good, &objects, NOW).await.is_ok());
        assert!(
            service
                .authenticate(good, &objects, NOW + 600)
                .await
                .is_err()
        );
        assert!(service.authenticate(good, &objects, NOW - 1).await.is_err());

        // Another namespace in the payload, the original signature.
        let parts: Vec<&str> = good.split('.').collect();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        payload["kubernetes.io"]["namespace"] = json!("kube-system");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            engine.encode(serde_json::to_vec(&payload).unwrap()),
            parts[2]
        );
        assert!(service.authenticate(&forged, &objects, NOW).await.is_err());

        let other_audience = issue(&service, &objects, json!({"audiences": ["vault"]})).await;
        let err = service
            .authenticate(token(&other_audience), &objects, NOW)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("audiences"), "{err}");
    }

    #[tokio::test]
    async fn tokens_stop_authenticating_when_their_service_account_or_pod_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        let objects = world();
        let bound = issue(
            &service,
            &objects,
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}}),
        )
        .await;
        let bound = token(&bound).to_string();
        // Deleting, within the grace: still valid; 61 s past the deletion: refused.
        objects.edit("pods", "ns1", "web", |p| {
            p["metadata"]["deletionTimestamp"] = json!(
                jiff::Timestamp::from_second(NOW)
                    .unwrap()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            )
        });
        assert!(
            service
                .authenticate(&bound, &objects, NOW + 30)
                .await
                .is_ok()
        );
        assert!(
            service
                .authenticate(&bound, &objects, NOW + 61)
                .await
                .is_err()
        );
        objects.remove("pods", "ns1", "web");
        let err = service
            .authenticate(&bound, &objects, NOW)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("has been deleted"), "{err}");
        // A pod of the same name, recreated: another uid.
        objects.put("pods", "ns1", "web", "pod-uid-2");
        assert!(service.authenticate(&bound, &objects, NOW).await.is_err());

        let unbound = issue(&service, &objects, json!({})).await;
        let unbound = token(&unbound).to_string();
        assert!(service.authenticate(&unbound, &objects, NOW).await.is_ok());
        objects.put("serviceaccounts", "ns1", "default", "sa-uid-2");
        let err = service
            .authenticate(&unbound, &objects, NOW)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not match claim"), "{err}");
    }

    #[tokio::test]
    async fn bad_token_requests_get_upstream_errors() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        let objects = world();
        let request = |name: &'static str, spec: Value| {
            let body = json!({"spec": spec});
            let (service, objects) = (&service, &objects);
            async move { token_request(service, objects, "ns1", name, &body, NOW).await }
        };
        let short = request("default", json!({"expirationSeconds": 599}))
            .await
            .unwrap_err();
        assert_eq!(short.code, 422);
        assert!(
            short.message.contains("less than 10 minutes"),
            "{}",
            short.message
        );
        assert_eq!(request("ghost", json!({})).await.unwrap_err().code, 404);
        let missing =
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "gone"}});
        assert_eq!(request("default", missing).await.unwrap_err().code, 404);
        let kind =
            json!({"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}});
        assert_eq!(request("default", kind).await.unwrap_err().code, 400);
        let uid = json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "old"}});
        assert_eq!(request("default", uid).await.unwrap_err().code, 409);
    }

    #[test]
    fn the_generated_key_is_kept_and_other_signers_verify_only_when_listed() {
        let dir = tempfile::tempdir().unwrap();
        let first = service(dir.path());
        let again = service(dir.path());
        let claims = unbound_claims();
        let token = first.sign(&claims).unwrap();
        assert_eq!(again.verify_signature(&token).unwrap(), claims);
        assert!(
            claims
                .check(DEFAULT_ISSUER, &first.api_audiences, NOW)
                .is_ok()
        );
        assert!(
            claims
                .check("https://other", &first.api_audiences, NOW)
                .is_err()
        );

        let other_dir = tempfile::tempdir().unwrap();
        let stranger = service(other_dir.path());
        assert!(stranger.verify_signature(&token).is_err());
        let trusting = TokenService::new(
            DEFAULT_ISSUER.into(),
            Vec::new(),
            Keys::load_or_generate(other_dir.path(), None, &[dir.path().join("sa.pub")]).unwrap(),
        );
        assert_eq!(trusting.verify_signature(&token).unwrap(), claims);

        std::fs::write(
            dir.path().join("rsa.pem"),
            "-----BEGIN PUBLIC KEY-----\nMA==\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(
            Keys::load_or_generate(other_dir.path(), None, &[dir.path().join("rsa.pem")]).is_err()
        );
    }

    #[test]
    fn the_published_key_set_verifies_issued_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        let claims = unbound_claims();
        let token = service.sign(&claims).unwrap();
        let jwks = service.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), keys[0]["kid"].as_str());
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(keys[0].clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.set_audience(&[DEFAULT_ISSUER]);
        let decoded = jsonwebtoken::decode::<Claims>(&token, &key, &validation).unwrap();
        assert_eq!(decoded.claims, claims);

        let config = service.openid_configuration("https://h:1/openid/v1/jwks");
        assert_eq!(config["issuer"], DEFAULT_ISSUER);
        assert_eq!(config["jwks_uri"], "https://h:1/openid/v1/jwks");
    }
}
