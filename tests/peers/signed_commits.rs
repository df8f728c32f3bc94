//! `signed_commits` on a branch rule, with the real `dolt commit -S` (which
//! signs with the real gpg) pushing through doltgate to a real sql-server:
//!
//! - an unsigned commit, and a commit signed by a key not configured for its
//!   author, are refused naming the commit and the rule;
//! - a commit signed by the author's configured key goes through;
//! - that valid signature copied onto another commit (other contents, or the
//!   same contents on another parent) is refused: Dolt's signed text does not
//!   name the commit, so doltgate binds it to the commit's root value, its
//!   parent's root value, message and author.
//!
//! Every refused push leaves `main` where it was (checked over SQL).

use std::path::{Path, PathBuf};

use crate::integrity::{refused, Setup, MAINTAINER};
use crate::support::*;
use doltgate::storage::ancestry::closure_keys_from;
use doltgate::storage::build::{self, Value};
use doltgate::storage::message::ClosureKey;
use doltgate::storage::{Address, DirectorySource};
use tonic::Code;

const RULE: &str = "signed-main";

fn config(ann_key: &Path) -> String {
    format!(
        r#"
[[auth.push_rules]]
name = "{RULE}"
databases = ["shop"]
branches = ["main"]
users = ["{maintainer}"]
allow = ["fast_forward"]
signed_commits = true

[[auth.signing_keys]]
emails = ["ann@example.com"]
public_key_file = "{key}"
"#,
        maintainer = MAINTAINER.0,
        key = ann_key.display()
    )
}

struct Signing<'s> {
    s: &'s Setup,
    gpg: &'s GpgHome,
    repo: PathBuf,
}

impl Signing<'_> {
    fn remote_env(&self) -> [(&str, &str); 2] {
        [("DOLT_REMOTE_PASSWORD", MAINTAINER.1), self.gpg.env()[0]]
    }

    /// Changes a row and commits as Ann, signed with `key` (a fingerprint) or unsigned.
    fn commit(&self, id: u32, key: Option<&str>) {
        self.s.env.ok(&self.repo, &["sql", "-q", &format!("REPLACE INTO items VALUES ({id}, 'signed {id}')")]);
        let sign = key.map(|fingerprint| format!("--gpg-sign={fingerprint}"));
        let mut args = vec!["commit", "-am", "change a row"];
        args.extend(sign.as_deref());
        self.s.env.ok_with(&self.repo, &args, &self.gpg.env());
    }

    fn push(&self) -> std::process::Output {
        self.s.env.run(&self.repo, &["push", "--user", MAINTAINER.0, "origin", "main"], &self.remote_env())
    }

    fn head(&self) -> String {
        self.s.env.log_hashes(&self.repo, "HEAD")[0].clone()
    }

    fn refused(&self, needles: &[&str]) {
        let before = self.s.main_head();
        let out = self.push();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "the push should have been refused:\n{text}");
        for needle in needles {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
        assert_eq!(self.s.main_head(), before, "a refused push left main where it was");
        self.s.env.ok(&self.repo, &["reset", "--hard", "HEAD~1"]);
    }
}

#[test]
fn only_commits_signed_for_themselves_by_their_authors_key_reach_a_signed_branch() {
    let gpg = GpgHome::new();
    let ann = gpg.generate("Ann", "ann@example.com");
    let eve = gpg.generate("Eve", "eve@example.com");
    let s = Setup::with_config(&config(&gpg.export(&ann)));
    let repo = s.env.path().join("clone-mia");
    let url = format!("http://127.0.0.1:{}/shop", s.gateway.port);
    s.env.ok_with(
        s.env.path(),
        &["clone", "--user", MAINTAINER.0, &url, repo.to_str().unwrap()],
        &[("DOLT_REMOTE_PASSWORD", MAINTAINER.1)],
    );
    for (key, value) in [("user.name", "Ann"), ("user.email", "ann@example.com")] {
        s.env.ok(&repo, &["config", "--local", "--add", key, value]);
    }
    let signing = Signing { s: &s, gpg: &gpg, repo };

    signing.commit(60, None);
    signing.refused(&["signed commits: commit", "is not signed", RULE]);

    signing.commit(61, Some(&eve));
    signing.refused(&["is not signed by a key configured for ann@example.com", RULE]);

    signing.commit(62, Some(&ann));
    let out = signing.push();
    assert!(out.status.success(), "a signed commit: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.main_head(), signing.head(), "main took the signed commit");

    copied_signatures_are_refused(&s);
}

/// The commit `main` now has, signed, and its signature put on two others:
/// one that reverts its change, one that repeats it on top of it.
fn copied_signatures_are_refused(s: &Setup) {
    let f = s.forgery();
    let signed = &f.head_commit;
    assert!(signed.signature.contains("BEGIN PGP SIGNED MESSAGE"), "dolt stored a signature: {signed:?}");
    let store = DirectorySource::open(&s.noms()).unwrap();
    let everything = ClosureKey { height: 0, commit: Address::EMPTY };
    let closure_root = signed.parent_closure.expect("the signed commit has ancestors");
    let mut keys = s.runtime.block_on(closure_keys_from(&store, &closure_root, &everything, usize::MAX)).unwrap();
    keys.push(ClosureKey { height: signed.height, commit: f.head });
    keys.sort();
    let closure = build::closure_node(0, &keys, &[]);
    let copy_onto = |root: Address| {
        let parents = f.head.0;
        build::message(
            "DCMT",
            &[
                (4, Value::Bytes(&root.0)),
                (6, Value::U64(signed.height + 1)),
                (8, Value::Bytes(&parents)),
                (10, Value::Bytes(&Address::of(&closure).0)),
                (12, Value::Bytes(signed.name.as_bytes())),
                (14, Value::Bytes(signed.email.as_bytes())),
                (16, Value::Bytes(signed.description.as_bytes())),
                (22, Value::Bytes(signed.signature.as_bytes())),
            ],
        )
    };
    let signed_root = signed.root.expect("a root value");
    let parent_root = f.parent_commit.root.expect("a root value");
    let cases = [
        (copy_onto(parent_root), format!("was made for root value {signed_root}, not this commit's {parent_root}")),
        (
            copy_onto(signed_root),
            format!("was made on top of root value {parent_root}, not its parent's {signed_root}"),
        ),
    ];
    for (commit, reason) in cases {
        let address = Address::of(&commit);
        let root = f.root_with(&[("refs/heads/main", Some(address))]);
        let file = s.upload_chunks(MAINTAINER, &[commit, closure.clone(), root.clone()]);
        refused(
            s.commit_root(MAINTAINER, &f, &root, &file),
            Code::PermissionDenied,
            &format!("signed commits: the signature on commit {address} {reason}"),
        );
        assert_eq!(s.main_head(), f.head.to_string(), "main kept its signed head");
    }
}
