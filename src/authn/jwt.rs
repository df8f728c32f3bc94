//! Bearer JWTs from configured issuers: the token's `iss` picks the provider,
//! whose key (HMAC secret, PEM public key, or a JWK Set from a file or an
//! HTTPS URL) and rules (algorithms, audiences, leeway) decide.
//!
//! Each provider accepts only algorithms of its key's family, so neither
//! `alg: none` nor an HMAC token "signed" with a public key can pass.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;

use super::{unauthenticated, Principal};
use crate::config::auth::JwtProviderConfig;
use crate::config::{check_file, invalid, ConfigError, SecretSource, Secrets};
use crate::error::GatewayError;

pub const JWT_ALGORITHMS: [&str; 12] =
    ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// The longest clock skew a token's `exp`/`nbf` may be forgiven.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// The kind of key a JWT algorithm verifies with: `"HMAC"`, `"RSA"` (RS* and
/// PS*), `"EC"` or `"Ed25519"`.
fn key_family(alg: &str) -> &'static str {
    match alg.get(..2) {
        Some("HS") => "HMAC",
        Some("RS" | "PS") => "RSA",
        Some("ES") => "EC",
        _ => "Ed25519",
    }
}

/// The claims doltgate reads; the rest is kept for user and group mapping.
#[derive(Debug, Deserialize)]
pub struct Claims {
    exp: Option<u64>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The latest `exp` taken: the last second of year 9999. A later one is no
/// real expiry, and would overflow time arithmetic.
const LATEST_EXP: u64 = 253_402_300_799;

impl Claims {
    /// When the token stops being valid; an absurd `exp` is a refusal.
    pub fn expiry(&self) -> Result<Option<SystemTime>, GatewayError> {
        match self.exp {
            Some(secs) if secs > LATEST_EXP => {
                Err(unauthenticated(format!("token expiry (exp = {secs}) is past the year 9999")))
            }
            Some(secs) => Ok(SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))),
            None => Ok(None),
        }
    }
}

/// Refuses a token whose header names critical extensions (`crit`, RFC 7515
/// 4.1.11): doltgate understands none, and must not accept what it cannot check.
pub fn refuse_critical_extensions(token: &str) -> Result<(), GatewayError> {
    let header = token.split('.').next().unwrap_or_default();
    let json = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header.trim_end_matches('='))
        .map_err(|_| unauthenticated("bearer token header is not base64url"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| unauthenticated("bearer token header is not a JSON object"))?;
    if header.contains_key("crit") {
        return Err(unauthenticated("token names critical extensions (crit) doltgate does not support"));
    }
    Ok(())
}

/// A short, safe reason for a refused token.
pub fn describe(err: &jsonwebtoken::errors::Error) -> String {
    match err.kind() {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf is in the future)".into(),
        ErrorKind::InvalidAudience => "audience (aud) not accepted".into(),
        ErrorKind::InvalidIssuer => "issuer (iss) not accepted".into(),
        ErrorKind::InvalidSubject => "subject (sub) does not match the key".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "algorithm not accepted for this key".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("required claim {claim:?} is missing"),
        _ => format!("malformed token ({err})"),
    }
}

/// The `iss` claim, read before any key is chosen (nothing is trusted yet).
pub fn unverified_issuer(token: &str) -> Result<String, GatewayError> {
    let payload = token.split('.').nth(1).ok_or_else(|| unauthenticated("bearer token is not a JWT"))?;
    let json = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload.trim_end_matches('='))
        .map_err(|_| unauthenticated("bearer token payload is not base64url"))?;
    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    let claims: Issuer =
        serde_json::from_slice(&json).map_err(|_| unauthenticated("bearer token payload is not a JSON object"))?;
    claims.iss.ok_or_else(|| unauthenticated("bearer token has no issuer (iss)"))
}

pub struct Provider {
    name: String,
    issuer: String,
    validation: Validation,
    keys: Keys,
    user_claim: String,
    groups_claim: String,
    email_claim: String,
    /// Qualifies the names this provider vouches for; empty: names stand alone.
    namespace: String,
}

enum Keys {
    Fixed(DecodingKey),
    Set(JwksSource),
}

