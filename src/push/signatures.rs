//! Signed commits: whether a commit carries a valid `dolt commit -S`
//! signature from a key trusted for its author, made for that very commit.
//!
//! Dolt clear-signs, with the gpg CLI, a text of seven lines and stores the
//! armored result in the commit's `signature` field
//! (`go/libraries/doltcore/sqle/dprocedures/dolt_commit.go`
//! `commitSignatureStr`):
//!
//! ```text
//! db: <database>
//! Message: <message>
//! Name: <author name>
//! Email: <author e-mail>
//! Date: <time of the commit>
//! Head: <root value of HEAD when committing>
//! Staged: <staged root value, which becomes the commit's root>
//! ```
//!
//! The text does not name the commit, so a valid signature could be copied
//! onto any other commit. It is bound here instead: `Staged` must be the
//! commit's root value, `Head` its first parent's root value, and message,
//! name and e-mail the commit's own. The database line is not compared (a
//! clone may live under another name), nor the date.

use std::collections::HashMap;
use std::sync::Arc;

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};

use crate::config::auth::SigningKeyConfig;
use crate::config::{invalid, ConfigError};
use crate::storage::message::Commit;
use crate::storage::Address;

/// The keys trusted to sign commits, by lower-cased author e-mail.
#[derive(Debug, Default)]
pub struct Signers {
    by_email: HashMap<String, Vec<Arc<SignedPublicKey>>>,
}

impl Signers {
    pub fn build(keys: &[SigningKeyConfig]) -> Result<Signers, ConfigError> {
        let mut signers = Signers::default();
        for (i, config) in keys.iter().enumerate() {
            let key = format!("auth.signing_keys[{i}]");
            if config.emails.is_empty() {
                return Err(invalid(format!("{key}.emails"), "name the author e-mails this key signs for"));
            }
            let file_key = format!("{key}.public_key_file");
            let armored = std::fs::read_to_string(&config.public_key_file)
                .map_err(|e| invalid(&file_key, format!("{}: {e}", config.public_key_file.display())))?;
            let keys = read_public_keys(&armored).map_err(|reason| invalid(&file_key, reason))?;
            for email in &config.emails {
                signers.by_email.entry(email.to_lowercase()).or_default().extend(keys.iter().cloned());
            }
        }
        Ok(signers)
    }

    pub fn is_empty(&self) -> bool {
        self.by_email.is_empty()
    }

    /// What is wrong with the signature of `commit` (at `address`), if
    /// anything; `head_root` is its first parent's root value.
    pub fn problem(&self, address: &Address, commit: &Commit, head_root: Option<&Address>) -> Option<String> {
        if commit.signature.is_empty() {
            return Some(format!("commit {address} is not signed"));
        }
        let Ok((message, _)) = CleartextSignedMessage::from_string(&commit.signature) else {
            return Some(format!("the signature of commit {address} is not an OpenPGP clear-signed text"));
        };
        let email = crate::authn::shown(&commit.email);
        let keys = self.by_email.get(&commit.email.to_lowercase()).map(Vec::as_slice).unwrap_or_default();
        if keys.is_empty() {
            return Some(format!("no signing key is configured for {email}, the author of commit {address}"));
        }
        if !keys.iter().any(|key| signed_by(&message, key)) {
            return Some(format!("commit {address} is not signed by a key configured for {email}"));
        }
        let text = message.signed_text().replace("\r\n", "\n");
        binding_problem(&text, commit, head_root).map(|why| format!("the signature on commit {address} {why}"))
    }
}

fn read_public_keys(armored: &str) -> Result<Vec<Arc<SignedPublicKey>>, String> {
    let (keys, _) = SignedPublicKey::from_string_many(armored).map_err(|e| format!("not armored public keys: {e}"))?;
    let mut read = Vec::new();
    for key in keys {
        let key = key.map_err(|e| format!("not a public key: {e}"))?;
        key.verify_bindings().map_err(|e| format!("a key's self-signatures do not verify: {e}"))?;
        read.push(Arc::new(key));
    }
    if read.is_empty() {
        return Err("holds no public key".into());
    }
    Ok(read)
}

/// Whether the primary key, or a subkey it has bound, made a signature of `message`.
fn signed_by(message: &CleartextSignedMessage, key: &SignedPublicKey) -> bool {
    message.verify(key).is_ok()
        || key
            .public_subkeys
            .iter()
            .any(|subkey| subkey.verify_bindings(&key.primary_key).is_ok() && message.verify(&subkey.key).is_ok())
}

/// The fields of Dolt's signed text that bind it to a commit.
#[derive(Debug, PartialEq, Eq)]
struct SignedText<'t> {
    message: &'t str,
    name: &'t str,
    email: &'t str,
    head: &'t str,
    staged: &'t str,
}

