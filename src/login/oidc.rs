//! Signing in on the login page with an OpenID Connect provider
//! (`[login.oidc]`): the authorization-code flow with PKCE.
//!
//! 1. The page posts the key to `<path>/oidc/start` (with its request token).
//!    doltgate answers with the provider's authorization URL and sets a cookie
//!    holding the flow: state, nonce, PKCE verifier and the key. The cookie is
//!    sealed with a key derived from the client secret, so whichever replica
//!    the provider sends the browser back to can finish the flow.
//! 2. The provider sends the browser to `<path>/oidc/callback` with a code.
//!    doltgate checks the state against the cookie, redeems the code with the
//!    verifier and the client secret, and judges the ID token with the
//!    `[[auth.jwt]]` provider the config names (audience: the client id; nonce:
//!    the cookie's). The user and e-mail claims come from the ID token, or from
//!    the userinfo endpoint for the same subject when the token leaves them out.
//!    Then the key is registered for that user.
//!
//! The cookie binds the flow to the browser that started it: a code or state
//! replayed in another browser finds no cookie, or one that does not match.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::authn::idp_http::{self, IdpClient};
use crate::authn::jwt::{Claims, Provider};
use crate::authn::{unauthenticated, Principal};
use crate::config::{invalid, AuthConfig, ConfigError, OidcLoginConfig, SecretSource, Secrets};
use crate::error::GatewayError;

pub const START_PATH: &str = "/oidc/start";
pub const CALLBACK_PATH: &str = "/oidc/callback";
pub const FLOW_COOKIE: &str = "doltgate_login_oidc";
/// How long a person has to sign in at the provider.
const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// How long a discovery document is trusted before it is fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

pub struct OidcLogin {
    provider: String,
    /// The issuer the `[[auth.jwt]]` entry expects, which discovery must name.
    issuer: String,
    discovery_url: Uri,
    client_id: String,
    client_secret: Vec<u8>,
    redirect_url: String,
    scopes: String,
    label: String,
    seal: ring::hmac::Key,
    secure_cookie: bool,
    allow_http: bool,
    client: IdpClient,
    discovered: tokio::sync::Mutex<Option<(Instant, Arc<Discovery>)>>,
}

impl std::fmt::Debug for OidcLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcLogin").field("provider", &self.provider).finish_non_exhaustive()
    }
}

/// The parts of a provider's discovery document the flow uses.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
}

/// What the flow cookie carries between start and callback.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    public_key: String,
    /// Unix seconds after which the flow is refused.
    expires: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    id_token: Option<String>,
}

/// The start of a flow: where to send the browser, and the cookie to set.
pub struct Started {
    pub authorize_url: String,
    pub cookie: String,
}

/// A person the provider vouched for, and the key they asked to register.
pub struct SignedIn {
    pub principal: Principal,
    pub public_key: String,
}

