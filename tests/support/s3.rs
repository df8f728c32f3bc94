//! The real versitygw S3 server (POSIX backend) on 127.0.0.1, for the edge
//! cache's shared tier. Its bucket is a directory under its root, so tests can
//! read and damage objects directly.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

pub const S3_ACCESS_KEY: &str = "doltgate-test-access";
pub const S3_SECRET_KEY: &str = "doltgate-test-secret-key";
pub const S3_BUCKET: &str = "edge-cache";

pub struct S3Server {
    pub process: ChildGuard,
    pub port: u16,
    pub root: PathBuf,
}

impl S3Server {
    pub fn start(dir: &Path) -> S3Server {
        let binary = find_peer("VERSITYGW", "versitygw");
        let root = dir.join("s3-root");
        std::fs::create_dir_all(root.join(S3_BUCKET)).unwrap();
        let port = free_port();
        let log = dir.join(format!("versitygw-{port}.log"));
        let mut command = Command::new(binary);
        command
            .args(["--port", &format!("127.0.0.1:{port}"), "--access", S3_ACCESS_KEY, "--secret", S3_SECRET_KEY])
            .args(["--quiet", "posix"])
            .arg(&root);
        let mut child = spawn_logged(command, &log);
        wait_for_port(port, &mut child, "versitygw", &log);
        S3Server { process: ChildGuard { child, log }, port, root }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[cache.shared]` section for this server; keys come from the environment ([`s3_env`]).
    pub fn shared_tier_config(&self, prefix: &str) -> String {
        format!(
            "[cache.shared]\nendpoint = \"{}\"\nbucket = \"{S3_BUCKET}\"\nprefix = \"{prefix}\"\n\
             access_key_id_env = \"S3_ACCESS_KEY\"\nsecret_access_key_env = \"S3_SECRET_KEY\"\n",
            self.endpoint()
        )
    }

    /// Every stored object named `name` (its file in the bucket's directory).
    pub fn objects_named(&self, name: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    walk(&path, name, found);
                } else if entry.file_name() == name {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.root.join(S3_BUCKET), name, &mut found);
        found
    }
}

/// The environment a doltgate using [`S3Server::shared_tier_config`] needs.
pub fn s3_env() -> [(&'static str, &'static str); 2] {
    [("S3_ACCESS_KEY", S3_ACCESS_KEY), ("S3_SECRET_KEY", S3_SECRET_KEY)]
}
