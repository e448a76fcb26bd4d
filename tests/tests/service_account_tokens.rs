//! ServiceAccount tokens end to end: `kubectl create token` against a real apiserver-lite, the
//! token used as `kubectl --token`, and the cases that must get 401 (a tampered token, a
//! token whose bound object or ServiceAccount is gone). Also a signing key given by flag.

use std::path::Path;

use base64::Engine;

use e2e::{ApiServer, Run, ServerOptions, run_kubectl};

/// kubectl as the bearer of `token` only (no client certificate).
fn kubectl_as(server: &ApiServer, token: &str, args: &[&str]) -> Run {
    let ca = server.data_dir.path().join("pki/ca.crt");
    let mut all = vec![
        format!("--server={}", server.url),
        format!("--certificate-authority={}", ca.display()),
        format!("--token={token}"),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run_kubectl("kubectl", Path::new("/dev/null"), &all, None, &[])
}

fn create_token(server: &ApiServer, args: &[&str]) -> String {
    let mut all = vec!["create", "token"];
    all.extend_from_slice(args);
    server.kubectl(&all).ok().trim().to_string()
}

fn assert_unauthorized(run: &Run) {
    let stderr = run.fails();
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("must be logged in"),
        "{stderr}"
    );
}

#[test]
fn kubectl_create_token_gives_a_token_that_authenticates_until_tampered_or_unbound() {
    let mut server = ApiServer::start().unwrap();
    e2e::wait_for("the default ServiceAccount", || {
        !server
            .jsonpath(&["serviceaccount", "default"], "{.metadata.uid}")
            .is_empty()
    });
    let token = create_token(&server, &["default"]);
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    kubectl_as(&server, &token, &["get", "pods"]).ok();
    kubectl_as(&server, &token, &["get", "configmaps", "-n", "kube-system"]).ok();

    // One changed character of the signature.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert_unauthorized(&kubectl_as(
        &server,
        &String::from_utf8(tampered).unwrap(),
        &["get", "pods"],
    ));
    assert_unauthorized(&kubectl_as(&server, "not-a-token", &["get", "pods"]));

    // The TokenRequest's own errors, as kubectl shows them.
    let short = server.kubectl(&["create", "token", "default", "--duration=5m"]);
    assert!(
        short
            .fails()
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        short.stderr
    );
    let missing = server.kubectl(&["create", "token", "ghost"]);
    assert!(
        missing
            .fails()
            .contains("serviceaccounts \"ghost\" not found"),
        "{}",
        missing.stderr
    );

    // Bound to a Secret: valid while the Secret lives.
    server
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "anchor",
            "--from-literal=a=b",
        ])
        .ok();
    let bound = create_token(
        &server,
        &[
            "default",
            "--bound-object-kind=Secret",
            "--bound-object-name=anchor",
        ],
    );
    kubectl_as(&server, &bound, &["get", "pods"]).ok();
    server.kubectl(&["delete", "secret", "anchor"]).ok();
    assert_unauthorized(&kubectl_as(&server, &bound, &["get", "pods"]));

    // Another audience is not for the API server.
    let vault = create_token(&server, &["default", "--audience=vault"]);
    assert_unauthorized(&kubectl_as(&server, &vault, &["get", "pods"]));

    // The OIDC discovery documents publish the key the token names.
    let discovery = server.kubectl(&["get", "--raw", "/.well-known/openid-configuration"]);
    let discovery: serde_json::Value = serde_json::from_str(discovery.ok()).unwrap();
    assert_eq!(
        discovery["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let jwks = server.kubectl(&["get", "--raw", "/openid/v1/jwks"]);
    let jwks: serde_json::Value = serde_json::from_str(jwks.ok()).unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);

    // The generated signing key survives a restart.
    server.restart().unwrap();
    kubectl_as(&server, &token, &["get", "pods"]).ok();

    // A deleted ServiceAccount's tokens stop working, also after it is recreated.
    server.kubectl(&["create", "serviceaccount", "robot"]).ok();
    let robot = create_token(&server, &["robot"]);
    kubectl_as(&server, &robot, &["get", "pods"]).ok();
    server.kubectl(&["delete", "serviceaccount", "robot"]).ok();
    assert_unauthorized(&kubectl_as(&server, &robot, &["get", "pods"]));
    server.kubectl(&["create", "serviceaccount", "robot"]).ok();
    assert_unauthorized(&kubectl_as(&server, &robot, &["get", "pods"]));
}

#[test]
fn a_signing_key_and_issuer_given_by_flag_are_used() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("sa-signing.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let server = ApiServer::start_with(ServerOptions {
        extra_args: vec![
            format!("--service-account-signing-key-file={}", key.display()),
            "--service-account-issuer=https://issuer.example".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    assert!(!server.data_dir.path().join("pki/sa.key").exists());
    e2e::wait_for("the default ServiceAccount", || {
        !server
            .jsonpath(&["serviceaccount", "default"], "{.metadata.uid}")
            .is_empty()
    });
    let token = create_token(&server, &["default"]);
    kubectl_as(&server, &token, &["get", "pods"]).ok();
    let payload = token.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["iss"], "https://issuer.example");
    assert_eq!(claims["aud"][0], "https://issuer.example");
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");

    // A key file that is not ECDSA P-256 is a clear start-up error.
    let rsa = keys.path().join("rsa.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa)
        .status()
        .unwrap();
    assert!(made.success());
    let refused = ApiServer::start_with(ServerOptions {
        extra_args: vec![format!(
            "--service-account-signing-key-file={}",
            rsa.display()
        )],
        ..Default::default()
    });
    let err = refused
        .err()
        .expect("an RSA signing key must be refused")
        .to_string();
    assert!(err.contains("ECDSA P-256"), "{err}");
}