impl Provider {
    /// The provider `[[auth.jwt]]` entry `key` describes, or why it cannot be.
    pub fn build(key: &str, config: &JwtProviderConfig, secrets: &Secrets) -> Result<Provider, ConfigError> {
        check_shape(key, config)?;
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| a.parse::<Algorithm>().map_err(|_| invalid(format!("{key}.algorithms"), format!("{a:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        Ok(Provider {
            name: config.name.clone(),
            issuer: config.issuer.clone(),
            validation,
            keys: Keys::build(key, config, secrets)?,
            user_claim: config.user_claim.clone(),
            groups_claim: config.groups_claim.clone(),
            email_claim: config.email_claim.clone(),
            namespace: config.namespace.clone().unwrap_or_else(|| config.name.clone()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A bearer token: its signature, issuer, audience and lifetime, then who it names.
    pub async fn verify(&self, token: &str, header: &Header) -> Result<Principal, GatewayError> {
        let claims = self.verified_claims(token, header, &self.validation).await?;
        self.principal(&claims)
    }

    /// An OpenID Connect ID token issued to `client_id`: judged like a bearer
    /// token but with `client_id` as the one accepted audience (so ID tokens
    /// are not bearer tokens, nor bearer tokens ID tokens). Its claims.
    pub async fn verify_id_token(&self, token: &str, client_id: &str) -> Result<Claims, GatewayError> {
        refuse_critical_extensions(token)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthenticated(format!("ID token from {:?} refused: {}", self.name, describe(&e))))?;
        let mut validation = self.validation.clone();
        validation.set_audience(&[client_id]);
        self.verified_claims(token, &header, &validation).await
    }

    async fn verified_claims(
        &self,
        token: &str,
        header: &Header,
        validation: &Validation,
    ) -> Result<Claims, GatewayError> {
        if !validation.algorithms.contains(&header.alg) {
            return Err(unauthenticated(format!("provider {:?} does not accept {:?} tokens", self.name, header.alg)));
        }
        let key = match &self.keys {
            Keys::Fixed(key) => Arc::new(key.clone()),
            Keys::Set(set) => set.key_for(header.kid.as_deref()).await.map_err(unauthenticated)?,
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key, validation)
            .map_err(|e| unauthenticated(format!("token from {:?} refused: {}", self.name, describe(&e))))?;
        Ok(data.claims)
    }

    /// Who verified `claims` name, in this provider's namespace.
    pub fn principal(&self, claims: &Claims) -> Result<Principal, GatewayError> {
        let name = claims
            .other
            .get(&self.user_claim)
            .and_then(|v| v.as_str())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| unauthenticated(format!("token has no {:?} claim naming the user", self.user_claim)))?
            .to_owned();
        let groups = match claims.other.get(&self.groups_claim) {
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(serde_json::Value::Array(many)) => many.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        let qualify = |name: String| match self.namespace.as_str() {
            "" => name,
            namespace => format!("{namespace}:{name}"),
        };
        Ok(Principal {
            name: qualify(name),
            groups: groups.into_iter().map(qualify).collect(),
            expires: claims.expiry()?,
            email: verified_email(&claims.other, &self.email_claim),
        })
    }

    /// Whether `claims` lack the user or e-mail claim this provider reads
    /// (an ID token may leave them to the userinfo endpoint).
    pub fn lacks_user_claims(&self, claims: &Claims) -> bool {
        [&self.user_claim, &self.email_claim].iter().any(|claim| !claims.other.contains_key(claim.as_str()))
    }
}

impl Keys {
    fn build(key: &str, config: &JwtProviderConfig, secrets: &Secrets) -> Result<Keys, ConfigError> {
        let read = |path: &PathBuf, field: &str| {
            std::fs::read(path)
                .map_err(|e| invalid(format!("{key}.{field}"), format!("cannot read {}: {e}", path.display())))
        };
        let secret = secrets.one_of(&[
            (format!("{key}.secret"), config.secret.as_deref().map(SecretSource::Inline)),
            (format!("{key}.secret_env"), config.secret_env.as_deref().map(SecretSource::Env)),
        ])?;
        if let Some(secret) = secret {
            return Ok(Keys::Fixed(DecodingKey::from_secret(&secret)));
        }
        if let Some(path) = &config.key_file {
            let pem = read(path, "key_file")?;
            let family = key_family(&config.algorithms[0]);
            let parsed = match family {
                "RSA" => DecodingKey::from_rsa_pem(&pem),
                "EC" => DecodingKey::from_ec_pem(&pem),
                _ => DecodingKey::from_ed_pem(&pem),
            };
            return parsed
                .map(Keys::Fixed)
                .map_err(|e| invalid(format!("{key}.key_file"), format!("not an {family} public key: {e}")));
        }
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), _) => {
                let set =
                    JwksSource::parse(&read(path, "jwks_file")?).map_err(|e| invalid(format!("{key}.jwks_file"), e))?;
                JwksSource::new(JwksLocation::File(path.clone()), config.jwks_min_refresh, set)
            }
            (None, Some(url)) => {
                let uri = jwks_uri(key, config)?.expect("a jwks_url");
                if uri.scheme_str() == Some("http") {
                    tracing::warn!(provider = %config.name, %url, "JWK Set fetched over plain http (jwks_allow_http): anyone on the path can swap its keys");
                }
                let client = super::idp_http::client(config.jwks_ca_file.as_deref())
                    .map_err(|e| invalid(format!("{key}.jwks_ca_file"), e))?;
                JwksSource::new(
                    JwksLocation::Url { uri, client: Box::new(client) },
                    config.jwks_min_refresh,
                    HashMap::new(),
                )
            }
            (None, None) => return Err(invalid(key, "no key configured")),
        };
        Ok(Keys::Set(source))
    }
}

/// Everything about a provider entry that can be judged without its key.
fn check_shape(key: &str, provider: &JwtProviderConfig) -> Result<(), ConfigError> {
    if provider.name.is_empty() || provider.name.contains(':') {
        return Err(invalid(
            format!("{key}.name"),
            "must be non-empty and without ':' (it qualifies the provider's users)",
        ));
    }
    if provider.namespace.as_deref().is_some_and(|ns| ns.contains(':')) {
        return Err(invalid(format!("{key}.namespace"), "must not contain ':'"));
    }
    let sources = [
        provider.secret.is_some(),
        provider.secret_env.is_some(),
        provider.key_file.is_some(),
        provider.jwks_file.is_some(),
        provider.jwks_url.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(invalid(key, "set exactly one of secret, secret_env, key_file, jwks_file, jwks_url"));
    }
    if provider.audiences.is_empty() {
        return Err(invalid(format!("{key}.audiences"), "name at least one accepted audience"));
    }
    if provider.algorithms.is_empty() {
        return Err(invalid(format!("{key}.algorithms"), "name the accepted algorithms, e.g. [\"RS256\"]"));
    }
    let symmetric = provider.secret.is_some() || provider.secret_env.is_some();
    for alg in &provider.algorithms {
        if !JWT_ALGORITHMS.contains(&alg.as_str()) {
            return Err(invalid(
                format!("{key}.algorithms"),
                format!("{alg:?} is not one of {}", JWT_ALGORITHMS.join(", ")),
            ));
        }
        // An HMAC algorithm beside a public key is how key confusion starts.
        if (key_family(alg) == "HMAC") != symmetric {
            return Err(invalid(
                format!("{key}.algorithms"),
                format!("{alg} does not fit the key: HS* need secret/secret_env, the others a public key"),
            ));
        }
    }
    if provider.leeway > MAX_LEEWAY {
        return Err(invalid(format!("{key}.leeway"), "at most 5m"));
    }
    if let Some(path) = &provider.key_file {
        // One PEM key has one family; an algorithm of another could never verify.
        let first = key_family(&provider.algorithms[0]);
        if let Some(other) = provider.algorithms.iter().find(|alg| key_family(alg) != first) {
            return Err(invalid(
                format!("{key}.algorithms"),
                format!(
                    "{other} and {} need different kinds of key; {} holds one",
                    provider.algorithms[0],
                    path.display()
                ),
            ));
        }
    }
    let jwks_uri = jwks_uri(key, provider)?;
    if jwks_uri.as_ref().and_then(http::Uri::scheme_str) == Some("http") && !provider.jwks_allow_http {
        return Err(invalid(
            format!("{key}.jwks_url"),
            "is plain http://, so keys could be swapped in transit: use https://, or set jwks_allow_http = true on a network you control",
        ));
    }
    if provider.jwks_ca_file.is_some() && jwks_uri.as_ref().and_then(http::Uri::scheme_str) != Some("https") {
        return Err(invalid(format!("{key}.jwks_ca_file"), "applies only to an https:// jwks_url"));
    }
    for (field, path) in
        [("key_file", &provider.key_file), ("jwks_file", &provider.jwks_file), ("jwks_ca_file", &provider.jwks_ca_file)]
    {
        if let Some(path) = path {
            check_file(&format!("{key}.{field}"), path)?;
        }
    }
    Ok(())
}

/// `jwks_url`, parsed: an http(s) URL with a host.
fn jwks_uri(key: &str, provider: &JwtProviderConfig) -> Result<Option<http::Uri>, ConfigError> {
    let Some(url) = &provider.jwks_url else { return Ok(None) };
    url.parse::<http::Uri>()
        .ok()
        .filter(|u| u.authority().is_some() && matches!(u.scheme_str(), Some("http" | "https")))
        .map(Some)
        .ok_or_else(|| invalid(format!("{key}.jwks_url"), format!("{url:?} must be an https:// or http:// URL")))
}

enum JwksLocation {
    File(PathBuf),
    // Boxed: the client is large and built once per provider.
    Url { uri: http::Uri, client: Box<JwksClient> },
}

type JwksClient = super::idp_http::IdpClient;

type KeyMap = HashMap<String, Arc<DecodingKey>>;

/// A JWK Set reloaded when a token names a key id it does not hold, at most
/// once per `min_refresh`, so rotated keys are picked up without letting
/// random key ids hammer the source.
struct JwksSource {
    location: JwksLocation,
    min_refresh: Duration,
    keys: arc_swap::ArcSwap<KeyMap>,
    last_load: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksSource {
    fn new(location: JwksLocation, min_refresh: Duration, keys: KeyMap) -> Self {
        let loaded = (!keys.is_empty()).then(Instant::now);
        Self {
            location,
            min_refresh,
            keys: arc_swap::ArcSwap::from_pointee(keys),
            last_load: tokio::sync::Mutex::new(loaded),
        }
    }

    fn parse(bytes: &[u8]) -> Result<KeyMap, String> {
        let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWK Set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key {:?}: {e}", jwk.common.key_id))?;
            keys.insert(jwk.common.key_id.clone().unwrap_or_default(), Arc::new(key));
        }
        Ok(keys)
    }

