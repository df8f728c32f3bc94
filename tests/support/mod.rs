//! Test harness: real `dolt` processes and doltgate, each on 127.0.0.1 with
//! ports chosen at run time, each killed when its guard drops (on failure too).
//!
//! Peers come from `$DOLT` (set by `scripts/test`, which installs them), else
//! from `dolt` on PATH. A missing peer fails the test: it is never skipped.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The real `dolt` binary, or a test failure that says how to install it.
pub fn dolt_binary() -> PathBuf {
    find_peer("DOLT", "dolt")
}

/// A peer binary from `$ENV`, else from `PATH`; a failure that says how to install it.
pub fn find_peer(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "${env} points at {}, which does not exist", path.display());
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()));
    on_path.flatten().unwrap_or_else(|| {
        panic!(
            "real peer `{name}` not found: set ${env} or run scripts/install-peers (the README's test command does). \
             Tests with real peers are never skipped."
        )
    })
}

/// Writes `ca.pem` (a test CA) and `tls.crt` / `tls.key` (a certificate for
/// 127.0.0.1 and localhost that it signed) into `dir`.
pub fn write_test_ca(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "doltgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), leaf_key.serialize_pem()).unwrap();
}

/// A port free at the time of asking on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    if let Err(why) = await_port(port, child, what, log) {
        panic!("{why}");
    }
}

/// Waits until `child` listens on `port`; `Err` says why not, its log included.
fn await_port(port: u16, child: &mut Child, what: &str, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status} before listening; log:\n{}", read_log(log)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{what} did not listen on 127.0.0.1:{port} within 60s; log:\n{}", read_log(log)))
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// Kills the process (and waits for it) when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub log: PathBuf,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_logged(mut command: Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    command.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()))
}

/// An isolated place for dolt to keep its global config, with a user set and
/// metrics off so nothing tries to reach the network.
pub struct DoltEnv {
    pub dir: TempDir,
    dolt: PathBuf,
}

impl DoltEnv {
    pub fn new() -> DoltEnv {
        let env = DoltEnv { dir: tempfile::tempdir().unwrap(), dolt: dolt_binary() };
        std::fs::create_dir_all(env.home()).unwrap();
        for (key, value) in
            [("user.name", "doltgate test"), ("user.email", "test@example.com"), ("metrics.disabled", "true")]
        {
            env.ok(env.path(), &["config", "--global", "--add", key, value]);
        }
        env
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&self.dolt);
        command
            .args(args)
            .current_dir(cwd)
            .env("HOME", self.home())
            .env("DOLT_ROOT_PATH", self.home())
            .env("NO_COLOR", "1")
            .env_remove("DOLT_REMOTE_PASSWORD")
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, cwd: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut command = self.command(cwd, args);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        command.output().unwrap_or_else(|e| panic!("cannot run dolt {args:?}: {e}"))
    }

    /// Runs dolt and returns stdout, failing the test with dolt's output if it fails.
    pub fn ok(&self, cwd: &Path, args: &[&str]) -> String {
        self.ok_with(cwd, args, &[])
    }

    pub fn ok_with(&self, cwd: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> String {
        let out = self.run(cwd, args, extra_env);
        assert!(
            out.status.success(),
            "dolt {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs dolt expecting failure; returns stdout + stderr.
    pub fn fails(&self, cwd: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> String {
        let out = self.run(cwd, args, extra_env);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "dolt {args:?} should have failed; output:\n{text}");
        text
    }

    /// Commit hashes of `branch`, newest first.
    pub fn log_hashes(&self, repo: &Path, branch: &str) -> Vec<String> {
        let hashes: Vec<String> = strip_ansi(&self.ok(repo, &["log", "--oneline", branch]))
            .lines()
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect();
        for hash in &hashes {
            let base32 = hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b));
            assert!(base32, "not a commit hash: {hash:?}");
        }
        hashes
    }

    /// Rows of a query as CSV.
    pub fn query_csv(&self, repo: &Path, query: &str) -> String {
        self.ok(repo, &["sql", "-r", "csv", "-q", query])
    }

    /// A database `items (id, name)` with two commits ("first": apple, "second": pear).
    pub fn seed_items_database(&self, db: &Path) {
        self.init_repo(db);
        self.ok(db, &["sql", "-q", "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64));"]);
        self.ok(db, &["sql", "-q", "INSERT INTO items VALUES (1, 'apple');"]);
        self.ok(db, &["commit", "-Am", "first"]);
        self.ok(db, &["sql", "-q", "INSERT INTO items VALUES (2, 'pear');"]);
        self.ok(db, &["commit", "-Am", "second"]);
    }

    /// Creates a database directory with `dolt init`.
    pub fn init_repo(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        self.ok(dir, &["init"]);
    }
}

pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret-pw";

/// `dolt sql-server` with a remotesapi port over a data directory of databases.
pub struct DoltServer {
    pub process: ChildGuard,
    pub sql_port: u16,
    pub remotesapi_port: u16,
    pub data_dir: PathBuf,
}

impl DoltServer {
    /// Creates the SQL user tests push and clone as, with the grants sql-server's
    /// remotesapi wants (CLONE_ADMIN to read, SUPER to write), then starts the server.
    pub fn start(env: &DoltEnv, data_dir: &Path) -> DoltServer {
        let grants = format!(
            "CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT CLONE_ADMIN, SUPER ON *.* TO '{USER}'@'%';"
        );
        env.ok(data_dir, &["sql", "-q", &grants]);
        // A port free when asked can be taken (as some socket's local port)
        // before Dolt binds it on every interface: then try other ports.
        for _ in 0..5 {
            let sql_port = free_port();
            let remotesapi_port = free_port();
            let log = env.path().join(format!("dolt-sql-server-{remotesapi_port}.log"));
            match DoltServer::try_launch(env, data_dir, sql_port, remotesapi_port, &log) {
                Ok(process) => return DoltServer { process, sql_port, remotesapi_port, data_dir: data_dir.to_owned() },
                Err(why) if why.contains("address already in use") => continue,
                Err(why) => panic!("{why}"),
            }
        }
        panic!("dolt sql-server found its ports taken in 5 attempts");
    }

    /// Runs `dolt sql-server` over `data_dir` on the given ports (a restart on
    /// the same ports is the same upstream to doltgate), logging to `log`.
    pub fn launch(env: &DoltEnv, data_dir: &Path, sql_port: u16, remotesapi_port: u16, log: &Path) -> ChildGuard {
        DoltServer::try_launch(env, data_dir, sql_port, remotesapi_port, log).unwrap_or_else(|why| panic!("{why}"))
    }

    fn try_launch(
        env: &DoltEnv,
        data_dir: &Path,
        sql_port: u16,
        remotesapi_port: u16,
        log: &Path,
    ) -> Result<ChildGuard, String> {
        let mut command = env.command(
            data_dir,
            &[
                "sql-server",
                "--host",
                "127.0.0.1",
                "--port",
                &sql_port.to_string(),
                "--remotesapi-port",
                &remotesapi_port.to_string(),
            ],
        );
        command.stdin(Stdio::null());
        let mut child = spawn_logged(command, log);
        // Both ports must be Dolt's: the SQL one is taken first, the remotesapi one last.
        let listening = await_port(sql_port, &mut child, "dolt sql-server", log)
            .and_then(|()| await_port(remotesapi_port, &mut child, "dolt sql-server", log));
        let guard = ChildGuard { child, log: log.to_owned() };
        listening.map(|()| guard)
    }

    /// Starts `dolt sql-server --config <yaml>` (ports come from the YAML); waits
    /// for `remotesapi_port`. Users must already exist in `data_dir`.
    pub fn start_with_config(
        env: &DoltEnv,
        data_dir: &Path,
        yaml: &Path,
        sql_port: u16,
        remotesapi_port: u16,
    ) -> DoltServer {
        let log = env.path().join(format!("dolt-sql-server-{remotesapi_port}.log"));
        let command = env.command(data_dir, &["sql-server", "--config", yaml.to_str().unwrap()]);
        let mut child = spawn_logged(command, &log);
        wait_for_port(remotesapi_port, &mut child, "dolt sql-server", &log);
        DoltServer { process: ChildGuard { child, log }, sql_port, remotesapi_port, data_dir: data_dir.to_owned() }
    }

    /// Creates the test user with every grant (cluster members and role polling need them).
    pub fn create_admin_user(env: &DoltEnv, data_dir: &Path) {
        let grants = format!(
            "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO '{USER}'@'%' WITH GRANT OPTION;"
        );
        env.ok(data_dir, &["sql", "-q", &grants]);
    }

    /// Runs a query over this server's SQL port as the test user; CSV out.
    pub fn sql(&self, env: &DoltEnv, query: &str) -> String {
        let out = self.sql_as(env, USER, PASSWORD, query);
        assert!(out.status.success(), "query {query:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a query over this server's SQL port as `user`, success or not; CSV out.
    pub fn sql_as(&self, env: &DoltEnv, user: &str, password: &str, query: &str) -> Output {
        let port = self.sql_port.to_string();
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            user,
            "--password",
            password,
            "--no-tls",
            "sql",
            "-r",
            "csv",
            "-q",
            query,
        ];
        env.run(env.path(), &args, &[])
    }

    pub fn remotesapi_addr(&self) -> String {
        format!("127.0.0.1:{}", self.remotesapi_port)
    }
}

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

