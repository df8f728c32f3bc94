//! Who is calling: reads the one credential a gRPC request carries and, with
//! `[auth]` configured, proves it, yielding a [`Principal`].
//!
//! Kinds of proof, tried by what the credential is:
//! - `Basic user:password`: a static user's Argon2 hash, else a login to the
//!   routed cluster's SQL port as that user ([`password`]);
//! - `Bearer` JWT from Dolt's own client keys (`dolt creds`), matched by key
//!   id to a registered public key ([`dolt_keys`]);
//! - `Bearer` JWT from a configured issuer ([`jwt`]).
//!
//! Verdicts are remembered briefly ([`cache`]) so a clone's thousands of calls
//! cost one password check. Secrets are never logged.
//!
//! Without `[auth]`, the credential is only read (exactly one is required:
//! Dolt treats none, or several, as `root` with an empty password) and passed
//! on for Dolt to check.

pub mod cache;
pub mod dolt_keys;
pub mod idp_http;
pub mod jwt;
pub mod password;
pub mod throttle;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::cluster::Cluster;
use crate::config::{invalid, AuthConfig, ConfigError, Secrets};
use crate::error::GatewayError;

/// Dolt signs its client tokens for 30 seconds (go/libraries/doltcore/creds).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(30);

/// The bounds of `[auth]`'s own numbers.
fn check_limits(config: &AuthConfig) -> Result<(), ConfigError> {
    if config.failed_logins.per_address == 0 {
        return Err(invalid("auth.failed_logins.per_address", "must be at least 1"));
    }
    if config.max_token_lifetime < MIN_TOKEN_LIFETIME {
        return Err(invalid(
            "auth.max_token_lifetime",
            "must be at least 30s: Dolt's own client tokens live that long",
        ));
    }
    if config.cache.max_entries == 0 {
        return Err(invalid("auth.cache.max_entries", "must be greater than zero"));
    }
    Ok(())
}

/// `[[auth.users]]` with a password hash, by name; names unique, hashes PHC strings.
fn static_users(config: &AuthConfig) -> Result<HashMap<String, password::StaticUser>, ConfigError> {
    let mut users = HashMap::new();
    let mut names = std::collections::HashSet::new();
    for (i, user) in config.users.iter().enumerate() {
        let key = format!("auth.users[{i}]");
        if user.name.is_empty() || !names.insert(user.name.as_str()) {
            return Err(invalid(format!("{key}.name"), format!("{:?} is empty or used twice", user.name)));
        }
        if user.name.contains(':') {
            return Err(invalid(
                format!("{key}.name"),
                "':' separates an identity provider's namespace from its names (corp-sso:erin); a user of doltgate's own has none",
            ));
        }
        if let Some(hash) = &user.password_hash {
            argon2::password_hash::PasswordHash::new(hash).map_err(|e| {
                invalid(
                    format!("{key}.password_hash"),
                    format!("not a PHC hash ({e}); make one with `doltgate hash-password`"),
                )
            })?;
            users.insert(user.name.clone(), password::StaticUser::new(hash, &user.groups));
        }
    }
    Ok(users)
}

/// `auth.token_header`: a header of doltgate's own, never one with a meaning of its own.
fn token_header(config: &AuthConfig) -> Result<Option<HeaderName>, ConfigError> {
    let Some(header) = &config.token_header else { return Ok(None) };
    let name = HeaderName::from_bytes(header.as_bytes())
        .map_err(|_| invalid("auth.token_header", format!("{header:?} is not a header name")))?;
    if matches!(name.as_str(), "authorization" | "host" | "cookie") || name.as_str().starts_with("grpc-") {
        return Err(invalid("auth.token_header", format!("{header:?} is reserved; pick e.g. x-doltgate-token")));
    }
    Ok(Some(name))
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
    /// When the proof stops being valid (a token's `exp`), if it does.
    pub expires: Option<SystemTime>,
    /// The e-mail the identity provider vouches for (a JWT's e-mail claim,
    /// unless `email_verified` is false); `None` for other sources.
    pub email: Option<String>,
}

/// The credential a request carries, read but not yet proven.
#[derive(Debug, Clone)]
pub struct ClientCredential {
    raw: HeaderValue,
}

/// What a credential claims.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Basic { user: String, password: String },
    Bearer(&'a str),
}

impl ClientCredential {
    /// The credential as the client sent it (for `passthrough`).
    pub fn authorization(&self) -> &HeaderValue {
        &self.raw
    }