    fn lookup(keys: &KeyMap, kid: Option<&str>) -> Option<Arc<DecodingKey>> {
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            // A token without `kid` is only unambiguous against a one-key set.
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, String> {
        if let Some(key) = Self::lookup(&self.keys.load(), kid) {
            return Ok(key);
        }
        let mut last_load = self.last_load.lock().await;
        // Someone else may have reloaded while this call waited.
        if let Some(key) = Self::lookup(&self.keys.load(), kid) {
            return Ok(key);
        }
        let unknown = || format!("unknown signing key {:?}", kid.unwrap_or("(no kid)"));
        if last_load.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return Err(unknown());
        }
        *last_load = Some(Instant::now());
        let fresh = self.load().await.map_err(|e| {
            tracing::warn!(error = %e, "cannot reload JWK Set");
            format!("{}; the key set could not be reloaded", unknown())
        })?;
        self.keys.store(Arc::new(fresh));
        Self::lookup(&self.keys.load(), kid).ok_or_else(unknown)
    }

    async fn load(&self) -> Result<KeyMap, String> {
        let bytes = match &self.location {
            JwksLocation::File(path) => tokio::fs::read(path).await.map_err(|e| e.to_string())?.into(),
            JwksLocation::Url { uri, client } => super::idp_http::get(client, uri, None).await?,
        };
        Self::parse(&bytes)
    }
}

/// The e-mail at `claim`, unless the token says it is not verified (OpenID
/// Connect's `email_verified: false`).
fn verified_email(claims: &serde_json::Map<String, serde_json::Value>, claim: &str) -> Option<String> {
    if claims.get("email_verified") == Some(&serde_json::Value::Bool(false)) {
        return None;
    }
    claims.get(claim).and_then(|v| v.as_str()).filter(|e| !e.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_verified_email_is_taken() {
        let claims = |json: serde_json::Value| json.as_object().unwrap().clone();
        let email = |json| verified_email(&claims(json), "email");
        assert_eq!(email(serde_json::json!({"email": "a@x"})), Some("a@x".into()));
        assert_eq!(email(serde_json::json!({"email": "a@x", "email_verified": true})), Some("a@x".into()));
        assert_eq!(email(serde_json::json!({"email": "a@x", "email_verified": false})), None);
        assert_eq!(email(serde_json::json!({"email": ""})), None);
        assert_eq!(email(serde_json::json!({"mail": "a@x"})), None);
        assert_eq!(verified_email(&claims(serde_json::json!({"mail": "a@x"})), "mail"), Some("a@x".into()));
    }

    #[test]
    fn issuer_is_read_without_trusting_the_token() {
        let payload = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, br#"{"iss":"idp"}"#);
        assert_eq!(unverified_issuer(&format!("x.{payload}.y")).unwrap(), "idp");
        for bad in ["garbage", "a.!!.b", "a.e30.b"] {
            assert!(unverified_issuer(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn id_tokens_and_bearer_tokens_are_not_each_other() {
        let config: JwtProviderConfig = toml::from_str(
            r#"
name = "sso"
issuer = "https://idp.test/"
audiences = ["doltgate-api"]
algorithms = ["HS256"]
secret = "0123456789abcdef0123456789abcdef"
"#,
        )
        .unwrap();
        let provider = Provider::build("auth.jwt[0]", &config, &Secrets::read()).unwrap();
        let token = |aud: &str| {
            let claims =
                serde_json::json!({"iss": "https://idp.test/", "aud": aud, "exp": 4_000_000_000u64, "sub": "erin"});
            let key = jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        let header = Header::new(Algorithm::HS256);
        let id_token = token("web-client");
        let bearer = token("doltgate-api");
        assert!(provider.verify_id_token(&id_token, "web-client").await.is_ok());
        let as_bearer = provider.verify(&id_token, &header).await.unwrap_err().to_string();
        assert!(as_bearer.contains("audience"), "an ID token is no bearer token: {as_bearer}");
        let as_id = provider.verify_id_token(&bearer, "web-client").await.unwrap_err().to_string();
        assert!(as_id.contains("audience"), "a bearer token is no ID token: {as_id}");
    }
}
