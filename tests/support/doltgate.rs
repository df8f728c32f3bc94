//! The doltgate binary as a process, and the configuration pieces tests share.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A doltgate process.
pub struct Doltgate {
    pub process: ChildGuard,
    pub port: u16,
}

impl Doltgate {
    /// Starts doltgate in front of `upstream`, logging into `log_dir`.
    pub fn start(log_dir: &Path, upstream: &str, extra_args: &[&str]) -> Doltgate {
        let mut args = vec!["--upstream", upstream];
        args.extend_from_slice(extra_args);
        Doltgate::spawn(log_dir, &args)
    }

    /// Starts doltgate with a configuration file (the listener comes from a flag).
    pub fn start_with_config(log_dir: &Path, config: &Path) -> Doltgate {
        Doltgate::start_with_config_env(log_dir, config, &[])
    }

    /// Like `start_with_config`, with extra environment variables (secrets the config names).
    pub fn start_with_config_env(log_dir: &Path, config: &Path, env: &[(&str, &str)]) -> Doltgate {
        Doltgate::spawn_with_env(log_dir, &["--config", config.to_str().unwrap()], env)
    }

    /// Like `start_with_config_env`, listening on `port`: for configurations
    /// that must name doltgate's own address (an OpenID redirect URL).
    pub fn start_with_config_on(log_dir: &Path, config: &Path, port: u16, env: &[(&str, &str)]) -> Doltgate {
        Doltgate::try_spawn(log_dir, port, &["--config", config.to_str().unwrap()], env)
            .unwrap_or_else(|| panic!("port {port} was taken before doltgate could bind it"))
    }

    fn spawn(log_dir: &Path, args: &[&str]) -> Doltgate {
        Doltgate::spawn_with_env(log_dir, args, &[])
    }

    /// A port asked for free can be taken by another process before doltgate
    /// binds it (tests run in parallel); that one case is retried on a new port.
    fn spawn_with_env(log_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Doltgate {
        (0..5)
            .find_map(|_| Doltgate::try_spawn(log_dir, free_port(), args, env))
            .unwrap_or_else(|| panic!("doltgate could not bind a free port in 5 attempts"))
    }

    /// Starts doltgate on `port`; `None` when another process took the port first.
    fn try_spawn(log_dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Option<Doltgate> {
        let log = log_dir.join(format!("doltgate-{port}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_doltgate"));
        command.args(["--listen", &format!("127.0.0.1:{port}")]).args(args);
        command.env("RUST_LOG", "doltgate=debug,info");
        command.envs(env.iter().copied());
        let mut child = spawn_logged(command, &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        let raced = loop {
            if Instant::now() > deadline {
                break false;
            }
            if TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200)).is_ok()
            {
                break false;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break read_log(&log).contains("Address already in use");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if raced {
            return None;
        }
        wait_for_port(port, &mut child, "doltgate", &log);
        Some(Doltgate { process: ChildGuard { child, log }, port })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Peak resident memory of the doltgate process so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.process.pid(), "VmHWM")
    }

    /// Sends `signal` (`"HUP"`, `"TERM"`, ...) to the doltgate process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([&format!("-{signal}"), &self.process.pid().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} doltgate failed");
    }
}

/// The config for one always-primary server behind doltgate, with the test
/// user as doltgate's service user (password from `$SERVICE_PASSWORD`) and
/// a catch-all route.
pub fn service_cluster_config(server: &DoltServer) -> String {
    format!(
        "[clusters.main]\nendpoints = [{{ name = \"dolt\", remotesapi = \"{}\", sql = \"127.0.0.1:{}\", role = \"primary\" }}]\n\
         sql_user = \"{USER}\"\nsql_password_env = \"SERVICE_PASSWORD\"\n\n[[routes]]\ndatabase_glob = \"*\"\ncluster = \"main\"\n",
        server.remotesapi_addr(),
        server.sql_port
    )
}

/// `doltgate hash-password` for `password`.
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_doltgate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Environment for dolt commands that authenticate as the test user.
pub fn password_env() -> [(&'static str, &'static str); 1] {
    [("DOLT_REMOTE_PASSWORD", PASSWORD)]
}
