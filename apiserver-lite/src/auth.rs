//! Authentication and authorization.
//!
//! Authentication: a client certificate verified against the cluster CA during the TLS
//! handshake (CN = user, O = groups), or a bearer token from the static token file (upstream
//! CSV format: `token,user,uid,"group1,group2"`). Authorization is a pluggable step behind
//! [`Authorizer`]; for now [`AllowAuthenticated`] admits every authenticated user (RBAC comes
//! later and plugs in here).

use std::collections::HashMap;
use std::path::Path;

use rustls::pki_types::CertificateDer;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// The user's UID, if the authenticator knows one.
    pub uid: String,
    /// Groups, always including `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    fn new(name: String, uid: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        UserInfo { name, uid, groups }
    }
}

/// Why authentication failed (the client only ever sees 401).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read.
    #[error("token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the token file is malformed.
    #[error("token file {path} line {line}: {why}")]
    TokenLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// The user named by a client certificate that the TLS layer already verified.
pub fn user_from_certificate(der: &CertificateDer<'_>) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(UserInfo::new(name, String::new(), groups))
}

/// Static bearer tokens.
#[derive(Debug, Default, Clone)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    /// Reads the upstream static token CSV file.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::TokenFile {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, why)| AuthError::TokenLine {
            path: path.display().to_string(),
            line,
            why,
        })
    }

    /// Parses the CSV text; errors carry the 1-based line.
    pub fn parse(text: &str) -> Result<Self, (usize, &'static str)> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line).ok_or((i + 1, "unterminated quote"))?;
            if fields.len() < 3 {
                return Err((i + 1, "need at least token,user,uid"));
            }
            if fields[0].is_empty() || fields[1].is_empty() {
                return Err((i + 1, "token and user must not be empty"));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            tokens.insert(
                fields[0].clone(),
                UserInfo::new(fields[1].clone(), fields[2].clone(), groups),
            );
        }
        Ok(TokenAuthenticator { tokens })
    }

    /// The user of a bearer token.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.tokens.get(token).cloned()
    }
}

fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field).trim().to_string()),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field.trim().to_string());
    Some(fields)
}

/// What a request wants to do, for authorization.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// Who asks.
    pub user: &'a UserInfo,
    /// get, list, watch, create, update, patch, delete, deletecollection; or the HTTP verb in
    /// lower case for non-resource paths.
    pub verb: &'a str,
    /// API group of the resource.
    pub group: &'a str,
    /// The resource, e.g. `pods`; empty for non-resource paths.
    pub resource: &'a str,
    /// The subresource, e.g. `status`.
    pub subresource: &'a str,
    /// Namespace of the request, empty for cluster scope.
    pub namespace: &'a str,
    /// Object name, empty for collections.
    pub name: &'a str,
    /// The path, for non-resource requests.
    pub path: &'a str,
}

/// The verdict of an authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with the reason shown in the 403 message.
    Deny(String),
}

/// Decides whether a request may proceed.
pub trait Authorizer: Send + Sync {
    /// The decision for `attrs`.
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision;
}

/// Every authenticated user may do everything (the default until RBAC is enforced).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, _attrs: &Attributes<'_>) -> Decision {
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines_give_users_with_groups() {
        let auth = TokenAuthenticator::parse(
            "# comment\nsecret1,alice,uid-1,\"dev,ops\"\nsecret2,bob,uid-2\n",
        )
        .unwrap();
        let alice = auth.authenticate("secret1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "uid-1");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(
            auth.authenticate("secret2").unwrap().groups,
            ["system:authenticated"]
        );
        assert!(auth.authenticate("nope").is_none());
    }

    #[test]
    fn malformed_token_lines_are_reported_with_their_line() {
        assert_eq!(
            TokenAuthenticator::parse("a,b,c\nonly-token\n")
                .unwrap_err()
                .0,
            2
        );
        assert_eq!(TokenAuthenticator::parse("a,b,c,\"x").unwrap_err().0, 1);
    }
}
