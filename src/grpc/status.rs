//! gRPC statuses on the wire: the ones doltgate answers itself, and the
//! translation of upstream statuses whose code would mislead Dolt's client.

use http::{HeaderMap, HeaderValue};
use tonic::Code;

use crate::error::GatewayError;
use crate::remotesapi::status::write_status;
pub use crate::remotesapi::status::{read_status, trailers};
use crate::remotesapi::RepoName;

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
