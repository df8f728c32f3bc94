//! Self-hosted `dolt login`: the page `dolt login --login-url` opens, where a
//! person proves who they are (their database user's password, checked like
//! Basic, with the same throttles) and registers the key the CLI made; and
//! `CredentialsService/WhoAmI`, which the CLI polls with that key until it is
//! registered. Registered keys live in a Dolt table ([`store`]) and
//! authenticate clones and pushes as the user who registered them.
//!
//! The page is plain HTML with a little JavaScript, served from the binary.
//! It reads the public key from the URL fragment (which browsers never
//! send), and every request it makes carries a per-page token that must
//! match a `SameSite=Strict` cookie, so another site cannot register a key.
//! With `[login.oidc]` the page also offers signing in with an OpenID Connect
//! provider ([`oidc`]).

pub mod oidc;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use prost::Message;

use crate::authn::{self, Audience};
use crate::cluster::Cluster;
use crate::config::{check_positive, invalid, AuthConfig, ConfigError, LoginConfig, Secrets};
use crate::error::GatewayError;
use crate::gateway::{ConnectionInfo, Gateway};
use crate::plumbing::{full_body, ResponseBody};
use crate::remotesapi::frame::Framed;
use crate::remotesapi::proto::WhoAmIResponse;
pub use store::{KeyRecord, KeyStore};

pub const WHO_AM_I_PATH: &str = "/dolt.services.remotesapi.v1alpha1.CredentialsService/WhoAmI";
const CSRF_COOKIE: &str = "doltgate_login_csrf";
const CSRF_HEADER: &str = "x-doltgate-csrf";
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Every page's frame; `{{main}}` is the page's own content.
const LAYOUT: &str = include_str!("layout.html");
/// The page `dolt login` opens: the key id, the sign-in choices and its script.
const FORM: &str = include_str!("form.html");
/// The page a provider's sign-in ends on.
const OUTCOME: &str = r#"  <p id="result" class="{{class}}" role="status">{{message}}</p>
"#;
/// The pages' one stylesheet, inlined (the pages load nothing else).
const STYLE: &str = include_str!("style.css");

#[derive(Debug)]
pub struct Login {
    path: String,
    store: Arc<KeyStore>,
    email_template: String,
    oidc: Option<oidc::OidcLogin>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("database", &self.database()).finish_non_exhaustive()
    }
}

impl Login {
    /// The `[login]` section, over the clusters built before it.
    pub fn build(
        config: &LoginConfig,
        clusters: &BTreeMap<String, Arc<Cluster>>,
        auth: Option<&AuthConfig>,
        secrets: &Secrets,
    ) -> Result<Login, ConfigError> {
        if auth.is_none() {
            return Err(invalid("login", "needs [auth]: keys are registered by users who prove their password"));
        }
        let path = config.path.trim_end_matches('/');
        if !path.starts_with('/') || path.is_empty() || path.contains(['?', '#']) {
            return Err(invalid("login.path", format!("{:?} must be an absolute path such as /login", config.path)));
        }
        let cluster = clusters
            .get(&config.cluster)
            .ok_or_else(|| invalid("login.cluster", format!("no cluster named {:?}", config.cluster)))?;
        if cluster.service_login().is_none() {
            return Err(invalid("login.cluster", "the cluster needs a sql_user: doltgate keeps the keys as that user"));
        }
        let database_ok = !config.database.is_empty()
            && config.database.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !database_ok {
            return Err(invalid("login.database", "use lowercase letters, digits and '_'"));
        }
        check_positive("login.cache_ttl", config.cache_ttl)?;
        let oidc = config.oidc.as_ref().map(|oidc| oidc::OidcLogin::build(oidc, path, auth, secrets)).transpose()?;
        Ok(Login {
            path: path.to_owned(),
            store: Arc::new(KeyStore::new(cluster.clone(), &config.database, config.cache_ttl)),
            email_template: config.email_template.clone(),
            oidc,
        })
    }

    pub fn store(&self) -> &Arc<KeyStore> {
        &self.store
    }

