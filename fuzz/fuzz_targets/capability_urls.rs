//! doltgate's signed table-file URLs: any path a client sends is refused or
//! opened without a panic, only a URL doltgate sealed opens, and a URL it
//! sealed opens with the same capability and the upstream path byte for byte.
//!
//! Input: one byte of flags (bit 0: the request is a write), then text used
//! both as a client path to open and as an upstream URL to seal.
#![no_main]

use std::time::Duration;

use doltgate::error::GatewayError;
use doltgate::file_url::{CapabilityGrant, UrlSigner, PREFIX};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-fuzz";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let write = flags & 1 == 1;
    let signer = UrlSigner::new(KEY, Duration::from_secs(600)).expect("key long enough");
    // A client path nobody sealed: refused, unless the fuzzer forged an HMAC (it cannot).
    if let Ok(target) = signer.open(text, write) {
        panic!("an unsealed path opened: {text:?} -> {target:?}");
    }
    // An upstream URL sealed and opened again.
    let grant = CapabilityGrant { endpoint: "dolt-0", database: "db", principal: "alice", write };
    let Ok(url) = signer.to_client_url(text, &grant, "http://gw:1") else { return };
    let path = url.strip_prefix("http://gw:1").expect("our origin");
    assert!(path.starts_with(PREFIX));
    match signer.open(path, write) {
        Ok(target) => {
            assert!(text.ends_with(target.upstream_path_and_query), "upstream path changed: {text:?} -> {target:?}");
            let capability = target.capability;
            assert_eq!((capability.endpoint.as_str(), capability.database.as_str()), ("dolt-0", "db"));
            assert_eq!((capability.principal.as_str(), capability.write), ("alice", write));
        }
        // The upstream's own `exp` may already be past.
        Err(GatewayError::FileUrlRefused(reason)) if reason.contains("expired") => {}
        Err(other) => panic!("a sealed URL did not open: {path:?}: {other}"),
    }
    assert!(signer.open(path, !write).is_err(), "a read URL works for writes or the reverse");
    let other = UrlSigner::new(b"another key, also 32 bytes or longer", Duration::from_secs(600)).unwrap();
    assert!(other.open(path, write).is_err(), "another key accepted the URL");
});
