//! The real `gpg`, which `dolt commit -S` signs with: a keyring of its own
//! in a temporary directory, its agent stopped when the guard drops.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use super::*;

pub struct GpgHome {
    dir: TempDir,
    gpg: PathBuf,
}

impl GpgHome {
    pub fn new() -> GpgHome {
        let dir = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
        let home = GpgHome { dir, gpg: find_peer("GPG", "gpg") };
        std::fs::set_permissions(home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// What dolt needs in its environment to sign with this keyring.
    pub fn env(&self) -> [(&str, &str); 1] {
        [("GNUPGHOME", self.path().to_str().expect("a UTF-8 temporary path"))]
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.gpg)
            .env("GNUPGHOME", self.path())
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run gpg {args:?}: {e}"));
        assert!(out.status.success(), "gpg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// A new signing key for `Name <email>`, without passphrase; its fingerprint.
    pub fn generate(&self, name: &str, email: &str) -> String {
        self.run(&["--quick-gen-key", &format!("{name} <{email}>"), "ed25519", "sign", "never"]);
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", email]).stdout).unwrap();
        let fingerprint = listing.lines().find_map(|line| line.strip_prefix("fpr:")).expect("a fingerprint");
        fingerprint.trim_matches(':').to_owned()
    }

    /// The armored public key of `fingerprint`, written to a file; its path.
    pub fn export(&self, fingerprint: &str) -> PathBuf {
        let armored = self.run(&["--armor", "--export", fingerprint]).stdout;
        let path = self.path().join(format!("{fingerprint}.asc"));
        std::fs::write(&path, armored).unwrap();
        path
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let gpgconf = self.gpg.with_file_name("gpgconf");
        let _ = Command::new(gpgconf).env("GNUPGHOME", self.path()).args(["--kill", "all"]).output();
    }
}
