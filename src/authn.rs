//! Who is calling: the credentials a gRPC request carries.
//!
//! Today doltgate passes the client's own credentials on to the upstream,
//! with one guard: sql-server treats a request without exactly one
//! `authorization` value as `root` with an empty password, so a request
//! with none (or several) is refused here and never forwarded.

use http::{HeaderMap, HeaderValue};

use crate::error::GatewayError;

/// The credentials to present upstream for one call.
#[derive(Debug, Clone)]
pub struct Credentials {
    authorization: HeaderValue,
}

impl Credentials {
    /// Who the credentials claim to be, for logs: the Basic user name, or
    /// the scheme alone for other kinds. Never the secret.
    pub fn user_for_logs(&self) -> String {
        let value = self.authorization.to_str().unwrap_or_default();
        let Some(encoded) = value.strip_prefix("Basic ") else {
            return value.split_whitespace().next().unwrap_or("unknown").to_owned();
        };
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|text| text.split_once(':').map(|(user, _)| user.to_owned()))
            .unwrap_or_else(|| "malformed".to_owned())
    }

    /// The one `authorization` value the upstream will see.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }
}

/// Reads the caller's credentials from the request headers.
pub fn authenticate(headers: &HeaderMap) -> Result<Credentials, GatewayError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Err(GatewayError::Unauthenticated(
            "no credentials: this remote requires a user; run dolt with --user NAME and set DOLT_REMOTE_PASSWORD"
                .into(),
        ));
    };
    if values.next().is_some() {
        return Err(GatewayError::Unauthenticated("more than one authorization header; send exactly one".into()));
    }
    if first.is_empty() {
        return Err(GatewayError::Unauthenticated("empty authorization header".into()));
    }
    Ok(Credentials { authorization: first.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_authorization_value_is_required() {
        let mut headers = HeaderMap::new();
        let err = authenticate(&headers).unwrap_err();
        assert!(err.to_string().contains("--user"), "{err}");

        headers.append(http::header::AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
        assert_eq!(authenticate(&headers).unwrap().authorization(), "Basic YTpi");
        assert_eq!(authenticate(&headers).unwrap().user_for_logs(), "a", "the user, never the password");

        headers.append(http::header::AUTHORIZATION, HeaderValue::from_static("Basic Yzpk"));
        assert!(matches!(authenticate(&headers), Err(GatewayError::Unauthenticated(_))));
    }
}
