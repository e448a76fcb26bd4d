//! The cluster's certificates: a CA, the serving certificate and the admin client certificate,
//! created under `<data-dir>/pki` on first start and reused afterwards, plus the admin
//! kubeconfig at `<data-dir>/admin.kubeconfig`.
//!
//! The serving certificate is issued again (by the same CA) when the names it must cover have
//! changed, e.g. the node got another address, so clients keep trusting the same CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};

/// Why the certificates could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a certificate or key failed.
    #[error("certificate {what}: {source}")]
    Cert {
        /// Which certificate.
        what: &'static str,
        /// The error.
        #[source]
        source: rcgen::Error,
    },
}

/// The PEM files of the cluster.
#[derive(Debug, Clone)]
pub struct Pki {
    /// Directory holding the files.
    pub dir: PathBuf,
    /// CA certificate PEM.
    pub ca_cert_pem: String,
    /// CA private key PEM.
    pub ca_key_pem: String,
    /// Serving certificate chain PEM.
    pub serving_cert_pem: String,
    /// Serving key PEM.
    pub serving_key_pem: String,
}

pub(crate) fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a key behind.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn cert_err(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |source| PkiError::Cert { what, source }
}

fn validity(params: &mut CertificateParams, years: i32) {
    let now = jiff::Zoned::now();
    let year = now.year() as i32;
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + years, 1, 1);
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in organizations {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The names the serving certificate covers.
pub fn serving_names(extra_ips: &[IpAddr], first_service_ip: Option<IpAddr>) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for ip in extra_ips.iter().chain(first_service_ip.iter()) {
        let s = ip.to_string();
        if !names.contains(&s) {
            names.push(s);
        }
    }
    names
}

impl Pki {
    /// Loads the certificates under `dir`, creating what is missing, and issuing the serving
    /// certificate again if it does not cover `names`.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.into(),
            source,
        })?;
        let (ca_cert_pem, ca_key_pem) =
            match (read(&dir.join("ca.crt"))?, read(&dir.join("ca.key"))?) {
                (Some(c), Some(k)) => (c, k),
                _ => {
                    let key = KeyPair::generate().map_err(cert_err("CA key"))?;
                    let mut params = CertificateParams::default();
                    params.distinguished_name = name("apiserver-lite-ca", &[]);
                    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                    params.key_usages = vec![
                        KeyUsagePurpose::KeyCertSign,
                        KeyUsagePurpose::CrlSign,
                        KeyUsagePurpose::DigitalSignature,
                    ];
                    validity(&mut params, 10);
                    let cert = params.self_signed(&key).map_err(cert_err("CA"))?;
                    write_private(&dir.join("ca.key"), &key.serialize_pem())?;
                    write_private(&dir.join("ca.crt"), &cert.pem())?;
                    (cert.pem(), key.serialize_pem())
                }
            };
        let mut pki = Pki {
            dir: dir.into(),
            ca_cert_pem,
            ca_key_pem,
            serving_cert_pem: String::new(),
            serving_key_pem: String::new(),
        };
        let wanted = names.join(",");
        let current = read(&dir.join("apiserver.names"))?;
        match (
            read(&dir.join("apiserver.crt"))?,
            read(&dir.join("apiserver.key"))?,
            current,
        ) {
            (Some(c), Some(k), Some(n)) if n.trim() == wanted => {
                pki.serving_cert_pem = c;
                pki.serving_key_pem = k;
            }
            _ => {
                let mut params =
                    CertificateParams::new(names.to_vec()).map_err(cert_err("serving names"))?;
                params.distinguished_name = name("kube-apiserver", &[]);
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                let (cert, key) = pki.issue(params, "serving")?;
                write_private(&dir.join("apiserver.key"), &key)?;
                write_private(&dir.join("apiserver.crt"), &cert)?;
                write_private(&dir.join("apiserver.names"), &wanted)?;
                pki.serving_cert_pem = cert;
                pki.serving_key_pem = key;
            }
        }
        Ok(pki)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        what: &'static str,
    ) -> Result<(String, String), PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(cert_err("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, ca_key).map_err(cert_err("CA"))?;
        let key = KeyPair::generate().map_err(cert_err(what))?;
        validity(&mut params, 1);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).map_err(cert_err(what))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a client certificate for `user` in `groups`; returns (cert PEM, key PEM).
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(user, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        self.issue(params, "client")
    }

    /// Writes a kubeconfig for `user` at `path` unless one exists, with a client certificate
    /// issued by the CA, pointing at `server`.
    pub fn ensure_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(), PkiError> {
        if let Some(existing) = read(path)?
            && existing.contains(&format!("server: {server}\n"))
        {
            return Ok(());
        }
        let (cert, key) = self.issue_client(user, groups)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: apiserver-lite\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: apiserver-lite\n  context:\n    cluster: apiserver-lite\n    user: {user}\ncurrent-context: apiserver-lite\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
            ca = b64(&self.ca_cert_pem),
            cert = b64(&cert),
            key = b64(&key),
        );
        write_private(path, &kubeconfig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_created_once_and_reissued_when_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let names = serving_names(&[], None);
        let first = Pki::load_or_create(dir.path(), &names).unwrap();
        let again = Pki::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.ca_cert_pem, again.ca_cert_pem);
        assert_eq!(first.serving_cert_pem, again.serving_cert_pem);
        let more = serving_names(
            &["10.1.2.3".parse().unwrap()],
            Some("10.96.0.1".parse().unwrap()),
        );
        let changed = Pki::load_or_create(dir.path(), &more).unwrap();
        assert_eq!(first.ca_cert_pem, changed.ca_cert_pem, "the CA stays");
        assert_ne!(
            first.serving_cert_pem, changed.serving_cert_pem,
            "the serving cert is reissued"
        );
    }

    #[test]
    fn client_certificates_carry_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &serving_names(&[], None)).unwrap();
        let (cert, _) = pki.issue_client("admin", &["system:masters"]).unwrap();
        let der = rustls_pemfile::certs(&mut cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let user = crate::auth::user_from_certificate(&der).unwrap();
        assert_eq!(user.name, "admin");
        assert_eq!(
            user.groups,
            vec![
                "system:masters".to_string(),
                "system:authenticated".to_string()
            ]
        );
    }
}
