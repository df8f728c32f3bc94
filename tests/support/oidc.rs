//! A real OpenID Connect provider for the login page's sign-in: zitadel's
//! example server (`$OIDC_PROVIDER`, installed by scripts/install-peers), with
//! its own login form and users from a file the test writes.
//!
//! It listens on every address of its network namespace and cannot be told
//! otherwise, so it runs in a namespace of its own whose one interface is
//! loopback (`unshare --net`), and `netns_relay.py` relays to it from a socket
//! bound here to 127.0.0.1. Its issuer is `http://localhost:<port>/`, the
//! address it names itself by.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::*;

pub struct OidcProvider {
    pub process: ChildGuard,
    pub port: u16,
    // Held open so the port stays ours; the relay accepts on its copy.
    _listener: TcpListener,
}

/// A user of the provider: (user name, password, e-mail).
pub type OidcUser<'a> = (&'a str, &'a str, &'a str);

impl OidcProvider {
    /// Starts the provider with `users`, sending browsers back to `redirect_uri`
    /// (client `web`, secret `secret`: the example's confidential client).
    pub fn start(dir: &Path, redirect_uri: &str, users: &[OidcUser]) -> OidcProvider {
        let binary = find_peer("OIDC_PROVIDER", "server");
        let unshare = find_peer("UNSHARE", "unshare");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let users_file = dir.join(format!("oidc-users-{port}.json"));
        let users: serde_json::Map<String, serde_json::Value> = users
            .iter()
            .enumerate()
            .map(|(i, (name, password, email))| {
                let id = format!("id{i}");
                let user = serde_json::json!({
                    "ID": id, "Username": name, "Password": password, "FirstName": name, "LastName": "Example",
                    "Email": email, "EmailVerified": true, "PreferredLanguage": "en",
                });
                (id, user)
            })
            .collect();
        std::fs::write(&users_file, serde_json::to_vec(&users).unwrap()).unwrap();
        let relay = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/netns_relay.py");
        let log = dir.join(format!("oidc-provider-{port}.log"));
        let mut command = Command::new(unshare);
        command
            .args(["--user", "--map-root-user", "--net", "python3"])
            .arg(relay)
            .arg(port.to_string())
            .arg(binary)
            .env("PORT", port.to_string())
            .env("REDIRECT_URI", redirect_uri)
            .env("USERS_FILE", &users_file)
            .process_group(0);
        let fd = listener.as_raw_fd();
        // SAFETY: between fork and exec only dup2 and fcntl, which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                // dup2 onto itself would leave close-on-exec set.
                let done = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
                match done {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                }
            });
        }
        let child = spawn_logged(command, &log);
        let mut provider = OidcProvider { process: ChildGuard { child, log }, port, _listener: listener };
        provider.wait_until_it_answers();
        provider
    }

    pub fn issuer(&self) -> String {
        format!("http://localhost:{}/", self.port)
    }

    /// Waits for the discovery document (the relay holds early connections
    /// until the provider listens); fails with the log if the provider exits.
    fn wait_until_it_answers(&mut self) {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let answer = std::net::TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut stream| {
                stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
                write!(
                    stream,
                    "GET /.well-known/openid-configuration HTTP/1.0\r\nHost: localhost:{}\r\n\r\n",
                    self.port
                )?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(text)
            });
            if answer.is_ok_and(|text| text.starts_with("HTTP/1.0 200")) {
                return;
            }
            let exited = self.process.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && std::time::Instant::now() < deadline,
                "the OpenID provider did not answer ({exited:?}); log:\n{}",
                self.process.log_so_far()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        // The relay runs the provider as its child: end the whole process group.
        let group = format!("-{}", self.process.pid());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
    }
}
