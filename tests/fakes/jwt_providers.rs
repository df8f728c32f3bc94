//! Bearer JWTs against doltgate's authenticator, configured from TOML as an
//! operator would: a token of every algorithm family passes its provider;
//! JWK Sets from a file and from an HTTP URL pick up a rotated key (and do
//! not refetch for every unknown key id); the bad-token corpus is refused
//! with a reason that names what is wrong.
//!
//! Keys are made at run time (RSA with the `openssl` CLI, the rest with rcgen).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use doltgate::authn::Authenticator;
use doltgate::config::{Config, Secrets};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "doltgate";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> serde_json::Value {
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "erin", "groups": ["dev", "ops"], "exp": now() + 300 })
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn authenticator(dir: &Path, provider: &str) -> Authenticator {
    let text = format!(
        "[upstream]\naddress = \"127.0.0.1:1\"\n[auth]\nupstream_credentials = \"passthrough\"\n[[auth.jwt]]\nname = \"idp\"\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nleeway = \"5s\"\n{provider}\n"
    );
    let path = dir.join("doltgate.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    doltgate::check(&config).unwrap_or_else(|e| panic!("{e}"));
    Authenticator::build(config.auth.as_ref().unwrap(), None, &Secrets::read()).unwrap()
}

async fn verify(auth: &Authenticator, token: &str) -> Result<doltgate::authn::Principal, String> {
    auth.verify_bearer(token).await.map_err(|e| e.to_string())
}

/// An RSA key pair from the openssl CLI: (private PEM, public PEM).
fn rsa_pair(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let private = dir.join("rsa.pem");
    let public = dir.join("rsa.pub.pem");
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl").args(args).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "openssl {args:?} failed (the openssl CLI is needed to make RSA keys)"
        );
    };
    run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", private.to_str().unwrap()]);
    run(&["pkey", "-in", private.to_str().unwrap(), "-pubout", "-out", public.to_str().unwrap()]);
    (std::fs::read(private).unwrap(), std::fs::read(public).unwrap())
}

/// A key pair from rcgen: (signing key, public PEM, raw public key bytes).
fn rcgen_pair(alg: &'static rcgen::SignatureAlgorithm) -> (EncodingKey, String, Vec<u8>) {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let private = pair.serialize_pem();
    let signing = if alg == &rcgen::PKCS_ED25519 {
        EncodingKey::from_ed_pem(private.as_bytes()).unwrap()
    } else {
        EncodingKey::from_ec_pem(private.as_bytes()).unwrap()
    };
    (signing, pair.public_key_pem(), pair.public_key_raw().to_vec())
}

fn key_file(dir: &Path, name: &str, pem: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_algorithm_family_verifies_and_maps_user_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    for (alg, name) in [(Algorithm::HS256, "HS256"), (Algorithm::HS384, "HS384"), (Algorithm::HS512, "HS512")] {
        let auth = authenticator(
            dir.path(),
            &format!("algorithms = [\"{name}\"]\nsecret = \"0123456789abcdef0123456789abcdef\""),
        );
        let token = sign(alg, None, &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"), &claims());
        let principal = verify(&auth, &token).await.unwrap();
        assert_eq!(principal.name, "idp:erin", "qualified by the provider");
        assert_eq!(principal.groups, ["idp:dev", "idp:ops"]);
    }

    let (rsa_private, rsa_public) = rsa_pair(dir.path());
    let rsa_file = key_file(dir.path(), "rsa-public.pem", &rsa_public);
    let rsa_signing = EncodingKey::from_rsa_pem(&rsa_private).unwrap();
    for (alg, name) in [
        (Algorithm::RS256, "RS256"),
        (Algorithm::RS384, "RS384"),
        (Algorithm::RS512, "RS512"),
        (Algorithm::PS256, "PS256"),
        (Algorithm::PS384, "PS384"),
        (Algorithm::PS512, "PS512"),
    ] {
        let auth = authenticator(dir.path(), &format!("algorithms = [\"{name}\"]\nkey_file = \"{rsa_file}\""));
        let token = sign(alg, None, &rsa_signing, &claims());
        assert_eq!(verify(&auth, &token).await.unwrap().name, "idp:erin", "{name}");
    }

    for (rcgen_alg, alg, name) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256, "ES256"),
        (&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384, "ES384"),
        (&rcgen::PKCS_ED25519, Algorithm::EdDSA, "EdDSA"),
    ] {
        let (signing, public_pem, _) = rcgen_pair(rcgen_alg);
        let file = key_file(dir.path(), &format!("{name}.pem"), public_pem.as_bytes());
        let auth = authenticator(dir.path(), &format!("algorithms = [\"{name}\"]\nkey_file = \"{file}\""));
        let token = sign(alg, None, &signing, &claims());
        assert_eq!(verify(&auth, &token).await.unwrap().name, "idp:erin", "{name}");
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ed_jwk(kid: &str, raw_public: &[u8]) -> serde_json::Value {
    json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(raw_public), "alg": "EdDSA" })
}

