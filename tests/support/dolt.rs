//! The real `dolt`: an isolated environment for the CLI, and `dolt sql-server`
//! over a data directory, as the test user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use super::*;

/// The real `dolt` binary, or a test failure that says how to install it.
pub fn dolt_binary() -> PathBuf {
    find_peer("DOLT", "dolt")
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
            // Otherwise each dolt command ends by starting a `dolt send-metrics` that outlives
            // it and writes under $HOME while the test removes it (go/cmd/dolt/dolt.go,
            // flushEventsDir; `metrics.disabled` does not stop it).
            .env("DOLT_DISABLE_EVENT_FLUSH", "1")
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
