//! gRPC statuses on the wire: the ones doltgate answers itself, and the
//! translation of upstream statuses whose code would mislead Dolt's client.

use http::{HeaderMap, HeaderValue};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use tonic::Code;

use crate::error::GatewayError;
use crate::remotesapi::RepoName;

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

fn write_status(map: &mut HeaderMap, code: Code, message: &str) {
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

/// A trailers-only gRPC response carrying `err`.
pub fn error_response(err: &GatewayError) -> http::Response<bytes::Bytes> {
    let mut response = http::Response::new(bytes::Bytes::new());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.extend(trailers(&err.to_status()));
    response
}

/// Rewrites upstream statuses that Dolt's client would treat wrongly.
///
/// sql-server reports an unknown database as a plain error, which reaches the
/// client as UNKNOWN and is retried five times; doltgate answers NOT_FOUND
/// naming the database so the client stops at once with a clear message.
pub fn translate_upstream_status(map: &mut HeaderMap, repo: &RepoName) {
    let Some((code, message)) = read_status(map) else {
        return;
    };
    if code == Code::Unknown && is_database_not_found(&message) {
        let err = GatewayError::DatabaseNotFound { database: repo.database().to_owned() };
        write_status(map, err.grpc_code(), err.to_status().message());
    }
}

fn is_database_not_found(message: &str) -> bool {
    message.contains("database not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_with_escaping() {
        let status = tonic::Status::new(Code::NotFound, "100% gone\nreally");
        let map = trailers(&status);
        assert_eq!(read_status(&map), Some((Code::NotFound, "100% gone\nreally".to_owned())));
    }

    #[test]
    fn unknown_database_becomes_not_found() {
        let mut map = trailers(&tonic::Status::new(Code::Unknown, "database not found: nosuch"));
        translate_upstream_status(&mut map, &RepoName { path: "nosuch".into() });
        let (code, message) = read_status(&map).unwrap();
        assert_eq!(code, Code::NotFound);
        assert!(message.contains("\"nosuch\""), "{message}");
    }

    #[test]
    fn other_statuses_pass_untouched() {
        let mut map = trailers(&tonic::Status::new(Code::Unknown, "something else"));
        let before = map.clone();
        translate_upstream_status(&mut map, &RepoName { path: "db".into() });
        assert_eq!(map, before);
    }
}