    pub fn presented(&self) -> Result<Presented<'_>, GatewayError> {
        let value = self.raw.to_str().map_err(|_| unauthenticated("credential is not printable ASCII"))?;
        if let Some(token) = strip_scheme(value, "Bearer") {
            return Ok(Presented::Bearer(token.trim()));
        }
        let encoded = strip_scheme(value, "Basic")
            .ok_or_else(|| unauthenticated("credential is neither Basic nor Bearer"))?
            .trim();
        // Dolt's client uses the standard alphabet; some tools send the URL-safe one.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(encoded))
            .map_err(|_| unauthenticated("Basic credential is not base64"))?;
        let text = String::from_utf8(decoded).map_err(|_| unauthenticated("Basic credential is not UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| unauthenticated("Basic credential has no ':' between user and password"))?;
        if user.is_empty() {
            return Err(unauthenticated("Basic credential has an empty user name"));
        }
        // MySQL's handshake ends a user name at a NUL: `plain\0_admin` would log
        // in as `plain` yet be named `plain\0_admin` in grants and rules.
        if user.chars().any(char::is_control) {
            return Err(unauthenticated(format!("user name {} contains a control character", shown(user))));
        }
        Ok(Presented::Basic { user: user.to_owned(), password: password.to_owned() })
    }

    /// Who the credential claims to be, for logs: the Basic user name, or
    /// the scheme alone for tokens. Never the secret.
    pub fn user_for_logs(&self) -> String {
        match self.presented() {
            Ok(Presented::Basic { user, .. }) => shown(&user),
            Ok(Presented::Bearer(_)) => "bearer".into(),
            Err(_) => "malformed".into(),
        }
    }
}

/// The `aud` values a `dolt creds` token may carry: the configured ones, else
/// the host of `listener.public_url`. Never the request's own authority, which
/// the sender chooses: a token a user's CLI signed for another remote must not
/// be replayable here.
pub fn dolt_key_audiences(config: &AuthConfig, public_url: Option<&str>) -> Vec<String> {
    if !config.dolt_key_audiences.is_empty() {
        return config.dolt_key_audiences.clone();
    }
    let host = public_url.and_then(|url| url.parse::<http::Uri>().ok()).and_then(|uri| uri.host().map(str::to_owned));
    host.into_iter().collect()
}

impl Authenticator {
    /// A token valid further ahead than `auth.max_token_lifetime` is refused.
    fn not_too_long_lived(&self, principal: Principal) -> Result<Principal, GatewayError> {
        let latest = std::time::SystemTime::now() + self.max_token_lifetime;
        match principal.expires {
            Some(expires) if expires > latest => Err(unauthenticated(format!(
                "token is valid for longer than auth.max_token_lifetime ({}s)",
                self.max_token_lifetime.as_secs()
            ))),
            _ => Ok(principal),
        }
    }
}

/// Whatever proved it, a principal's name is matched against grants, rules
/// and mirrored rows: no control characters in it, from any credential kind.
pub(crate) fn printable_name(principal: Principal) -> Result<Principal, GatewayError> {
    if principal.name.chars().any(char::is_control) {
        return Err(unauthenticated(format!("user name {} contains a control character", shown(&principal.name))));
    }
    Ok(principal)
}

/// A client-chosen name as it may appear in logs and messages: control
/// characters escaped (no forged log lines) and at most 64 characters (no
/// oversized status headers).
pub fn shown(name: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = name
        .chars()
        .take(MAX)
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() { c.escape_default().collect() } else { vec![c] };
            escaped
        })
        .collect();
    if name.chars().count() > MAX {
        out.push('…');
    }
    out
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (head, rest) = value.split_at_checked(scheme.len())?;
    (head.eq_ignore_ascii_case(scheme) && rest.starts_with(' ')).then_some(rest)
}

pub(crate) fn unauthenticated(reason: impl Into<String>) -> GatewayError {
    GatewayError::Unauthenticated(reason.into())
}

/// Reads the one credential of a request: from `token_header` when the
/// request has it, else from `authorization`.
pub fn read_credential(
    headers: &HeaderMap,
    token_header: Option<&HeaderName>,
) -> Result<ClientCredential, GatewayError> {
    let name = match token_header {
        Some(name) if headers.contains_key(name) => name.clone(),
        _ => http::header::AUTHORIZATION,
    };
    let mut values = headers.get_all(&name).iter();
    let Some(first) = values.next() else {
        return Err(unauthenticated(
            "no credentials: this remote requires a user; run dolt with --user NAME and set DOLT_REMOTE_PASSWORD",
        ));
    };
    if values.next().is_some() {
        return Err(unauthenticated(format!("more than one {name} header; send exactly one")));
    }
    if first.is_empty() {
        return Err(unauthenticated(format!("empty {name} header")));
    }
    Ok(ClientCredential { raw: first.clone() })
}