/// Reads the fixed lines from the end, since only the message may span lines.
fn parse_signed_text(text: &str) -> Option<SignedText<'_>> {
    let mut rest = text.trim_end_matches('\n');
    let mut last = |label: &str| {
        let (before, line) = rest.rsplit_once('\n')?;
        rest = before;
        line.strip_prefix(label)
    };
    let staged = last("Staged: ")?;
    let head = last("Head: ")?;
    last("Date: ")?;
    let email = last("Email: ")?;
    let name = last("Name: ")?;
    let (db, message) = rest.split_once('\n')?;
    db.strip_prefix("db: ")?;
    Some(SignedText { message: message.strip_prefix("Message: ")?, name, email, head, staged })
}

/// Why the signed `text` is not about `commit`, if it is not.
fn binding_problem(text: &str, commit: &Commit, head_root: Option<&Address>) -> Option<String> {
    let Some(signed) = parse_signed_text(text) else {
        return Some("does not sign the text dolt commit -S signs".into());
    };
    let root = commit.root.map(|r| r.to_string()).unwrap_or_default();
    if signed.staged != root {
        return Some(format!("was made for root value {}, not this commit's {root}", signed.staged));
    }
    let head = head_root.map(ToString::to_string).unwrap_or_default();
    if signed.head != head {
        return Some(format!("was made on top of root value {}, not its parent's {head}", signed.head));
    }
    // The clear-sign format drops trailing spaces from every line.
    let same = |signed: &str, stored: &str| signed.lines().map(str::trim_end).eq(stored.lines().map(str::trim_end));
    if !same(signed.message, &commit.description) {
        return Some("was made for another message".into());
    }
    if !same(signed.name, &commit.name) || !same(signed.email, &commit.email) {
        return Some("was made for another author".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> Address {
        Address([n; 20])
    }

    fn text(message: &str, head: Address, staged: Address) -> String {
        format!(
            "db: shop\nMessage: {message}\nName: Ann\nEmail: ann@example.com\nDate: 2026-12-02 01:28:01.5 +0000 UTC m=+0.1\nHead: {head}\nStaged: {staged}"
        )
    }

    fn commit(message: &str, root: Address) -> Commit {
        Commit {
            root: Some(root),
            height: 2,
            parents: vec![a(9)],
            parent_closure: None,
            name: "Ann".into(),
            email: "ann@example.com".into(),
            description: message.into(),
            signature: String::new(),
        }
    }

    #[test]
    fn reads_dolts_signed_text_with_a_message_of_many_lines() {
        let t = text("fix: prices\n\nDetails: here", a(1), a(2));
        let signed = parse_signed_text(&t).unwrap();
        assert_eq!(signed.message, "fix: prices\n\nDetails: here");
        assert_eq!((signed.name, signed.email), ("Ann", "ann@example.com"));
        assert_eq!((signed.head, signed.staged), (a(1).to_string().as_str(), a(2).to_string().as_str()));
        assert!(parse_signed_text("Message: x\nName: a").is_none());
        assert!(parse_signed_text(&t.replace("db: ", "database: ")).is_none());
    }

    #[test]
    fn binds_the_signature_to_root_parent_message_and_author() {
        let t = text("add prices  ", a(1), a(2));
        assert_eq!(binding_problem(&t, &commit("add prices", a(2)), Some(&a(1))), None);
        let other_root = binding_problem(&t, &commit("add prices", a(3)), Some(&a(1))).unwrap();
        assert!(other_root.contains("not this commit's"), "{other_root}");
        let other_parent = binding_problem(&t, &commit("add prices", a(2)), Some(&a(4))).unwrap();
        assert!(other_parent.contains("not its parent's"), "{other_parent}");
        assert!(binding_problem(&t, &commit("drop prices", a(2)), Some(&a(1))).unwrap().contains("another message"));
        let mut renamed = commit("add prices", a(2));
        renamed.email = "eve@example.com".into();
        assert!(binding_problem(&t, &renamed, Some(&a(1))).unwrap().contains("another author"));
        assert!(binding_problem("hello", &commit("x", a(2)), None).unwrap().contains("dolt commit -S"));
    }

    #[test]
    fn unsigned_and_garbled_signatures_and_unknown_authors_are_problems() {
        let signers = Signers::default();
        let mut c = commit("x", a(2));
        assert!(signers.problem(&a(5), &c, Some(&a(1))).unwrap().contains("is not signed"));
        c.signature = "-----BEGIN PGP SIGNED MESSAGE-----\ngarbage".into();
        assert!(signers.problem(&a(5), &c, Some(&a(1))).unwrap().contains("not an OpenPGP clear-signed text"));
    }
}
