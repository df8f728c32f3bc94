//! Every way doltgate refuses or fails a request, and the one place where each
//! maps to a gRPC status (for RPCs) or an HTTP status (for table-file requests).
//!
//! The codes matter beyond taste: Dolt's client stops at once on
//! INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION,
//! UNIMPLEMENTED, OUT_OF_RANGE and UNAUTHENTICATED, and retries everything
//! else (remotestorage/retry.go), so a permanent condition must use one of the
//! former and a transient one UNAVAILABLE.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tonic::Code;

use crate::remotesapi::frame::FrameError;
use crate::remotesapi::wire::WireError;
use crate::storage::verify::VerifyError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("user {user:?} has no {needed} permission on database {database:?}")]
    PermissionDenied { user: String, database: String, needed: crate::config::Permission },
    #[error("table-file URL refused: {0}")]
    FileUrlRefused(String),
    #[error("push refused: {what} is not allowed for user {user:?} by {rule}")]
    PushRefused { what: String, user: String, rule: String },
    #[error("push refused: {0}")]
    RefNotAllowed(String),
    #[error("push refused: cannot inspect it: {0}")]
    InspectionFailed(String),
    #[error("push not inspected (try again): {0}")]
    InspectionUnavailable(String),
    #[error("unknown gRPC method {0}: doltgate serves dolt.services.remotesapi.v1alpha1.ChunkStoreService")]
    UnknownMethod(String),
    #[error("bad request message: {0}")]
    BadMessage(#[from] WireError),
    #[error("request names no database: set repo_path (the remote URL's path)")]
    NoDatabase,
    #[error("gRPC message of {size} bytes exceeds the {limit}-byte limit")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("gRPC message compression is not supported; send uncompressed messages")]
    CompressedMessage,
    #[error("gRPC stream ended in the middle of a message")]
    TruncatedMessage,
    #[error("unary RPC {0} carried more than one request message")]
    TooManyMessages(String),
    #[error("database {database:?} not found on the upstream")]
    DatabaseNotFound { database: String },
    #[error("no route for {repo_path:?}: this gateway serves no such database")]
    NoRoute { repo_path: String },
    #[error("{typed:?} names database {database:?} on Dolt; writes must name it exactly so (push to the remote URL ending in /{database})")]
    WriteNeedsCanonicalDatabase { typed: String, database: String },
    #[error("a stream must name one database; it switched from {first:?} to {now:?}")]
    StreamSwitchedDatabase { first: String, now: String },
    #[error("cluster {cluster:?} has no primary (waited {}); writes resume when a member becomes primary", humantime_secs(*.waited))]
    NoPrimary { cluster: String, waited: Duration },
    #[error("{endpoint} is a standby and this gateway does not forward writes{}", .writes_url.as_ref().map(|u| format!("; push to {u}")).unwrap_or_default())]
    StandbyRefusesWrites { endpoint: String, writes_url: Option<String> },
    #[error("endpoint {endpoint} is no longer the primary; ask for a new upload location")]
    NotPrimaryAnymore { endpoint: String },
    #[error("upstream {address} is unreachable: {reason}")]
    UpstreamUnreachable { address: String, reason: String },
    #[error("upstream {address} did not answer within {}", humantime_secs(*.after))]
    UpstreamTimeout { address: String, after: Duration },
    #[error("upstream {address} failed: {reason}")]
    UpstreamFailed { address: String, reason: String },
    #[error("reading the client's request failed: {0}")]
    ClientBody(String),
    #[error("no complete request message arrived within {} (limits.request_read_timeout)", humantime_secs(*.after))]
    RequestReadTimeout { after: Duration },
    #[error("not a doltgate table-file URL: {0}")]
    NotAFileUrl(String),
    #[error("method {0} is not allowed on table files (use GET, PUT or POST)")]
    FileMethodNotAllowed(String),
    #[error("gRPC needs HTTP/2; this request arrived over {0:?}")]
    GrpcNeedsHttp2(http::Version),
    #[error(transparent)]
    Upload(#[from] UploadRefused),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("user {user:?} is at {key} ({limit}); try again when one of their requests ends")]
    UserLimit { user: String, limit: usize, key: &'static str },
    #[error("too many failed logins from {from}; checks from this address resume in {}", humantime_secs(*.retry_after))]
    TooManyFailedLogins { from: std::net::IpAddr, retry_after: Duration },
    #[error("login: {0}")]
    BadLoginRequest(String),
    #[error("login refused: {0}")]
    LoginForbidden(String),
    #[error("identity provider: {0}")]
    IdentityProvider(String),
}

/// Why an upload, upload location or registration is refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadRefused {
    #[error("table-file id is {0} bytes, not a 20-byte address")]
    BadIdLength(usize),
    #[error("table-file suffix {0:?} is not one Dolt writes (none, or \".darc\")")]
    BadSuffix(String),
    #[error("{0:?} is not a table-file name (32 characters of 0-9a-v, optionally .darc)")]
    BadName(String),
    #[error("{0} is the name of the store's chunk journal, which is never uploaded")]
    Journal(String),
    #[error("upload of {name} ({size}) is larger than {key} ({limit} bytes) for database {database:?}")]
    TooLarge { name: String, size: String, limit: u64, key: String, database: String },
    #[error("upload refused: {0}")]
    Unverified(#[from] VerifyError),
    #[error("upload refused: {name} holds {actual} chunks, its URL says {claimed}")]
    ChunkCount { name: String, claimed: u64, actual: usize },
    #[error("cannot register table file {0}: it was not verified on its way in through this gateway and the store does not list it")]
    NotVerified(String),
    #[error("cannot spool the upload to local disk: {0}")]
    Spool(String),
    #[error("reading the upload failed: {0}")]
    ClientBody(String),
    #[error("the upstream stopped reading the upload")]
    UpstreamGone,
}

impl UploadRefused {
    /// Conditions that may pass on retry: doltgate's own disk, or the upstream.
    pub fn is_transient(&self) -> bool {
        matches!(self, UploadRefused::Spool(_) | UploadRefused::UpstreamGone)
    }
}

impl From<FrameError> for GatewayError {
    fn from(err: FrameError) -> GatewayError {
        match err {
            FrameError::TooLarge { size, limit } => GatewayError::MessageTooLarge { size, limit },
            FrameError::Compressed => GatewayError::CompressedMessage,
            FrameError::BadFlag => GatewayError::BadMessage(WireError::Malformed("gRPC frame flag is neither 0 nor 1")),
        }
    }
}

fn upload_code(refused: &UploadRefused) -> Code {
    match refused {
        UploadRefused::BadIdLength(_)
        | UploadRefused::BadSuffix(_)
        | UploadRefused::BadName(_)
        | UploadRefused::Journal(_)
        | UploadRefused::TooLarge { .. } => Code::InvalidArgument,
        UploadRefused::Unverified(_) | UploadRefused::ChunkCount { .. } | UploadRefused::NotVerified(_) => {
            Code::FailedPrecondition
        }
        UploadRefused::Spool(_) | UploadRefused::UpstreamGone => Code::Unavailable,
        UploadRefused::ClientBody(_) => Code::Cancelled,
    }
}

fn upload_http_status(refused: &UploadRefused) -> StatusCode {
    match refused {
        UploadRefused::BadIdLength(_)
        | UploadRefused::BadSuffix(_)
        | UploadRefused::BadName(_)
        | UploadRefused::Journal(_)
        | UploadRefused::ClientBody(_) => StatusCode::BAD_REQUEST,
        UploadRefused::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        UploadRefused::Unverified(_) | UploadRefused::ChunkCount { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        UploadRefused::NotVerified(_) => StatusCode::FORBIDDEN,
        UploadRefused::Spool(_) => StatusCode::SERVICE_UNAVAILABLE,
        UploadRefused::UpstreamGone => StatusCode::BAD_GATEWAY,
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl GatewayError {
    pub fn grpc_code(&self) -> Code {
        match self {
            GatewayError::Unauthenticated(_) => Code::Unauthenticated,
            GatewayError::PermissionDenied { .. }
            | GatewayError::FileUrlRefused(_)
            | GatewayError::PushRefused { .. } => Code::PermissionDenied,
            GatewayError::InspectionFailed(_) => Code::FailedPrecondition,
            GatewayError::RefNotAllowed(_) => Code::InvalidArgument,
            GatewayError::InspectionUnavailable(_) => Code::Unavailable,
            GatewayError::UnknownMethod(_) => Code::Unimplemented,
            GatewayError::CompressedMessage => Code::Unimplemented,
            GatewayError::BadMessage(_)
            | GatewayError::NoDatabase
            | GatewayError::TruncatedMessage
            | GatewayError::TooManyMessages(_) => Code::InvalidArgument,
            GatewayError::MessageTooLarge { .. } => Code::ResourceExhausted,
            GatewayError::DatabaseNotFound { .. } | GatewayError::NoRoute { .. } => Code::NotFound,
            GatewayError::StreamSwitchedDatabase { .. } | GatewayError::WriteNeedsCanonicalDatabase { .. } => {
                Code::InvalidArgument
            }
            GatewayError::NoPrimary { .. } | GatewayError::NotPrimaryAnymore { .. } => Code::Unavailable,
            GatewayError::StandbyRefusesWrites { .. } => Code::FailedPrecondition,
            GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamFailed { .. } => Code::Unavailable,
            GatewayError::UpstreamTimeout { .. } | GatewayError::RequestReadTimeout { .. } => Code::DeadlineExceeded,
            GatewayError::ClientBody(_) => Code::Cancelled,
            GatewayError::NotAFileUrl(_) => Code::NotFound,
            GatewayError::FileMethodNotAllowed(_) | GatewayError::GrpcNeedsHttp2(_) => Code::InvalidArgument,
            GatewayError::Upload(refused) => upload_code(refused),
            GatewayError::Internal(_) => Code::Internal,
            GatewayError::TooManyFailedLogins { .. } | GatewayError::UserLimit { .. } => Code::Unavailable,
            GatewayError::BadLoginRequest(_) => Code::InvalidArgument,
            GatewayError::LoginForbidden(_) => Code::PermissionDenied,
            GatewayError::IdentityProvider(_) => Code::Unavailable,
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            GatewayError::PermissionDenied { .. }
            | GatewayError::FileUrlRefused(_)
            | GatewayError::PushRefused { .. } => StatusCode::FORBIDDEN,
            GatewayError::InspectionFailed(_) => StatusCode::PRECONDITION_FAILED,
            GatewayError::RefNotAllowed(_) => StatusCode::BAD_REQUEST,
            GatewayError::InspectionUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::NotAFileUrl(_) | GatewayError::DatabaseNotFound { .. } | GatewayError::NoRoute { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::NoPrimary { .. } | GatewayError::NotPrimaryAnymore { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::StandbyRefusesWrites { .. } => StatusCode::CONFLICT,
            GatewayError::FileMethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::GrpcNeedsHttp2(_) => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::RequestReadTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::MessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnknownMethod(_) | GatewayError::CompressedMessage => StatusCode::NOT_IMPLEMENTED,
            GatewayError::BadMessage(_)
            | GatewayError::NoDatabase
            | GatewayError::TruncatedMessage
            | GatewayError::TooManyMessages(_)
            | GatewayError::StreamSwitchedDatabase { .. }
            | GatewayError::WriteNeedsCanonicalDatabase { .. }
            | GatewayError::ClientBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::Upload(refused) => upload_http_status(refused),
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::TooManyFailedLogins { .. } | GatewayError::UserLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BadLoginRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::LoginForbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::IdentityProvider(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The status a gRPC client sees.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), format!("doltgate: {self}"))
    }

    /// A plain-text HTTP answer for table-file requests.
    pub fn to_http_response(&self) -> http::Response<Bytes> {
        let mut response = http::Response::new(Bytes::from(format!("doltgate: {self}\n")));
        *response.status_mut() = self.http_status();
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_conditions_use_codes_dolt_does_not_retry() {
        let permanent = [
            GatewayError::Unauthenticated("x".into()),
            GatewayError::DatabaseNotFound { database: "db".into() },
            GatewayError::UnknownMethod("/a/b".into()),
            GatewayError::NoDatabase,
        ];
        let not_retried = [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::OutOfRange,
            Code::Unauthenticated,
        ];
        for err in permanent {
            assert!(not_retried.contains(&err.grpc_code()), "{err} maps to a retried code");
        }
        let down = GatewayError::UpstreamUnreachable { address: "127.0.0.1:1".into(), reason: "refused".into() };
        assert_eq!(down.grpc_code(), Code::Unavailable);
        assert!(down.to_status().message().contains("127.0.0.1:1"));
    }
}