impl OidcLogin {
    /// `[login.oidc]`, checked against `[auth]` (whose `jwt` entry judges ID
    /// tokens) and the page's path `login_path`.
    pub fn build(
        config: &OidcLoginConfig,
        login_path: &str,
        auth: Option<&AuthConfig>,
        secrets: &Secrets,
    ) -> Result<OidcLogin, ConfigError> {
        let judge = auth.and_then(|auth| auth.jwt.iter().find(|jwt| jwt.name == config.provider));
        let Some(judge) = judge else {
            return Err(invalid(
                "login.oidc.provider",
                format!("no [[auth.jwt]] entry is named {:?}: it judges the provider's ID tokens", config.provider),
            ));
        };
        let discovery_url = provider_url("login.oidc.discovery_url", &config.discovery_url, config.allow_http)?;
        let redirect: Uri = config
            .redirect_url
            .parse()
            .ok()
            .filter(|uri: &Uri| uri.host().is_some() && matches!(uri.scheme_str(), Some("http" | "https")))
            .ok_or_else(|| invalid("login.oidc.redirect_url", "must be an absolute http(s) URL"))?;
        let callback = format!("{login_path}{CALLBACK_PATH}");
        if redirect.path() != callback || redirect.query().is_some() {
            return Err(invalid(
                "login.oidc.redirect_url",
                format!("must lead to this listener's {callback}, where the flow ends"),
            ));
        }
        if config.client_id.is_empty() {
            return Err(invalid("login.oidc.client_id", "must not be empty"));
        }
        if !config.scopes.iter().any(|scope| scope == "openid") {
            return Err(invalid("login.oidc.scopes", "must include \"openid\""));
        }
        let client_secret = secrets
            .one_of(&[
                ("login.oidc.client_secret".into(), config.client_secret.as_deref().map(SecretSource::Inline)),
                ("login.oidc.client_secret_env".into(), config.client_secret_env.as_deref().map(SecretSource::Env)),
                ("login.oidc.client_secret_file".into(), config.client_secret_file.as_deref().map(SecretSource::File)),
            ])?
            .ok_or_else(|| invalid("login.oidc", "set one of client_secret, client_secret_env, client_secret_file"))?;
        let client = idp_http::client(config.ca_file.as_deref()).map_err(|e| invalid("login.oidc.ca_file", e))?;
        Ok(OidcLogin {
            provider: config.provider.clone(),
            issuer: judge.issuer.clone(),
            discovery_url,
            client_id: config.client_id.clone(),
            seal: seal_key(&client_secret),
            client_secret,
            redirect_url: config.redirect_url.clone(),
            scopes: config.scopes.join(" "),
            label: config.label.clone().unwrap_or_else(|| format!("Sign in with {}", config.provider)),
            secure_cookie: redirect.scheme_str() == Some("https"),
            allow_http: config.allow_http,
            client,
            discovered: tokio::sync::Mutex::new(None),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The `[[auth.jwt]]` entry that judges this provider's ID tokens.
    pub fn provider_name(&self) -> &str {
        &self.provider
    }

    /// Begins a flow for `public_key`; `cookie_path` is the page's path.
    pub async fn start(&self, public_key: &str, cookie_path: &str) -> Result<Started, GatewayError> {
        let discovery = self.discovery().await?;
        let verifier = random_text(32);
        let flow = Flow {
            state: random_text(18),
            nonce: random_text(18),
            public_key: public_key.trim().to_owned(),
            expires: unix_now() + FLOW_LIFETIME.as_secs(),
            verifier,
        };
        let challenge = base64_url(ring::digest::digest(&ring::digest::SHA256, flow.verifier.as_bytes()));
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("scope", &self.scopes)
            .append_pair("state", &flow.state)
            .append_pair("nonce", &flow.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let endpoint = &discovery.authorization_endpoint;
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        Ok(Started {
            authorize_url: format!("{endpoint}{separator}{query}"),
            cookie: format!(
                "{FLOW_COOKIE}={}; Path={cookie_path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
                self.seal_flow(&flow),
                FLOW_LIFETIME.as_secs()
            ),
        })
    }

    /// Finishes the flow the provider sent the browser back with: `query` is
    /// the callback's query string, `cookie` the flow cookie's value.
    pub async fn finish(
        &self,
        provider: &Provider,
        query: &str,
        cookie: Option<&str>,
    ) -> Result<SignedIn, GatewayError> {
        let params: std::collections::HashMap<String, String> =
            form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        if let Some(error) = params.get("error") {
            let description = params.get("error_description").map(|d| format!(" ({d})")).unwrap_or_default();
            return Err(GatewayError::LoginForbidden(format!(
                "the provider refused the sign-in: {error}{description}"
            )));
        }
        let restart = "start again from the link dolt login printed";
        let flow = cookie.and_then(|cookie| self.unseal_flow(cookie)).ok_or_else(|| {
            GatewayError::LoginForbidden(format!("this browser started no sign-in, or it expired: {restart}"))
        })?;
        let state = params.get("state").map(String::as_str).unwrap_or_default();
        if !super::same_bytes(state.as_bytes(), flow.state.as_bytes()) {
            return Err(GatewayError::LoginForbidden(format!(
                "the sign-in's state does not match this browser's: {restart}"
            )));
        }
        let code = params
            .get("code")
            .filter(|code| !code.is_empty())
            .ok_or_else(|| GatewayError::BadLoginRequest("the provider sent no code".into()))?;
        let discovery = self.discovery().await?;
        let tokens = self.redeem(&discovery, code, &flow.verifier).await?;
        let id_token =
            tokens.id_token.ok_or_else(|| GatewayError::IdentityProvider("the token answer has no id_token".into()))?;
        let mut claims = provider.verify_id_token(&id_token, &self.client_id).await?;
        let nonce = claims.other.get("nonce").and_then(|n| n.as_str()).unwrap_or_default();
        if !super::same_bytes(nonce.as_bytes(), flow.nonce.as_bytes()) {
            return Err(unauthenticated("the ID token's nonce is not this sign-in's"));
        }
        if provider.lacks_user_claims(&claims) {
            if let (Some(endpoint), Some(access_token)) = (&discovery.userinfo_endpoint, &tokens.access_token) {
                self.add_userinfo(&mut claims, endpoint, access_token).await?;
            }
        }
        let principal = crate::authn::printable_name(provider.principal(&claims)?)?;
        Ok(SignedIn { principal, public_key: flow.public_key })
    }

    /// The discovery document, fetched again after [`DISCOVERY_TTL`] or a failure.
    async fn discovery(&self) -> Result<Arc<Discovery>, GatewayError> {
        let mut cached = self.discovered.lock().await;
        if let Some((at, discovery)) = cached.as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(discovery.clone());
            }
        }
        let bytes =
            idp_http::get(&self.client, &self.discovery_url, None).await.map_err(GatewayError::IdentityProvider)?;
        let discovery: Discovery = serde_json::from_slice(&bytes).map_err(|e| {
            GatewayError::IdentityProvider(format!("{}: not a discovery document: {e}", self.discovery_url))
        })?;
        // OpenID Connect Discovery 4.3: the document names the issuer its tokens carry.
        if discovery.issuer != self.issuer {
            return Err(GatewayError::IdentityProvider(format!(
                "{} names issuer {:?}, but [[auth.jwt]] {:?} expects {:?}",
                self.discovery_url, discovery.issuer, self.provider, self.issuer
            )));
        }
        for (field, url) in [
            ("authorization_endpoint", Some(&discovery.authorization_endpoint)),
            ("token_endpoint", Some(&discovery.token_endpoint)),
            ("userinfo_endpoint", discovery.userinfo_endpoint.as_ref()),
        ] {
            if let Some(url) = url {
                provider_url(field, url, self.allow_http)
                    .map_err(|e| GatewayError::IdentityProvider(format!("discovery document: {e}")))?;
            }
        }
        tracing::info!(provider = %self.provider, issuer = %discovery.issuer, "OpenID Connect discovery document fetched");
        let discovery = Arc::new(discovery);
        *cached = Some((Instant::now(), discovery.clone()));
        Ok(discovery)
    }

    /// Redeems `code` at the token endpoint (client secret by HTTP Basic, RFC 6749 2.3.1).
    async fn redeem(&self, discovery: &Discovery, code: &str, verifier: &str) -> Result<TokenAnswer, GatewayError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("code_verifier", verifier)
            .finish();
        let encode = |text: &[u8]| form_urlencoded::byte_serialize(text).collect::<String>();
        let basic = format!("{}:{}", encode(self.client_id.as_bytes()), encode(&self.client_secret));
        let request = Request::post(discovery.token_endpoint.as_str())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, format!("Basic {}", base64_std(basic.as_bytes())))
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| GatewayError::Internal(format!("token request: {e}")))?;
        let bytes = idp_http::send(&self.client, request).await.map_err(GatewayError::IdentityProvider)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| GatewayError::IdentityProvider(format!("the token answer is not the expected JSON: {e}")))
    }

    /// Adds the claims the ID token lacks from the userinfo endpoint, whose
    /// `sub` must be the token's (OpenID Connect Core 5.3.2).
    async fn add_userinfo(&self, claims: &mut Claims, endpoint: &str, access_token: &str) -> Result<(), GatewayError> {
        let uri: Uri =
            endpoint.parse().map_err(|e| GatewayError::IdentityProvider(format!("userinfo_endpoint: {e}")))?;
        let bytes =
            idp_http::get(&self.client, &uri, Some(access_token)).await.map_err(GatewayError::IdentityProvider)?;
        let info: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
            .map_err(|e| GatewayError::IdentityProvider(format!("userinfo is not a JSON object: {e}")))?;
        if info.get("sub").is_none() || info.get("sub") != claims.other.get("sub") {
            return Err(unauthenticated("userinfo describes another subject than the ID token"));
        }
        for (name, value) in info {
            claims.other.entry(name).or_insert(value);
        }
        Ok(())
    }

    fn seal_flow(&self, flow: &Flow) -> String {
        let body = base64_url(serde_json::to_vec(flow).expect("a flow serializes"));
        let tag = ring::hmac::sign(&self.seal, body.as_bytes());
        format!("{body}.{}", base64_url(tag.as_ref()))
    }

    /// The flow in `cookie`, if this configuration sealed it and it has not expired.
    fn unseal_flow(&self, cookie: &str) -> Option<Flow> {
        let (body, tag) = cookie.split_once('.')?;
        let tag = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, tag).ok()?;
        ring::hmac::verify(&self.seal, body.as_bytes(), &tag).ok()?;
        let json = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body).ok()?;
        let flow: Flow = serde_json::from_slice(&json).ok()?;
        (flow.expires > unix_now()).then_some(flow)
    }
}