    fn spawn(log_dir: &Path, args: &[&str]) -> Doltgate {
        Doltgate::spawn_with_env(log_dir, args, &[])
    }

    /// A port asked for free can be taken by another process before doltgate
    /// binds it (tests run in parallel); that one case is retried on a new port.
    fn spawn_with_env(log_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Doltgate {
        for _ in 0..5 {
            let port = free_port();
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
                if TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200))
                    .is_ok()
                {
                    break false;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break read_log(&log).contains("Address already in use");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if !raced {
                wait_for_port(port, &mut child, "doltgate", &log);
                return Doltgate { process: ChildGuard { child, log }, port };
            }
        }
        panic!("doltgate could not bind a free port in 5 attempts");
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

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Resident memory of a process now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the process's fd table").count()
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

/// dolt colours `log` output even into a pipe.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for end in chars.by_ref() {
                if end.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn ghz_binary() -> PathBuf {
    let path = std::env::var_os("GHZ").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("ghz"));
    assert!(
        Command::new(&path).arg("--version").output().is_ok_and(|o| o.status.success()),
        "real peer ghz not found at {}: set $GHZ or run scripts/install-peers (never skipped)",
        path.display()
    );
    path
}

/// Runs the real ghz (authenticated as the test user) and returns
/// (OK responses, total responses, requests per second).
pub fn ghz(target: &str, call: &str, data: &str, load: &[&str]) -> (u64, u64, f64) {
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{PASSWORD}"));
    ghz_as(&format!("Basic {auth}"), target, call, data, load)
}

/// Like [`ghz`], sending `authorization` as given.
pub fn ghz_as(authorization: &str, target: &str, call: &str, data: &str, load: &[&str]) -> (u64, u64, f64) {
    ghz_with_metadata(&[("authorization", authorization)], target, call, data, load)
}

/// Like [`ghz_as`], with the call's metadata (headers) given pair by pair.
pub fn ghz_with_metadata(
    metadata: &[(&str, &str)],
    target: &str,
    call: &str,
    data: &str,
    load: &[&str],
) -> (u64, u64, f64) {
    let metadata = serde_json::Value::Object(
        metadata.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect(),
    );
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/dolt/services/remotesapi/v1alpha1/chunkstore.proto");
    let imports = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let out = Command::new(ghz_binary())
        .args(["--insecure", "--proto", proto, "--import-paths", imports])
        .args(["--call", &format!("dolt.services.remotesapi.v1alpha1.ChunkStoreService/{call}")])
        .args(["-d", data, "-m", &metadata.to_string()])
        .args(load)
        .args(["--format", "json", target])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() || !text.is_empty(), "ghz failed: {}", String::from_utf8_lossy(&out.stderr));
    let number = |key: &str| -> f64 {
        let at = text.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in ghz output: {text}"));
        let rest = &text[at + key.len() + 3..];
        rest[..rest.find([',', '}']).unwrap()].trim().parse().unwrap()
    };
    let ok = text.find("\"statusCodeDistribution\":{\"OK\":").map(|at| {
        let rest = &text[at + "\"statusCodeDistribution\":{\"OK\":".len()..];
        rest[..rest.find([',', '}']).unwrap()].parse::<u64>().unwrap()
    });
    (ok.unwrap_or(0), number("count") as u64, number("rps"))
}

/// Writes `rows` rows of `id,payload` with incompressible payloads of
/// `payload_bytes` (a fixed-seed generator: every run has the same data).
pub fn write_csv(path: &Path, rows: usize, payload_bytes: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    writeln!(out, "id,payload").unwrap();
    let mut payload = vec![0u8; payload_bytes];
    for id in 0..rows {
        for byte in payload.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = alphabet[(state % alphabet.len() as u64) as usize];
        }
        writeln!(out, "{id},{}", std::str::from_utf8(&payload).unwrap()).unwrap();
    }
}

/// GET over plain HTTP/1.0; returns (status, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Parses the text exposition strictly: every line is a HELP, a TYPE, or a
/// sample `name{labels} value`; returns samples keyed by `name{labels}`.
pub fn parse_exposition(text: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels in {line:?}");
            for pair in series[name_end + 1..series.len() - 1].split(',').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad label name in {line:?}");
                assert!(value.starts_with('"') && value.ends_with('"'), "unquoted label value in {line:?}");
            }
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

pub fn scrape(port: u16) -> std::collections::HashMap<String, f64> {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    parse_exposition(&body)
}

/// Sum of every sample of `name` whose labels include all of `labels`.
pub fn total(samples: &std::collections::HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .filter(|(series, _)| labels.iter().all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, value)| value)
        .sum()
}
