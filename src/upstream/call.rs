//! doltgate's own gRPC calls to the endpoint: one request message, every
//! response message back, its status read and classified. The proxies
//! forward clients' calls; this is for calls doltgate makes itself (push
//! inspection, upload registration checks).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Version};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;

use super::Upstream;
use crate::error::GatewayError;
use crate::remotesapi::frame::{FrameDecoder, Framed};
use crate::remotesapi::status::read_status;

const SERVICE: &str = "/dolt.services.remotesapi.v1alpha1.ChunkStoreService/";
/// Largest response doltgate reads for its own calls.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

impl Upstream {
    /// Calls ChunkStoreService method `method` with `request`, presenting
    /// `authorization`: a single request message, every response message
    /// back (a stream answers one per request).
    pub async fn call<Resp: Message + Default>(
        &self,
        method: &str,
        request: &impl Message,
        authorization: &HeaderValue,
    ) -> Result<Vec<Resp>, GatewayError> {
        let failed = |reason: String| GatewayError::UpstreamFailed {
            address: self.address().to_owned(),
            reason: format!("{method} (push inspection): {reason}"),
        };
        let body = Framed::encode(&request.encode_to_vec()).into_bytes();
        let mut http_request = Request::new(Full::new(body).map_err(|never| match never {}).boxed_unsync());
        *http_request.method_mut() = http::Method::POST;
        *http_request.uri_mut() = self.uri(&format!("{SERVICE}{method}"))?;
        *http_request.version_mut() = Version::HTTP_2;
        *http_request.headers_mut() = grpc_headers(authorization);
        let response = self.send_grpc(http_request, true).await?;
        if let Some((code, message)) = read_status(response.headers()).filter(|(code, _)| *code != tonic::Code::Ok) {
            return Err(refused_or_failed(code, format!("{method} (push inspection): {code:?}: {message}"), failed));
        }
        let collected = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        match read_status(&trailers) {
            Some((tonic::Code::Ok, _)) => {}
            Some((code, message)) => {
                return Err(refused_or_failed(code, format!("{method} (push inspection): {code:?}: {message}"), failed))
            }
            None => return Err(failed("the response ended without a status".into())),
        }
        decode_all(collected.to_bytes(), failed)
    }
}

fn decode_all<Resp: Message + Default>(
    body: Bytes,
    failed: impl Fn(String) -> GatewayError,
) -> Result<Vec<Resp>, GatewayError> {
    let mut decoder = FrameDecoder::new(MAX_RESPONSE_BYTES);
    decoder.push(body);
    let mut messages = Vec::new();
    while let Some(framed) = decoder.next_message()? {
        messages.push(Resp::decode(framed.message()).map_err(|e| failed(format!("bad response: {e}")))?);
    }
    Ok(messages)
}

/// A permanent upstream refusal (the push names files that do not exist, say)
/// stays permanent; anything else may pass and is worth a retry.
fn refused_or_failed(code: tonic::Code, message: String, failed: impl Fn(String) -> GatewayError) -> GatewayError {
    use tonic::Code::*;
    match code {
        InvalidArgument | NotFound | FailedPrecondition | PermissionDenied | Unauthenticated | OutOfRange => {
            GatewayError::InspectionFailed(message)
        }
        _ => failed(message),
    }
}

fn grpc_headers(authorization: &HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    headers.insert(http::header::AUTHORIZATION, authorization.clone());
    headers
}
