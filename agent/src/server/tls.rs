//! TLS of the kubelet API: the serving certificate from `--tls-cert-file` and
//! `--tls-private-key-file`, or one made at start and signed by itself (for the node's name
//! and address, as kubelet does without certificates); client certificates verified against
//! the client CA when presented.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM text holds no usable certificate or key.
    #[error("{what}: {why}")]
    Pem {
        /// Which material.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and its key, PEM.
#[derive(Debug, Clone)]
pub struct ServingCert {
    /// The chain, leaf first.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

impl ServingCert {
    /// Reads the certificate and key files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(ServingCert {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// A certificate signed by its own key for `node_name` and `node_ip` (and localhost).
    pub fn self_signed(node_name: &str, node_ip: &str) -> Result<Self, TlsError> {
        let mut names = vec![node_name.to_string(), "localhost".to_string()];
        if !node_ip.is_empty() && !names.iter().any(|n| n == node_ip) {
            names.push(node_ip.to_string());
        }
        let mut params = rcgen::CertificateParams::new(names)?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::CommonName,
            format!("{node_name}@{}", jiff::Timestamp::now().as_second()),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// CA certificates in PEM (one or more).
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "client CA",
            why: e.to_string(),
        })
}

/// The server configuration: the serving certificate, client certificates optional (bearer
/// tokens are the other way in) but verified against `client_cas` when presented; HTTP/1.1
/// only, since the streaming endpoints need upgrades.
pub fn server_config(
    serving: &ServingCert,
    client_cas: Vec<CertificateDer<'static>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem {
                what: "serving certificate",
                why: e.to_string(),
            })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "serving certificate",
            why: "no certificate in PEM".into(),
        });
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut serving.key_pem.as_bytes())
        .map_err(|e| TlsError::Pem {
            what: "serving key",
            why: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            what: "serving key",
            why: "no key in PEM".into(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if client_cas.is_empty() {
        builder.with_no_client_auth().with_single_cert(certs, key)?
    } else {
        let mut roots = RootCertStore::empty();
        for ca in client_cas {
            roots.add(ca)?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Pem {
                what: "client CA",
                why: e.to_string(),
            })?;
        builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_makes_a_server_config() {
        let cert = ServingCert::self_signed("node-a", "10.0.0.5").unwrap();
        let der = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let sans = format!("{:?}", parsed.subject_alternative_name().unwrap().unwrap());
        assert!(
            sans.contains("\"node-a\"") && sans.contains("IPAddress([10, 0, 0, 5])"),
            "{sans}"
        );
        server_config(&cert, ca_certificates(cert.cert_pem.as_bytes()).unwrap()).unwrap();
        server_config(&cert, Vec::new()).unwrap();
    }
}