/// Where a credential is being presented: the cluster whose SQL users check
/// passwords, and the host the client dialled (the `aud` of Dolt key tokens).
pub struct Audience<'a> {
    pub cluster: &'a Cluster,
    pub host: &'a str,
    /// The client's address: repeated failures from it are throttled.
    pub from: std::net::IpAddr,
}

/// Proves credentials; built once per configuration.
pub struct Authenticator {
    static_users: HashMap<String, password::StaticUser>,
    dolt_keys: dolt_keys::DoltKeys,
    providers: Vec<jwt::Provider>,
    sql_passwords: bool,
    pub(crate) token_header: Option<HeaderName>,
    max_token_lifetime: std::time::Duration,
    cache: cache::VerdictCache,
    throttle: std::sync::Arc<throttle::Throttle>,
    /// Keys users registered themselves (`[login]`), if any.
    registered_keys: Option<std::sync::Arc<dyn dolt_keys::KeyDirectory>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("providers", &self.providers.len()).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// The authenticator `[auth]` describes. `public_url` is
    /// `listener.public_url`, whose host `dolt creds` tokens are accepted for
    /// when `dolt_key_audiences` is not set.
    pub fn build(
        config: &AuthConfig,
        public_url: Option<&str>,
        secrets: &Secrets,
    ) -> Result<Authenticator, ConfigError> {
        check_limits(config)?;
        let static_users = static_users(config)?;
        let audiences = dolt_key_audiences(config, public_url);
        if audiences.is_empty() && config.users.iter().any(|user| !user.dolt_keys.is_empty()) {
            return Err(invalid(
                "auth.dolt_key_audiences",
                "users have dolt_keys: name the hosts clients use in their remote URLs (or set listener.public_url), so a token a client signed for another server is not accepted here",
            ));
        }
        let mut issuers = std::collections::HashSet::new();
        let mut providers = Vec::with_capacity(config.jwt.len());
        for (i, provider) in config.jwt.iter().enumerate() {
            let key = format!("auth.jwt[{i}]");
            providers.push(jwt::Provider::build(&key, provider, secrets)?);
            if !issuers.insert(provider.issuer.as_str()) {
                return Err(invalid(format!("{key}.issuer"), "two providers share this issuer"));
            }
        }
        Ok(Authenticator {
            static_users,
            dolt_keys: dolt_keys::DoltKeys::build(&config.users, &audiences)?,
            providers,
            sql_passwords: config.sql_passwords,
            token_header: token_header(config)?,
            max_token_lifetime: config.max_token_lifetime,
            throttle: throttle::shared(&config.failed_logins),
            cache: cache::VerdictCache::new(&config.cache),
            registered_keys: None,
        })
    }

    /// The `[[auth.jwt]]` provider called `name`.
    pub fn provider_named(&self, name: &str) -> Option<&jwt::Provider> {
        self.providers.iter().find(|provider| provider.name() == name)
    }

    /// Also accepts the keys `directory` holds (registered through `[login]`).
    pub fn with_registered_keys(mut self, directory: std::sync::Arc<dyn dolt_keys::KeyDirectory>) -> Authenticator {
        self.registered_keys = Some(directory);
        self
    }

    /// Proves `credential`, from the cache when a recent verdict exists.
    pub async fn authenticate(
        &self,
        credential: &ClientCredential,
        at: &Audience<'_>,
    ) -> Result<Principal, GatewayError> {
        let key = cache::key(&[at.cluster.name.as_bytes(), at.host.as_bytes(), credential.raw.as_bytes()]);
        if let Some(verdict) = self.cache.get(&key) {
            return verdict.map_err(GatewayError::Unauthenticated);
        }
        let presented = credential.presented()?;
        let (kind, user) = match &presented {
            Presented::Basic { user, .. } => ("basic", Some(user.clone())),
            Presented::Bearer(_) => ("bearer", None),
        };
        self.throttle.admit(at.from, user.as_deref()).await?;
        let verdict = self.prove(presented, at).await.and_then(printable_name).and_then(|p| self.not_too_long_lived(p));
        if let Err(GatewayError::Unauthenticated(_)) = &verdict {
            self.throttle.record_failure(at.from, user.as_deref());
        }
        let outcome = match &verdict {
            Ok(_) => "accepted",
            Err(GatewayError::Unauthenticated(_)) => "refused",
            Err(_) => "error",
        };
        crate::metrics::metrics().auth_attempts.with_label_values(&[kind, outcome]).inc();
        match &verdict {
            Ok(principal) => self.cache.remember_success(key, principal),
            Err(GatewayError::Unauthenticated(reason)) => self.cache.remember_failure(key, reason),
            // An unreachable SQL port says nothing about the password.
            Err(_) => {}
        }
        verdict
    }