#[tokio::test]
async fn jwks_file_picks_up_a_rotated_key() {
    let dir = tempfile::tempdir().unwrap();
    let (old_signing, _, old_raw) = rcgen_pair(&rcgen::PKCS_ED25519);
    let (new_signing, _, new_raw) = rcgen_pair(&rcgen::PKCS_ED25519);
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [ed_jwk("old", &old_raw)] }).to_string()).unwrap();
    let auth = authenticator(
        dir.path(),
        &format!("algorithms = [\"EdDSA\"]\njwks_file = \"{}\"\njwks_min_refresh = \"1ms\"", jwks.display()),
    );
    assert!(verify(&auth, &sign(Algorithm::EdDSA, Some("old"), &old_signing, &claims())).await.is_ok());
    let rotated = sign(Algorithm::EdDSA, Some("new"), &new_signing, &claims());
    let err = verify(&auth, &rotated).await.unwrap_err();
    assert!(err.contains("unknown signing key \"new\""), "{err}");
    std::fs::write(&jwks, json!({ "keys": [ed_jwk("new", &new_raw)] }).to_string()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(verify(&auth, &rotated).await.unwrap().name, "idp:erin", "the new kid is picked up");
}

/// A JWK Set served over HTTP on loopback (HTTPS with `tls`); counts fetches.
async fn serve_jwks(
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (body, fetches, tls) = (body.clone(), fetches.clone(), tls.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let text = body.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(text),
                        )))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => drop(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await),
                    Some(tls) => {
                        // A client that does not trust the certificate hangs up mid-handshake.
                        let Ok(stream) = tls.accept(stream).await else { return };
                        drop(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await)
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_is_fetched_on_unknown_kids_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (signing, _, raw) = rcgen_pair(&rcgen::PKCS_ED25519);
    let (next_signing, _, next_raw) = rcgen_pair(&rcgen::PKCS_ED25519);
    let body = Arc::new(Mutex::new(json!({ "keys": [ed_jwk("k1", &raw)] }).to_string()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let addr = serve_jwks(body.clone(), fetches.clone(), None).await;
    let auth = authenticator(
        dir.path(),
        &format!("algorithms = [\"EdDSA\"]\njwks_url = \"http://{addr}/jwks.json\"\njwks_allow_http = true\njwks_min_refresh = \"1h\""),
    );
    for _ in 0..3 {
        assert!(verify(&auth, &sign(Algorithm::EdDSA, Some("k1"), &signing, &claims())).await.is_ok());
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched once, then served from memory");
    for kid in ["random-1", "random-2", "random-3"] {
        assert!(verify(&auth, &sign(Algorithm::EdDSA, Some(kid), &signing, &claims())).await.is_err());
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "unknown kids do not refetch within jwks_min_refresh");

    // Rotation with a short refresh interval: the new kid is fetched and accepted.
    *body.lock().unwrap() = json!({ "keys": [ed_jwk("k1", &raw), ed_jwk("k2", &next_raw)] }).to_string();
    let auth = authenticator(
        dir.path(),
        &format!("algorithms = [\"EdDSA\"]\njwks_url = \"http://{addr}/jwks.json\"\njwks_allow_http = true\njwks_min_refresh = \"1ms\""),
    );
    let token = sign(Algorithm::EdDSA, Some("k2"), &next_signing, &claims());
    assert_eq!(verify(&auth, &token).await.unwrap().name, "idp:erin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_over_https_trusts_only_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::write_test_ca(dir.path());
    let tls = doltgate::tls::server_config(&doltgate::config::TlsConfig {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    })
    .unwrap();
    let (signing, _, raw) = rcgen_pair(&rcgen::PKCS_ED25519);
    let body = Arc::new(Mutex::new(json!({ "keys": [ed_jwk("k1", &raw)] }).to_string()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let addr = serve_jwks(body, fetches.clone(), Some(tls.into())).await;
    let token = sign(Algorithm::EdDSA, Some("k1"), &signing, &claims());
    let provider = |trust: &str| {
        format!(
            "algorithms = [\"EdDSA\"]\njwks_url = \"https://{addr}/jwks.json\"\njwks_min_refresh = \"1ms\"\n{trust}"
        )
    };

    let ca = dir.path().join("ca.pem");
    let trusting = authenticator(dir.path(), &provider(&format!("jwks_ca_file = {:?}", ca.to_str().unwrap())));
    assert_eq!(verify(&trusting, &token).await.unwrap().name, "idp:erin");
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the key set came over TLS");

    // The system roots do not include the test CA: the fetch fails and says why.
    let untrusting = authenticator(dir.path(), &provider(""));
    let err = verify(&untrusting, &token).await.unwrap_err();
    assert!(err.contains("could not be reloaded"), "{err}");
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "no request was served without a trusted handshake");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_private, rsa_public) = rsa_pair(dir.path());
    let rsa_file = key_file(dir.path(), "rsa-public.pem", &rsa_public);
    let auth = authenticator(dir.path(), &format!("algorithms = [\"RS256\"]\nkey_file = \"{rsa_file}\""));
    let signing = EncodingKey::from_rsa_pem(&rsa_private).unwrap();
    let good = sign(Algorithm::RS256, None, &signing, &claims());
    assert!(verify(&auth, &good).await.is_ok());

    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        change(&mut c);
        sign(Algorithm::RS256, None, &signing, &c)
    };
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims().to_string().as_bytes());
    let cases: Vec<(String, String, &str)> = vec![
        ("expired".into(), with(&|c| c["exp"] = json!(now() - 3600)), "expired"),
        ("not yet valid".into(), with(&|c| c["nbf"] = json!(now() + 3600)), "not yet valid"),
        ("wrong audience".into(), with(&|c| c["aud"] = json!("someone-else")), "audience"),
        ("unknown issuer".into(), with(&|c| c["iss"] = json!("https://evil.example")), "no provider trusts"),
        (
            "no exp".into(),
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "\"exp\"",
        ),
        (
            "no user".into(),
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            "naming the user",
        ),
        ("alg none".into(), format!("{none_header}.{payload}."), "not a JWT"),
        // Key confusion: HMAC "signed" with the provider's public key.
        (
            "HS256 with the RSA public key".into(),
            sign(Algorithm::HS256, None, &EncodingKey::from_secret(&rsa_public), &claims()),
            "does not accept",
        ),
        ("truncated".into(), good[..good.len() - 10].to_owned(), "bad signature"),
        (
            "signature of another token".into(),
            {
                let other = with(&|c| c["sub"] = json!("mallory"));
                let (head, _) = other.rsplit_once('.').unwrap();
                format!("{head}.{}", good.rsplit_once('.').unwrap().1)
            },
            "bad signature",
        ),
        ("garbage".into(), "garbage".into(), "not a JWT"),
        ("three dots of garbage".into(), "a.b.c".into(), "not a JWT"),
    ];
    for (what, token, reason) in cases {
        let err = verify(&auth, &token).await.expect_err(&what);
        assert!(err.contains(reason), "{what}: {err}");
    }
}

#[test]
fn config_refuses_key_confusion_and_unknown_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let pem = key_file(dir.path(), "k.pem", b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n");
    for (provider, needle) in [
        (format!("algorithms = [\"HS256\"]\nkey_file = \"{pem}\""), "HS256 does not fit the key"),
        ("algorithms = [\"RS256\"]\nsecret = \"s\"".to_owned(), "RS256 does not fit the key"),
        ("algorithms = [\"none\"]\nsecret = \"s\"".to_owned(), "\"none\" is not one of"),
        ("algorithms = [\"HS256\"]\nsecret = \"s\"\nleeway = \"1h\"".to_owned(), "at most 5m"),
        (format!("algorithms = [\"RS256\", \"ES256\"]\nkey_file = \"{pem}\""), "need different kinds of key"),
        ("algorithms = [\"EdDSA\"]\njwks_url = \"ftp://idp/jwks\"".to_owned(), "must be an https:// or http:// URL"),
        (
            format!("algorithms = [\"EdDSA\"]\njwks_url = \"http://idp/jwks\"\njwks_allow_http = true\njwks_ca_file = \"{pem}\""),
            "applies only to an https:// jwks_url",
        ),
        ("algorithms = [\"EdDSA\"]\njwks_url = \"http://idp/jwks\"".to_owned(), "is plain http://"),
    ] {
        let text = format!(
            "[upstream]\naddress = \"127.0.0.1:1\"\n[auth]\nupstream_credentials = \"passthrough\"\n[[auth.jwt]]\nname = \"idp\"\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\n{provider}\n"
        );
        let err = doltgate::check(&Config::parse(&text).unwrap()).unwrap_err().to_string();
        assert!(err.contains("auth.jwt[0]") && err.contains(needle), "{provider}: {err}");
    }
}
