//! What the edge cache reads from a request: the sealed path that names a
//! file, and the `Range` header. Neither panics; a key names a content-derived
//! file under a plain path (never the journal, never `.`/`..`/empty segments),
//! and a range is first <= last.
#![no_main]

use doltgate::cache::{cache_key, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        if let Some((first, last)) = parse_range(&value) {
            assert!(first <= last);
            assert!(data.starts_with(b"bytes="));
        }
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    for path in [text.to_owned(), format!("/single_symmetric_key_sealed_request/{text}")] {
        if let Some(key) = cache_key("c", &path) {
            assert!(!key.store.is_empty());
            assert!(key.store.split('/').all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('%')));
            assert_ne!(key.name.name, doltgate::storage::Address([0xff; 20]), "the journal is never cached");
        }
    }
});
