//! gRPC statuses as they travel: `grpc-status` and a percent-encoded
//! `grpc-message`, in trailers or in a trailers-only response's headers.

use http::{HeaderMap, HeaderValue};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use tonic::Code;

const GRPC_STATUS: &str = "grpc-status";
const GRPC_MESSAGE: &str = "grpc-message";

/// Characters the gRPC spec requires percent-encoded in `grpc-message`.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Trailers (or trailers-only headers) that carry `status`.
pub fn trailers(status: &tonic::Status) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(2);
    write_status(&mut map, status.code(), status.message());
    map
}

pub fn write_status(map: &mut HeaderMap, code: Code, message: &str) {
    map.insert(GRPC_STATUS, HeaderValue::from(code as i32));
    let encoded = utf8_percent_encode(message, MESSAGE_ESCAPES).to_string();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        map.insert(GRPC_MESSAGE, value);
    } else {
        map.remove(GRPC_MESSAGE);
    }
}

/// The status carried in a header map, if any.
pub fn read_status(map: &HeaderMap) -> Option<(Code, String)> {
    let code = map.get(GRPC_STATUS)?.to_str().ok()?.parse::<i32>().ok()?;
    let message = map
        .get(GRPC_MESSAGE)
        .and_then(|v| v.to_str().ok())
        .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    Some((Code::from_i32(code), message))
}