/// An http(s) URL with a host; plain http only when `allow_http`.
fn provider_url(key: &str, url: &str, allow_http: bool) -> Result<Uri, ConfigError> {
    let uri: Uri = url
        .parse()
        .ok()
        .filter(|uri: &Uri| uri.host().is_some() && matches!(uri.scheme_str(), Some("http" | "https")))
        .ok_or_else(|| invalid(key, format!("{url:?} must be an https:// URL")))?;
    if uri.scheme_str() == Some("http") && !allow_http {
        return Err(invalid(
            key,
            format!("{url:?} is plain http://, so codes and tokens could be read in transit: use https://, or set login.oidc.allow_http = true on a network you control"),
        ));
    }
    Ok(uri)
}

/// The flow cookie's sealing key: every replica configured with the same
/// client secret derives the same one.
fn seal_key(client_secret: &[u8]) -> ring::hmac::Key {
    let derived = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"doltgate login.oidc flow cookie"),
        client_secret,
    );
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
}

fn random_text(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buffer).expect("randomness");
    base64_url(&buffer)
}

fn base64_url(bytes: impl AsRef<[u8]>) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn base64_std(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(secret: &[u8]) -> OidcLogin {
        OidcLogin {
            provider: "sso".into(),
            issuer: "https://idp.test/".into(),
            discovery_url: "https://idp.test/.well-known/openid-configuration".parse().unwrap(),
            client_id: "doltgate".into(),
            client_secret: secret.to_vec(),
            redirect_url: "https://dolt.test/login/oidc/callback".into(),
            scopes: "openid".into(),
            label: "Sign in".into(),
            seal: seal_key(secret),
            secure_cookie: true,
            allow_http: false,
            client: idp_http::client(None).unwrap(),
            discovered: tokio::sync::Mutex::new(None),
        }
    }

    fn flow(expires: u64) -> Flow {
        Flow { state: "s".into(), nonce: "n".into(), verifier: "v".into(), public_key: "k".into(), expires }
    }

    #[test]
    fn a_flow_cookie_opens_only_unchanged_unexpired_and_under_the_same_secret() {
        let one = login(b"secret");
        let expires = unix_now() + 60;
        let sealed = one.seal_flow(&flow(expires));
        assert_eq!(one.unseal_flow(&sealed), Some(flow(expires)));
        assert!(login(b"secret").unseal_flow(&sealed).is_some(), "another replica with the same secret opens it");
        assert!(login(b"other").unseal_flow(&sealed).is_none(), "another secret does not");
        let (body, tag) = sealed.split_once('.').unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, body).unwrap(),
        )
        .unwrap();
        json["public_key"] = "attackers-key".into();
        let forged = format!("{}.{tag}", base64_url(serde_json::to_vec(&json).unwrap()));
        assert!(one.unseal_flow(&forged).is_none(), "a changed flow fails its seal");
        assert!(one.unseal_flow(&one.seal_flow(&flow(unix_now() - 1))).is_none(), "an expired flow is refused");
        assert!(one.unseal_flow("garbage").is_none() && one.unseal_flow("a.b").is_none());
    }

    #[test]
    fn provider_urls_must_be_https_unless_allowed() {
        assert!(provider_url("k", "https://idp.test/x", false).is_ok());
        let refused = provider_url("k", "http://idp.test/x", false).unwrap_err().to_string();
        assert!(refused.contains("allow_http"), "{refused}");
        assert!(provider_url("k", "http://idp.test/x", true).is_ok());
        assert!(provider_url("k", "ftp://idp.test/x", true).is_err());
        assert!(provider_url("k", "/relative", true).is_err());
    }

    #[tokio::test]
    async fn a_callback_without_this_browsers_flow_is_refused_before_the_provider_is_asked() {
        let one = login(b"secret");
        let provider = test_provider();
        let sealed = one.seal_flow(&flow(unix_now() + 60));
        let refused = |result: Result<SignedIn, GatewayError>| match result {
            Err(err) => err.to_string(),
            Ok(_) => panic!("accepted"),
        };
        let no_cookie = refused(one.finish(&provider, "code=c&state=s", None).await);
        assert!(no_cookie.contains("started no sign-in"), "{no_cookie}");
        let wrong_state = refused(one.finish(&provider, "code=c&state=other", Some(&sealed)).await);
        assert!(wrong_state.contains("state does not match"), "{wrong_state}");
        let provider_error = refused(one.finish(&provider, "error=access_denied&state=s", Some(&sealed)).await);
        assert!(provider_error.contains("access_denied"), "{provider_error}");
        let no_code = refused(one.finish(&provider, "state=s", Some(&sealed)).await);
        assert!(no_code.contains("no code"), "{no_code}");
    }

    fn test_provider() -> Provider {
        let config: crate::config::auth::JwtProviderConfig = toml::from_str(
            r#"
name = "sso"
issuer = "https://idp.test/"
audiences = ["api"]
algorithms = ["HS256"]
secret = "0123456789abcdef0123456789abcdef"
user_claim = "preferred_username"
"#,
        )
        .unwrap();
        Provider::build("auth.jwt[0]", &config, &Secrets::read()).unwrap()
    }

    /// What the fake provider answers, and what it saw.
    #[derive(Default)]
    struct Script {
        /// The `nonce` its ID token carries; `None`: the one the authorization request sent.
        nonce: Option<String>,
        audience: Option<String>,
        userinfo_subject: Option<String>,
        /// The PKCE challenge the authorization request carried.
        challenge: String,
        sent_nonce: String,
        redeemed_with_verifier: bool,
    }

    /// A provider at 127.0.0.1 speaking just enough OpenID Connect: discovery,
    /// a token endpoint that checks the client and the PKCE verifier, userinfo.
    async fn fake_provider(script: Arc<std::sync::Mutex<Script>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let base = origin.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (script, base) = (script.clone(), base.clone());
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (script, base) = (script.clone(), base.clone());
                    async move {
                        let answer = fake_answer(request, &script, &base).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
            }
        });
        origin
    }

    async fn fake_answer(
        request: Request<hyper::body::Incoming>,
        script: &std::sync::Mutex<Script>,
        base: &str,
    ) -> String {
        use http_body_util::BodyExt;
        let path = request.uri().path().to_owned();
        let basic = request.headers().get(http::header::AUTHORIZATION).cloned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let mut script = script.lock().unwrap();
        match path.as_str() {
            "/.well-known/openid-configuration" => serde_json::json!({
                "issuer": "https://idp.test/",
                "authorization_endpoint": format!("{base}/authorize"),
                "token_endpoint": format!("{base}/token"),
                "userinfo_endpoint": format!("{base}/userinfo"),
            })
            .to_string(),
            "/token" => {
                let form: std::collections::HashMap<String, String> =
                    form_urlencoded::parse(&body).into_owned().collect();
                assert_eq!(basic.unwrap(), format!("Basic {}", base64_std(b"doltgate:secret")));
                let verifier = form.get("code_verifier").unwrap();
                let hashed = base64_url(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
                script.redeemed_with_verifier = hashed == script.challenge;
                let claims = serde_json::json!({
                    "iss": "https://idp.test/",
                    "aud": script.audience.clone().unwrap_or_else(|| "doltgate".into()),
                    "exp": unix_now() + 60,
                    "sub": "erin-id",
                    "nonce": script.nonce.clone().unwrap_or_else(|| script.sent_nonce.clone()),
                });
                let key = jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
                let id_token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
                serde_json::json!({ "access_token": "at", "token_type": "Bearer", "id_token": id_token }).to_string()
            }
            "/userinfo" => serde_json::json!({
                "sub": script.userinfo_subject.clone().unwrap_or_else(|| "erin-id".into()),
                "preferred_username": "erin",
                "email": "erin@idp.test",
                "email_verified": true,
            })
            .to_string(),
            other => panic!("the fake provider has no {other}"),
        }
    }

    /// Runs one sign-in against the fake provider scripted by `setup`.
    async fn sign_in(setup: impl FnOnce(&mut Script)) -> (Result<SignedIn, GatewayError>, bool) {
        let script = Arc::new(std::sync::Mutex::new(Script::default()));
        let origin = fake_provider(script.clone()).await;
        let mut login = login(b"secret");
        login.discovery_url = format!("{origin}/.well-known/openid-configuration").parse().unwrap();
        login.allow_http = true;
        let started = login.start("the-key", "/login").await.unwrap();
        let query = started.authorize_url.split_once('?').unwrap().1.to_owned();
        let sent: std::collections::HashMap<String, String> =
            form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        {
            let mut script = script.lock().unwrap();
            script.challenge = sent["code_challenge"].clone();
            script.sent_nonce = sent["nonce"].clone();
            setup(&mut script);
        }
        let cookie = started.cookie.split_once('=').unwrap().1.split(';').next().unwrap().to_owned();
        let callback = format!("code=c&state={}", sent["state"]);
        let outcome = login.finish(&test_provider(), &callback, Some(&cookie)).await;
        let redeemed = script.lock().unwrap().redeemed_with_verifier;
        (outcome, redeemed)
    }

    #[tokio::test]
    async fn a_discovery_document_naming_another_issuer_sends_nobody_to_the_provider() {
        let origin = fake_provider(Arc::default()).await;
        let mut login = login(b"secret");
        login.discovery_url = format!("{origin}/.well-known/openid-configuration").parse().unwrap();
        login.allow_http = true;
        login.issuer = "https://another-idp.test/".into();
        match login.start("the-key", "/login").await {
            Ok(_) => panic!("a sign-in began against a provider whose tokens the judge would refuse"),
            Err(err) => assert!(err.to_string().contains("expects \"https://another-idp.test/\""), "{err}"),
        }
    }

    #[tokio::test]
    async fn a_sign_in_is_judged_on_the_providers_tokens() {
        let (outcome, redeemed) = sign_in(|_| {}).await;
        let signed_in = outcome.unwrap_or_else(|e| panic!("{e}"));
        assert!(redeemed, "the code was redeemed with the verifier whose hash the authorization request sent");
        assert_eq!(signed_in.principal.name, "sso:erin", "the user claim came from userinfo, in the namespace");
        assert_eq!(signed_in.principal.email.as_deref(), Some("erin@idp.test"));
        assert_eq!(signed_in.public_key, "the-key");

        let refusal = |outcome: Result<SignedIn, GatewayError>| match outcome {
            Ok(_) => panic!("accepted"),
            Err(err) => err.to_string(),
        };
        let (outcome, _) = sign_in(|s| s.nonce = Some("a-nonce-from-another-sign-in".into())).await;
        assert!(refusal(outcome).contains("nonce"), "an ID token minted for another sign-in is refused");
        let (outcome, _) = sign_in(|s| s.audience = Some("api".into())).await;
        assert!(refusal(outcome).contains("audience"), "a token for another audience is no ID token");
        let (outcome, _) = sign_in(|s| s.userinfo_subject = Some("mallory-id".into())).await;
        assert!(refusal(outcome).contains("another subject"), "userinfo about someone else is refused");
    }
}
