//! Credentials as clients send them: the `authorization` (or token) headers
//! of a request, read into one credential, its Basic or Bearer form, the
//! unverified issuer of a JWT, and a Dolt client-key token checked against a
//! registered key. Never a panic, never a verdict of success for a token no
//! registered key signed, never a password in what is logged.
//!
//! Input: up to four header values separated by `\n`; a value starting with
//! `T:` goes in the configured token header instead of `authorization`.
#![no_main]

use doltgate::authn::dolt_keys::DoltKeys;
use doltgate::authn::{jwt, read_credential, Presented};
use doltgate::config::auth::UserConfig;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// A syntactically valid Dolt public key (52 base32 characters) nobody holds the private half of.
const REGISTERED: &str = "0123456789abcdefghijklmnopqrstuv0123456789abcdefghi0";

fuzz_target!(|data: &[u8]| {
    let token_header = HeaderName::from_static("x-doltgate-token");
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(4) {
        let (name, value) = match line.strip_prefix(b"T:") {
            Some(value) => (token_header.clone(), value),
            None => (http::header::AUTHORIZATION, line),
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    for configured in [None, Some(&token_header)] {
        let Ok(credential) = read_credential(&headers, configured) else { continue };
        let for_logs = credential.user_for_logs();
        match credential.presented() {
            Ok(Presented::Basic { user, password }) => {
                assert!(!user.is_empty());
                assert_eq!(
                    for_logs,
                    doltgate::authn::shown(&user),
                    "logs name the user (escaped, bounded) and nothing else"
                );
                assert!(!for_logs.contains('\n'), "no log line can be forged");
                let _ = password;
            }
            Ok(Presented::Bearer(token)) => {
                assert_eq!(for_logs, "bearer", "a token never reaches the logs");
                let _ = jwt::unverified_issuer(token);
                if let Ok(header) = jsonwebtoken::decode_header(token) {
                    // No key directory: the future never waits, so polling it once settles it.
                    let verdict = keys().verify(token, &header, None);
                    let result = futures_executor::block_on(verdict);
                    assert!(result.is_err(), "a token no one could sign was accepted: {token:?}");
                }
            }
            Err(_) => assert_eq!(for_logs, "malformed"),
        }
    }
});

fn keys() -> &'static DoltKeys {
    static KEYS: std::sync::OnceLock<DoltKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let user =
            UserConfig { name: "dana".into(), password_hash: None, dolt_keys: vec![REGISTERED.into()], groups: vec![] };
        DoltKeys::build(&[user], &["127.0.0.1".into()]).expect("a valid key")
    })
}