    /// Revokes `key_id` (audited as done `by` an operator channel); false
    /// when no live key has that id.
    pub async fn revoke(&self, key_id: &str, by: &str) -> Result<bool, GatewayError> {
        let revoked = self.store.revoke(key_id).await?;
        if revoked {
            crate::metrics::metrics().login_keys.with_label_values(&["revoked"]).inc();
            tracing::info!(target: "doltgate::audit", event = "key revoked", key_id = %authn::shown(key_id), by);
        }
        Ok(revoked)
    }

    /// Whether `path` is the page or one of its endpoints.
    pub fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.path.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Whether `database` on `cluster` is where keys are kept: no route serves it.
    pub fn hides(&self, cluster: &str, database: &str) -> bool {
        cluster == self.store.cluster().name && database == self.store.database()
    }

    /// The page and its two endpoints; errors are JSON `{"error": ...}`.
    pub async fn serve(
        &self,
        gateway: &Gateway,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Response<ResponseBody> {
        let rest = request.uri().path()[self.path.len()..].to_owned();
        let answer = match (request.method(), rest.as_str()) {
            (&Method::GET, "" | "/") => Ok(self.page()),
            (&Method::POST, "/key-id") => self.key_id(request).await,
            (&Method::POST, "/register") => self.register(gateway, request, connection).await,
            (&Method::POST, oidc::START_PATH) => self.start_oidc(request).await,
            (&Method::GET, oidc::CALLBACK_PATH) => Ok(self.finish_oidc(gateway, request, connection).await),
            _ => Err(GatewayError::BadLoginRequest(format!("no such login endpoint: {} {rest}", request.method()))),
        };
        answer.unwrap_or_else(|err| json(err.http_status(), &serde_json::json!({ "error": err.to_string() })))
    }

    fn page(&self) -> Response<ResponseBody> {
        let csrf = random_token();
        let nonce = random_token();
        let oidc_button = match &self.oidc {
            Some(oidc) => format!(
                r#"<button id="oidc" type="button" disabled>{}</button><p class="or">or with your database user's password:</p>"#,
                escape_html(oidc.label())
            ),
            None => String::new(),
        };
        let html = self.render(FORM, &csrf, &nonce).replace("{{oidc}}", &oidc_button);
        let mut response = html_response(StatusCode::OK, html, &nonce);
        set_header(
            response.headers_mut(),
            "set-cookie",
            format!("{CSRF_COOKIE}={csrf}; Path={}; HttpOnly; SameSite=Strict", self.path),
        );
        response
    }

    /// `main` in the pages' frame, with the page's request token and script nonce.
    fn render(&self, main: &str, csrf: &str, nonce: &str) -> String {
        LAYOUT
            .replace("{{style}}", STYLE)
            .replace("{{main}}", main)
            .replace("{{csrf}}", csrf)
            .replace("{{nonce}}", nonce)
            .replace("{{base}}", &self.path)
    }

    /// The page's "sign in with" button: where the provider is, and the flow cookie.
    async fn start_oidc(&self, request: Request<Incoming>) -> Result<Response<ResponseBody>, GatewayError> {
        let oidc =
            self.oidc.as_ref().ok_or_else(|| GatewayError::BadLoginRequest("no [login.oidc] is configured".into()))?;
        let form: KeyForm = read_json(request).await?;
        authn::dolt_keys::parse_public_key(&form.public_key).map_err(GatewayError::BadLoginRequest)?;
        let started = oidc.start(&form.public_key, &self.path).await?;
        let mut response = json(StatusCode::OK, &serde_json::json!({ "authorize_url": started.authorize_url }));
        set_header(response.headers_mut(), "set-cookie", started.cookie);
        Ok(response)
    }

    /// Where the provider sends the browser back: a page saying what happened.
    async fn finish_oidc(
        &self,
        gateway: &Gateway,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Response<ResponseBody> {
        let outcome = async {
            let oidc = self
                .oidc
                .as_ref()
                .ok_or_else(|| GatewayError::BadLoginRequest("no [login.oidc] is configured".into()))?;
            let provider = gateway
                .auth
                .as_ref()
                .and_then(|auth| auth.authenticator.provider_named(oidc.provider_name()))
                .ok_or_else(|| GatewayError::Internal("login.oidc.provider is not among [[auth.jwt]]".into()))?;
            let cookie = cookie_value(request.headers(), oidc::FLOW_COOKIE);
            let signed_in = oidc.finish(provider, request.uri().query().unwrap_or_default(), cookie).await;
            let signed_in = signed_in.inspect_err(|err| self.refused("", connection, err))?;
            let principal = &signed_in.principal;
            self.register_key(&signed_in.public_key, principal, connection).await
        };
        let nonce = random_token();
        let (status, class, message) = match outcome.await {
            Ok((key_id, user)) => (
                StatusCode::OK,
                "ok",
                format!("Registered key {key_id} for {user}. dolt login finishes within a few seconds; you can close this page."),
            ),
            Err(err) => (err.http_status(), "error", err.to_string()),
        };
        // The message is replaced last: no placeholder inside it is filled in.
        let html =
            self.render(OUTCOME, "", &nonce).replace("{{class}}", class).replace("{{message}}", &escape_html(&message));
        let mut response = html_response(status, html, &nonce);
        set_header(
            response.headers_mut(),
            "set-cookie",
            format!("{}=; Path={}; Max-Age=0", oidc::FLOW_COOKIE, self.path),
        );
        response
    }

    async fn key_id(&self, request: Request<Incoming>) -> Result<Response<ResponseBody>, GatewayError> {
        let form: KeyForm = read_json(request).await?;
        let public = authn::dolt_keys::parse_public_key(&form.public_key).map_err(GatewayError::BadLoginRequest)?;
        Ok(json(StatusCode::OK, &serde_json::json!({ "key_id": authn::dolt_keys::key_id(&public) })))
    }

    async fn register(
        &self,
        gateway: &Gateway,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let host = request_host(&request);
        let form: RegisterForm = read_json(request).await?;
        authn::dolt_keys::parse_public_key(&form.public_key).map_err(GatewayError::BadLoginRequest)?;
        let authorization = authn::basic_authorization(&form.user, &form.password).map_err(|_| {
            GatewayError::BadLoginRequest("the user name or password has characters a header cannot carry".into())
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, authorization);
        let credential = authn::read_credential(&headers, None)?;
        let principal = self
            .authenticate(gateway, &credential, &host, connection)
            .await
            .inspect_err(|err| self.refused(&form.user, connection, err))?;
        let (key_id, user) = self.register_key(&form.public_key, &principal, connection).await?;
        Ok(json(StatusCode::OK, &serde_json::json!({ "key_id": key_id, "user": user })))
    }

    /// Registers `public_key` for `principal`, audited and counted.
    async fn register_key(
        &self,
        public_key: &str,
        principal: &authn::Principal,
        connection: &ConnectionInfo,
    ) -> Result<(String, String), GatewayError> {
        let key_id = self.store.register(public_key, &principal.name, principal.email.as_deref()).await?;
        crate::metrics::metrics().login_keys.with_label_values(&["registered"]).inc();
        tracing::info!(target: "doltgate::audit", event = "key registered", %key_id, user = %authn::shown(&principal.name), from = %connection.remote.ip());
        Ok((key_id, principal.name.clone()))
    }

    /// Counts and audits a registration refused because `user` (as claimed,
    /// empty when a provider's sign-in failed) was not proven.
    fn refused(&self, user: &str, connection: &ConnectionInfo, err: &GatewayError) {
        crate::metrics::metrics().login_keys.with_label_values(&["refused"]).inc();
        tracing::info!(target: "doltgate::audit", event = "key registration refused", user = %authn::shown(user), from = %connection.remote.ip(), error = %err);
    }

    /// `CredentialsService/WhoAmI` for a Dolt key token: who the key is registered to.
    pub async fn who_am_i(
        &self,
        gateway: &Gateway,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Response<ResponseBody> {
        let answer = async {
            let token_header = gateway.auth.as_ref().and_then(|auth| auth.authenticator.token_header.as_ref());
            let credential = authn::read_credential(request.headers(), token_header)?;
            if !matches!(credential.presented()?, authn::Presented::Bearer(_)) {
                return Err(GatewayError::Unauthenticated("WhoAmI answers for a Dolt key token only".into()));
            }
            let principal = self.authenticate(gateway, &credential, &request_host(&request), connection).await?;
            Ok(WhoAmIResponse {
                username: principal.name.clone(),
                display_name: principal.name.clone(),
                email_address: principal
                    .email
                    .clone()
                    .unwrap_or_else(|| self.email_template.replace("{user}", &principal.name)),
            })
        };
        match answer.await {
            Ok(who) => grpc_answer(&who.encode_to_vec()),
            Err(err) => crate::grpc::status::error_response(&err).map(full_body),
        }
    }

    async fn authenticate(
        &self,
        gateway: &Gateway,
        credential: &authn::ClientCredential,
        host: &str,
        connection: &ConnectionInfo,
    ) -> Result<authn::Principal, GatewayError> {
        let auth = gateway.auth.as_ref().ok_or_else(|| GatewayError::Internal("login without [auth]".into()))?;
        let audience = Audience { cluster: self.store.cluster(), host, from: connection.remote.ip() };
        auth.authenticator.authenticate(credential, &audience).await
    }
}

/// The page's requests: JSON, carrying the page's token matching its cookie.
async fn read_json<T: serde::de::DeserializeOwned>(request: Request<Incoming>) -> Result<T, GatewayError> {
    check_csrf(request.headers())?;
    let body = Limited::new(request.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| GatewayError::BadLoginRequest(format!("unreadable request: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| GatewayError::BadLoginRequest(format!("not the expected JSON: {e}")))
}

fn check_csrf(headers: &HeaderMap) -> Result<(), GatewayError> {
    let cookie = cookie_value(headers, CSRF_COOKIE);
    let sent = headers.get(CSRF_HEADER).and_then(|value| value.to_str().ok());
    let same = match (cookie, sent) {
        (Some(cookie), Some(sent)) if !cookie.is_empty() => same_bytes(cookie.as_bytes(), sent.as_bytes()),
        _ => false,
    };
    if !same {
        return Err(GatewayError::LoginForbidden("reload the page: its request token is missing or stale".into()));
    }
    if headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/json") {
        return Err(GatewayError::BadLoginRequest("send application/json".into()));
    }
    Ok(())
}

/// The value of cookie `name` in a request's `Cookie` headers.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
}

/// An HTML page with the headers every login page carries: no caching, no
/// framing, no referrer, and a policy allowing only its own nonce'd script and style.
fn html_response(status: StatusCode, html: String, nonce: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    set_header(headers, "content-type", "text/html; charset=utf-8".into());
    set_header(headers, "cache-control", "no-store".into());
    set_header(headers, "referrer-policy", "no-referrer".into());
    set_header(headers, "x-frame-options", "DENY".into());
    set_header(headers, "x-content-type-options", "nosniff".into());
    set_header(
        headers,
        "content-security-policy",
        format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
             form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        ),
    );
    response
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.append(name, value);
    }
}

/// `text` safe inside HTML elements and quoted attributes.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Equality that takes as long whichever byte differs.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[derive(serde::Deserialize)]
struct KeyForm {
    public_key: String,
}

#[derive(serde::Deserialize)]
struct RegisterForm {
    public_key: String,
    user: String,
    password: String,
}

fn request_host<B>(request: &Request<B>) -> String {
    let authority = request
        .uri()
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| request.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned));
    authority.unwrap_or_default()
}

fn random_token() -> String {
    let mut bytes = [0u8; 18];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("randomness");
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(full_body(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A unary gRPC answer: one message, then an OK status in the trailers.
fn grpc_answer(message: &[u8]) -> Response<ResponseBody> {
    let frames = [
        Ok::<_, crate::BoxError>(http_body::Frame::data(Framed::encode(message).into_bytes())),
        Ok(http_body::Frame::trailers(crate::remotesapi::status::trailers(&tonic::Status::ok("")))),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
    let mut response = Response::new(body);
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_need_the_pages_token_in_header_and_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(check_csrf(&headers).is_err(), "no cookie, no header");
        headers.insert(http::header::COOKIE, HeaderValue::from_static("a=b; doltgate_login_csrf=tok"));
        assert!(check_csrf(&headers).is_err(), "cookie without the header");
        headers.insert(CSRF_HEADER, HeaderValue::from_static("other"));
        assert!(check_csrf(&headers).is_err(), "header not matching the cookie");
        headers.insert(CSRF_HEADER, HeaderValue::from_static("tok"));
        assert!(check_csrf(&headers).is_ok());
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(check_csrf(&headers).is_err(), "a form post from another site is not JSON");
    }
}
