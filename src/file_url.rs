//! The table-file URLs doltgate hands to clients, and their way back.
//!
//! The upstream seals every table-file URL with a key only that process holds,
//! so a GET or PUT must reach the very endpoint that issued it. doltgate
//! therefore replaces the scheme and authority of each URL in a response with
//! its own public origin and puts the issuing endpoint's name in front of the
//! upstream path: `{origin}/_doltgate/files/{endpoint}{upstream path}?{query}`.
//! The upstream path and query travel byte for byte, because the upstream
//! checks them against what it sealed.
//!
//! The endpoint segment is where later work puts a signed capability token
//! (binding endpoint, database, principal, read/write and expiry); the routing
//! back stays the same.

use crate::error::GatewayError;

pub const PREFIX: &str = "/_doltgate/files/";

/// Where an incoming table-file request must go.
#[derive(Debug, PartialEq, Eq)]
pub struct FileTarget<'a> {
    /// The configured name of the upstream endpoint that sealed the URL.
    pub endpoint: &'a str,
    /// The upstream's own path and query, exactly as it issued them.
    pub upstream_path_and_query: &'a str,
}

/// Turns a URL issued by `endpoint` into one that leads back through doltgate.
/// `origin` is `scheme://authority` as the client reaches doltgate.
pub fn to_client_url(upstream_url: &str, endpoint: &str, origin: &str) -> Result<String, GatewayError> {
    let after_scheme = upstream_url
        .strip_prefix("http://")
        .or_else(|| upstream_url.strip_prefix("https://"))
        .ok_or_else(|| upstream_url_error(upstream_url, "scheme is not http or https"))?;
    let path_start = after_scheme.find('/').ok_or_else(|| upstream_url_error(upstream_url, "it has no path"))?;
    let path_and_query = &after_scheme[path_start..];
    let mut url = String::with_capacity(origin.len() + PREFIX.len() + endpoint.len() + path_and_query.len());
    url.push_str(origin);
    url.push_str(PREFIX);
    url.push_str(endpoint);
    url.push_str(path_and_query);
    Ok(url)
}

fn upstream_url_error(url: &str, why: &str) -> GatewayError {
    GatewayError::UpstreamFailed {
        address: "(table-file URL)".into(),
        reason: format!("upstream issued a table-file URL doltgate cannot route ({why}): {url:.120}"),
    }
}

/// Reads where a table-file request must go from its path and query.
pub fn from_client_path(path_and_query: &str) -> Result<FileTarget<'_>, GatewayError> {
    let rest = path_and_query
        .strip_prefix(PREFIX)
        .ok_or_else(|| GatewayError::NotAFileUrl(format!("path does not start with {PREFIX}")))?;
    let slash = rest
        .find('/')
        .filter(|&i| i > 0)
        .ok_or_else(|| GatewayError::NotAFileUrl("no upstream endpoint in the path".into()))?;
    Ok(FileTarget { endpoint: &rest[..slash], upstream_path_and_query: &rest[slash..] })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEALED: &str =
        "http://127.0.0.1:4001/single_symmetric_key_sealed_request/db/.dolt/noms/abc?exp=1&nbf=0&nonce=n%2B&req=x_y-z";

    #[test]
    fn url_round_trips_byte_exact() {
        let client = to_client_url(SEALED, "dolt-0", "https://gw.example:8443").unwrap();
        assert_eq!(
            client,
            "https://gw.example:8443/_doltgate/files/dolt-0/single_symmetric_key_sealed_request/db/.dolt/noms/abc?exp=1&nbf=0&nonce=n%2B&req=x_y-z"
        );
        let path = client.strip_prefix("https://gw.example:8443").unwrap();
        let target = from_client_path(path).unwrap();
        assert_eq!(target.endpoint, "dolt-0");
        assert_eq!(
            target.upstream_path_and_query,
            "/single_symmetric_key_sealed_request/db/.dolt/noms/abc?exp=1&nbf=0&nonce=n%2B&req=x_y-z"
        );
    }

    #[test]
    fn foreign_paths_are_refused() {
        for path in ["/single_symmetric_key_sealed_request/db/x", "/_doltgate/files/", "/_doltgate/files//x", "/"] {
            assert!(matches!(from_client_path(path), Err(GatewayError::NotAFileUrl(_))), "{path}");
        }
    }

    #[test]
    fn odd_upstream_urls_are_errors() {
        assert!(to_client_url("ftp://x/y", "e", "http://gw").is_err());
        assert!(to_client_url("http://host-only", "e", "http://gw").is_err());
    }
}
