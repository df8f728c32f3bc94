//! The HTTP calls doltgate makes to identity providers (a JWK Set, OpenID
//! Connect discovery, token and userinfo endpoints): HTTPS with the system's
//! roots or a configured CA, every call bounded in time and in size, so a
//! slow or hostile provider can hold neither a task nor memory.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BYTES: usize = 1024 * 1024;
/// How much of a refusal's body an error message quotes.
const QUOTED_BYTES: usize = 300;

pub type IdpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A client trusting `ca_file`'s certificates, or the system's roots.
pub fn client(ca_file: Option<&Path>) -> Result<IdpClient, String> {
    let tls = crate::tls::client_config(ca_file)?;
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector))
}

/// GETs `uri`, with `bearer` as its access token if given; the body of a 2xx answer.
pub async fn get(client: &IdpClient, uri: &http::Uri, bearer: Option<&str>) -> Result<Bytes, String> {
    let mut request = Request::get(uri.clone()).header(http::header::ACCEPT, "application/json");
    if let Some(token) = bearer {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(client, request.body(Full::default()).map_err(|e| format!("GET {uri}: {e}"))?).await
}

/// Sends `request`; the body of a 2xx answer, else an error quoting the start
/// of the answer (providers explain refusals there, as OAuth's `error`).
pub async fn send(client: &IdpClient, request: Request<Full<Bytes>>) -> Result<Bytes, String> {
    let what = format!("{} {}", request.method(), request.uri());
    let exchange = async {
        let response = client.request(request).await.map_err(|e| format!("{what}: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BYTES);
        let body = body.collect().await.map_err(|e| format!("{what}: {e}"))?.to_bytes();
        if !status.is_success() {
            return Err(refusal(&what, status, &body));
        }
        Ok(body)
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| format!("{what}: no answer within {TIMEOUT:?}"))?
}

fn refusal(what: &str, status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BYTES)]);
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    if text.trim().is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status}: {}", text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_quotes_the_start_of_the_answer_without_control_characters() {
        let long = format!("{{\"error\":\"invalid_grant\"}}\n\u{1b}[31m{}", "x".repeat(1000));
        let message = refusal("POST https://idp/token", StatusCode::BAD_REQUEST, long.as_bytes());
        assert!(message.starts_with("POST https://idp/token: HTTP 400 Bad Request: {\"error\":\"invalid_grant\"}"));
        assert!(!message.contains('\u{1b}') && !message.contains('\n'));
        assert!(message.len() < QUOTED_BYTES + 80);
        assert_eq!(refusal("GET u", StatusCode::NOT_FOUND, b""), "GET u: HTTP 404 Not Found");
    }
}