    async fn prove(&self, presented: Presented<'_>, at: &Audience<'_>) -> Result<Principal, GatewayError> {
        match presented {
            Presented::Basic { user, password } => {
                if let Some(known) = self.static_users.get(&user) {
                    let known = known.clone();
                    return self.throttle.argon2(move || known.verify(&user, &password)).await;
                }
                if !self.sql_passwords {
                    return Err(unauthenticated(format!("unknown user {:?}", shown(&user))));
                }
                self.throttle.sql_login(password::check_sql_login(at.cluster, &user, &password)).await
            }
            Presented::Bearer(token) => self.verify_bearer(token).await,
        }
    }

    /// Proves a bearer JWT: Dolt client keys by their issuer, other tokens by
    /// the provider their issuer names.
    pub async fn verify_bearer(&self, token: &str) -> Result<Principal, GatewayError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthenticated(format!("bearer token is not a JWT: {e}")))?;
        jwt::refuse_critical_extensions(token)?;
        let issuer = jwt::unverified_issuer(token)?;
        if issuer == dolt_keys::DOLT_CLIENT_ISSUER {
            return self.dolt_keys.verify(token, &header, self.registered_keys.as_deref()).await;
        }
        let provider = self
            .providers
            .iter()
            .find(|p| p.issuer() == issuer)
            .ok_or_else(|| unauthenticated(format!("no provider trusts tokens from issuer {issuer:?}")))?;
        provider.verify(token, &header).await
    }
}

/// `Basic base64(user:password)`, as Dolt's remotesapi expects.
pub fn basic_authorization(user: &str, password: &str) -> Result<HeaderValue, String> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| e.to_string())
}

/// How long a verdict may be trusted: the configured time, cut short by the
/// proof's own expiry.
pub(crate) fn trust_for(ttl: Duration, expires: Option<SystemTime>) -> Duration {
    match expires.and_then(|at| at.duration_since(SystemTime::now()).ok()) {
        Some(left) => left.min(ttl),
        None if expires.is_some() => Duration::ZERO,
        None => ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(value: &'static str) -> ClientCredential {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static(value));
        read_credential(&headers, None).unwrap()
    }

    #[test]
    fn exactly_one_credential_is_required() {
        let mut headers = HeaderMap::new();
        let err = read_credential(&headers, None).unwrap_err();
        assert!(err.to_string().contains("--user"), "{err}");
        headers.append(http::header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(read_credential(&headers, None).unwrap().user_for_logs(), "a", "the user, never the password");
        headers.append(http::header::AUTHORIZATION, HeaderValue::from_static("Basic Yzpk"));
        assert!(matches!(read_credential(&headers, None), Err(GatewayError::Unauthenticated(_))));
    }

    #[test]
    fn token_header_wins_when_present() {
        let name = HeaderName::from_static("x-doltgate-token");
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(read_credential(&headers, Some(&name)).unwrap().authorization(), "Basic YTpi");
        headers.insert(name.clone(), HeaderValue::from_static("Bearer t"));
        assert_eq!(read_credential(&headers, Some(&name)).unwrap().authorization(), "Bearer t");
    }

    #[test]
    fn basic_credentials_parse_or_say_why_not() {
        let basic = credential("Basic YWxpY2U6czNjOnJldA==");
        assert_eq!(basic.presented().unwrap(), Presented::Basic { user: "alice".into(), password: "s3c:ret".into() });
        assert_eq!(credential("bearer abc").presented().unwrap(), Presented::Bearer("abc"));
        for (value, why) in [
            ("Basic !!!", "not base64"),
            ("Basic YWxpY2U=", "no ':'"),
            ("Basic OnB3", "empty user"),
            ("Basic cGxhaW4AX2FkbWluOnB3", "control character"),
            ("Digest x", "neither Basic nor Bearer"),
        ] {
            let err = credential(value).presented().unwrap_err().to_string();
            assert!(err.contains(why), "{value}: {err}");
        }
    }

    #[test]
    fn names_are_made_safe_for_logs_and_headers() {
        assert_eq!(shown("evil\nINFO forged"), "evil\\nINFO forged");
        assert_eq!(shown(&"x".repeat(10_000)).chars().count(), 65);
        assert_eq!(shown("bob"), "bob");
    }

    #[test]
    fn verdicts_end_with_their_proof() {
        let ttl = Duration::from_secs(60);
        assert_eq!(trust_for(ttl, None), ttl);
        let soon = SystemTime::now() + Duration::from_secs(10);
        assert!(trust_for(ttl, Some(soon)) <= Duration::from_secs(10));
        assert_eq!(trust_for(ttl, Some(SystemTime::UNIX_EPOCH)), Duration::ZERO);
    }
}
