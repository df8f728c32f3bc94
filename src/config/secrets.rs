//! The secrets a configuration names — passwords and keys, given inline, by
//! environment variable or by file — and the one place they are read.
//!
//! Building a gateway reads them ([`Secrets::read`]); `check-config` builds
//! with [`Secrets::named_only`], which checks that each secret is named in one
//! way only, not that this machine holds it (a config is often checked where
//! it is written, not where it runs).

use std::path::Path;

use super::{invalid, ConfigError};

/// Where one secret comes from, under the key that names it.
#[derive(Debug, Clone, Copy)]
pub enum SecretSource<'a> {
    Inline(&'a str),
    Env(&'a str),
    File(&'a Path),
}

#[derive(Debug, Clone, Copy)]
pub struct Secrets {
    read: bool,
}

/// What [`Secrets::named_only`] hands out in place of a secret: long enough
/// for every key-length check, and never a usable credential.
const PLACEHOLDER: &[u8] = b"(secret named; not read by check-config)";

impl Secrets {
    pub fn read() -> Secrets {
        Secrets { read: true }
    }

    pub fn named_only() -> Secrets {
        Secrets { read: false }
    }

    /// The value of the one source set among `candidates` (key, source), or
    /// `None` when none is. Two set is an error naming the first key.
    pub fn one_of(&self, candidates: &[(String, Option<SecretSource<'_>>)]) -> Result<Option<Vec<u8>>, ConfigError> {
        let mut set = candidates.iter().filter_map(|(key, source)| source.map(|s| (key, s)));
        let Some((key, source)) = set.next() else { return Ok(None) };
        if set.next().is_some() {
            let names: Vec<&str> =
                candidates.iter().map(|(k, _)| k.rsplit('.').next().unwrap_or(k)).collect::<Vec<_>>();
            return Err(invalid(key, format!("set at most one of {}", names.join(", "))));
        }
        self.value(key, source).map(Some)
    }

    fn value(&self, key: &str, source: SecretSource<'_>) -> Result<Vec<u8>, ConfigError> {
        match source {
            SecretSource::Inline(text) => Ok(text.as_bytes().to_vec()),
            _ if !self.read => Ok(PLACEHOLDER.to_vec()),
            SecretSource::Env(var) => std::env::var(var)
                .map(String::into_bytes)
                .map_err(|_| invalid(key, format!("environment variable {var} is not set"))),
            SecretSource::File(path) => {
                let bytes =
                    std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
                // Files written by editors and `echo` end in a newline that is not part of the secret.
                Ok(bytes.trim_ascii_end().to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn one_source_at_most_and_missing_ones_named() {
        let read = Secrets::read();
        assert_eq!(read.one_of(&[("a.secret".into(), None)]).unwrap(), None);
        let inline = [("a.secret".into(), Some(SecretSource::Inline("pw"))), ("a.secret_env".into(), None)];
        assert_eq!(read.one_of(&inline).unwrap().unwrap(), b"pw");
        let both = [
            ("a.secret".into(), Some(SecretSource::Inline("pw"))),
            ("a.secret_env".into(), Some(SecretSource::Env("X"))),
        ];
        assert_eq!(key_of(read.one_of(&both).unwrap_err()), "a.secret");
        let unset = [("a.secret_env".into(), Some(SecretSource::Env("DOLTGATE_TEST_SURELY_UNSET")))];
        assert_eq!(key_of(read.one_of(&unset).unwrap_err()), "a.secret_env");
        assert!(Secrets::named_only().one_of(&unset).unwrap().is_some(), "check-config only needs the name");
    }
}
