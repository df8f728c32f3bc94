//! Phase 2, admit: the credential a call carries is proven (with `[auth]`),
//! the grant for its database checked, and the credentials the upstream
//! should see put on it; the headers that may go upstream are chosen here.

use http::{HeaderMap, HeaderValue, Request};
use hyper::body::Incoming;

use super::read::RoutedRequest;
use super::CallContext;
use crate::authn;
use crate::error::GatewayError;
use crate::gateway::{ConnectionInfo, Gateway};
use crate::plumbing::is_hop_by_hop;
use crate::remotesapi::Rpc;

/// A call that passed the checks needing only its headers.
pub(super) struct Call {
    pub(super) rpc: Rpc,
    pub(super) uri: http::Uri,
    /// The headers to send upstream, once [`admit`] adds the credentials.
    pub(super) headers: HeaderMap,
    /// Taken when the call is routed.
    body: Option<Incoming>,
    pub(super) credential: authn::ClientCredential,
}

impl Call {
    /// The request body, for phase 1; it is read once.
    pub(super) fn take_body(&mut self) -> Result<Incoming, GatewayError> {
        self.body.take().ok_or_else(|| GatewayError::Internal("a call's body was read twice".into()))
    }
}

pub(super) fn accept(gateway: &Gateway, request: Request<Incoming>) -> Result<Call, GatewayError> {
    let rpc = Rpc::from_path(request.uri().path())
        .ok_or_else(|| GatewayError::UnknownMethod(request.uri().path().to_owned()))?;
    let token_header = gateway.auth.as_ref().and_then(|auth| auth.authenticator.token_header.as_ref());
    let credential = authn::read_credential(request.headers(), token_header)?;
    let (parts, body) = request.into_parts();
    let mut headers = upstream_request_headers(&parts.headers);
    if let Some(name) = token_header {
        headers.remove(name);
    }
    Ok(Call { rpc, uri: parts.uri, headers, body: Some(body), credential })
}

/// Who a routed call runs as, once admitted.
pub(super) struct Admitted {
    pub(super) user: String,
    /// `None` in transparent mode, where Dolt checks the credentials.
    pub(super) principal: Option<authn::Principal>,
}

/// Proves who is calling and that they may make this call on the database
/// it names, then puts the credentials the upstream should see on the call.
pub(super) async fn admit(
    context: &CallContext,
    call: &mut Call,
    routed: &RoutedRequest,
) -> Result<Admitted, GatewayError> {
    let claimed = call.credential.user_for_logs();
    let Some(auth) = &context.gateway.auth else {
        context.access.user(claimed.clone());
        call.headers.insert(http::header::AUTHORIZATION, call.credential.authorization().clone());
        return Ok(Admitted { user: claimed, principal: None });
    };
    let cluster = &routed.destination.cluster;
    let host = context.origin.parse::<http::Uri>().ok().and_then(|u| u.host().map(str::to_owned)).unwrap_or_default();
    let audience = authn::Audience { cluster, host: &host, from: context.connection.remote.ip() };
    // Boxed, like the write path below: rarely needed state (SQL logins, JWKS
    // fetches) should not size every call's future.
    let proven = Box::pin(auth.authenticator.authenticate(&call.credential, &audience)).await;
    context.access.user(proven.as_ref().map(|p| authn::shown(&p.name)).unwrap_or(claimed));
    let principal = proven?;
    auth.grants.check(&principal, &routed.destination.judged_name, call.rpc.permission())?;
    let upstream_authorization = auth.upstream_authorization(cluster, call.credential.authorization())?;
    call.headers.insert(http::header::AUTHORIZATION, upstream_authorization);
    Ok(Admitted { user: principal.name.clone(), principal: Some(principal) })
}

/// Whose per-user slots a call takes: the principal's, or without `[auth]`
/// (Dolt checks the credentials) the client address's.
pub(super) fn slot_holder(admitted: &Admitted, connection: &ConnectionInfo) -> String {
    match &admitted.principal {
        Some(principal) => principal.name.clone(),
        None => connection.remote.ip().to_string(),
    }
}

/// The client's headers as the upstream should see them: no hop-by-hop
/// headers, no credentials (the caller sets exactly one), no compression
/// offer (doltgate reads messages, so they must stay uncompressed), and no
/// `x-forwarded-proto` (it would change the scheme of the URLs the upstream
/// builds, which doltgate replaces anyway).
fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(client.len() + 2);
    for (name, value) in client {
        let drop = is_hop_by_hop(name)
            || matches!(
                name.as_str(),
                "authorization" | "content-length" | "grpc-accept-encoding" | "x-forwarded-proto"
            );
        if !drop {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_headers_drop_credentials_and_hop_by_hop() {
        let mut client = HeaderMap::new();
        client.insert("authorization", HeaderValue::from_static("Basic x"));
        client.insert("connection", HeaderValue::from_static("close"));
        client.insert("grpc-accept-encoding", HeaderValue::from_static("gzip"));
        client.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        client.insert("content-type", HeaderValue::from_static("application/grpc"));
        client.insert("grpc-timeout", HeaderValue::from_static("10S"));
        let up = upstream_request_headers(&client);
        assert_eq!(up.get("content-type").unwrap(), "application/grpc");
        assert_eq!(up.get("grpc-timeout").unwrap(), "10S");
        assert_eq!(up.get("te").unwrap(), "trailers");
        for gone in ["authorization", "connection", "grpc-accept-encoding", "x-forwarded-proto"] {
            assert!(up.get(gone).is_none(), "{gone}");
        }
    }
}
