//! The `doltgate` command: run the gateway, check a configuration file, or
//! hash a password for the configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use doltgate::config::{Config, LogFormat, UpstreamConfig};
use doltgate::Server;

#[derive(Parser, Debug, Clone)]
#[command(name = "doltgate", version, about = "A protocol-aware reverse proxy for Dolt remotes")]
struct Cli {
    /// Configuration file (TOML). Flags override what it says.
    #[arg(long, short = 'c', global = true, env = "DOLTGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Address for gRPC and table-file traffic, e.g. 0.0.0.0:50051.
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// The Dolt remotesapi endpoint (`dolt sql-server --remotesapi-port`), host:port.
    #[arg(long, global = true)]
    upstream: Option<String>,
    /// Address for /metrics, /healthz and /readyz, e.g. 127.0.0.1:9090.
    #[arg(long, global = true)]
    admin: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate a configuration file (and any flags) and exit: 0 when valid.
    CheckConfig {
        /// The file to check; defaults to --config.
        file: Option<PathBuf>,
    },
    /// Read a password from standard input (its first line) and print the
    /// Argon2 hash to put in `[[auth.users]] password_hash`.
    HashPassword,
    /// Print the verdict push rules give one ref change and the rule that
    /// decided it: exit 0 when allowed, 1 when refused, 2 on a bad question.
    Explain {
        /// The pusher's name, as doltgate knows it (`corp-sso:ann` for a JWT user).
        #[arg(long)]
        user: String,
        /// A group of the pusher's (repeatable); a listed user's configured groups count too.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The database as a client names it in its remote URL.
        #[arg(long)]
        database: String,
        /// `refs/heads/main`, `refs/tags/v1`, `workingSets/heads/main`, or a bare branch name.
        #[arg(long = "ref")]
        reference: String,
        /// create, fast_forward, force, delete or move.
        #[arg(long)]
        op: doltgate::config::auth::PushOp,
        /// Also judge a change to this table on the branch (table rules); needs --change.
        #[arg(long, requires = "change")]
        table: Option<String>,
        /// data or schema: the kind of change to --table.
        #[arg(long, requires = "table")]
        change: Option<doltgate::config::auth::TableChangeKind>,
    },
    /// Keys registered through `[login]` (`dolt login` against doltgate).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// The edge cache's directory (`[cache] dir`, or --dir).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// The cache directory; defaults to `[cache] dir` of --config.
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug, Clone)]
enum CacheAction {
    /// Files and bytes cached, by cluster and database directory.
    Stats,
    /// Remove every cached file. A running doltgate refetches what it needs.
    Purge,
}

#[derive(Subcommand, Debug, Clone)]
enum KeysAction {
    /// Every registered key: id, user, when registered, when revoked.
    List,
    /// Revoke a key by its id; replicas refuse it within `login.cache_ttl`.
    Revoke { key_id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { ref file }) => check_config(&cli, file.clone().or(cli.config.clone())),
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Keys { ref action }) => keys(&cli, action),
        Some(Command::Cache { ref action, ref dir }) => cache(&cli, action, dir.clone()),
        Some(Command::Explain { ref user, ref groups, ref database, ref reference, op, ref table, change }) => {
            let question = doltgate::push::explain::Question {
                user: user.clone(),
                groups: groups.clone(),
                database: database.clone(),
                reference: reference.clone(),
                op,
                table: table.clone().zip(change),
            };
            explain(&cli, &question)
        }
        Some(Command::Run) | None => run(&cli),
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(err) = std::io::stdin().read_line(&mut line) {
        eprintln!("cannot read the password from standard input: {err}");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("empty password: pipe it in, e.g. `printf %s \"$PW\" | doltgate hash-password`");
        return ExitCode::from(2);
    }
    match doltgate::authn::password::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("cannot hash: {err}");
            ExitCode::FAILURE
        }
    }
}

fn cache(cli: &Cli, action: &CacheAction, dir: Option<PathBuf>) -> ExitCode {
    let dir = match dir {
        Some(dir) => dir,
        None => match load(cli, cli.config.clone()).map(|config| config.cache.map(|cache| cache.dir)) {
            Ok(Some(dir)) => dir,
            Ok(None) => {
                eprintln!("doltgate: no cache directory: pass --dir or a --config with [cache] dir");
                return ExitCode::from(2);
            }
            Err(err) => {
                eprintln!("doltgate: invalid configuration: {err}");
                return ExitCode::from(2);
            }
        },
    };
    let outcome = match action {
        CacheAction::Stats => doltgate::cache::stats(&dir).map(|stores| {
            println!("{:<16} {:<40} {:>8} {:>16}", "cluster", "database directory", "files", "bytes");
            for s in &stores {
                println!("{:<16} {:<40} {:>8} {:>16}", s.cluster, s.store, s.files, s.bytes);
            }
            let (files, bytes) = stores.iter().fold((0, 0), |(f, b), s| (f + s.files, b + s.bytes));
            println!("{:<16} {:<40} {files:>8} {bytes:>16}", "total", "");
        }),
        CacheAction::Purge => doltgate::cache::purge(&dir).map(|(files, bytes)| {
            println!("removed {files} files, {bytes} bytes from {}", dir.display());
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("doltgate: cache directory {}: {err}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn keys(cli: &Cli, action: &KeysAction) -> ExitCode {
    let config = match load(cli, cli.config.clone()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("doltgate: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    // Revocations are audited on stderr, like the server's audit lines.
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(async {
        match action {
            KeysAction::List => doltgate::list_keys(&config).await.map(|keys| {
                println!("{:<46} {:<24} {:<20} revoked", "key id", "user", "registered");
                for key in keys {
                    let revoked = key.revoked_at.as_deref().unwrap_or("-");
                    println!("{:<46} {:<24} {:<20} {revoked}", key.key_id, key.user, key.registered_at);
                }
            }),
            KeysAction::Revoke { key_id } => doltgate::revoke_key(&config, key_id).await.and_then(|revoked| {
                if revoked {
                    println!("revoked {key_id}");
                    Ok(())
                } else {
                    Err(format!("no live key with id {key_id}"))
                }
            }),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("doltgate keys: {err}");
            ExitCode::FAILURE
        }
    }
}

fn explain(cli: &Cli, question: &doltgate::push::explain::Question) -> ExitCode {
    let answer = load(cli, cli.config.clone()).and_then(|config| doltgate::explain_push(&config, question));
    match answer {
        Ok(answer) => {
            print!("{answer}");
            ExitCode::from(if answer.decision.allowed { 0 } else { 1 })
        }
        Err(err) => {
            eprintln!("doltgate explain: {err}");
            ExitCode::from(2)
        }
    }
}

fn load(cli: &Cli, file: Option<PathBuf>) -> Result<Config, String> {
    let mut config = match &file {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listener.address = listen;
    }
    if let Some(admin) = cli.admin {
        config.admin.address = Some(admin);
    }
    if let Some(address) = &cli.upstream {
        match config.upstream.as_mut() {
            Some(upstream) => upstream.address = address.clone(),
            None => config.upstream = Some(UpstreamConfig::at(address.clone())),
        }
    }
    Ok(config)
}

fn check_config(cli: &Cli, file: Option<PathBuf>) -> ExitCode {
    let label = file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(flags only)".into());
    match load(cli, file).and_then(|config| doltgate::check(&config).map_err(|e| e.to_string())) {
        Ok(()) => {
            println!("{label}: ok");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{label}: {err}");
            ExitCode::from(2)
        }
    }
}

/// On SIGHUP: read the configuration file again (flags still override it),
/// and apply it if valid; an invalid one is logged and the running one kept.
#[cfg(unix)]
async fn reload_on_sighup(cli: Cli, reloader: doltgate::Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else { return };
    while hangups.recv().await.is_some() {
        let outcome =
            load(&cli, cli.config.clone()).and_then(|config| reloader.apply(&config).map_err(|e| e.to_string()));
        let metrics = doltgate::metrics::metrics();
        match outcome {
            Ok(()) => {
                metrics.config_reloads.with_label_values(&["applied"]).inc();
                tracing::info!("configuration reloaded");
            }
            Err(error) => {
                metrics.config_reloads.with_label_values(&["rejected"]).inc();
                tracing::error!(%error, "configuration reload rejected; keeping the running configuration");
            }
        }
    }
}

fn run(cli: &Cli) -> ExitCode {
    // The log level is checked before logging starts; the rest is checked
    // by building the gateway, once, in Server::bind.
    let checked = load(cli, cli.config.clone())
        .and_then(|config| doltgate::check_log_level(&config).map(|()| config).map_err(|e| e.to_string()));
    let config = match checked {
        Ok(config) => config,
        Err(err) => {
            eprintln!("doltgate: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    let _flush_logs_on_exit = init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async move {
        let server = match Server::bind(&config).await {
            Ok(server) => server,
            Err(err) => {
                tracing::error!(error = %err, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let topology = config.topology().unwrap_or_else(|_| unreachable!("the server was built from it"));
        let endpoints: Vec<String> = topology
            .clusters
            .iter()
            .flat_map(|(name, c)| c.endpoints.iter().map(move |e| format!("{name}/{}={}", e.name, e.remotesapi)))
            .collect();
        tracing::info!(
            listen = %server.local_addr(),
            tls = server.is_tls(),
            endpoints = %endpoints.join(","),
            routes = topology.routes.len(),
            admin = ?server.admin_addr(),
            "doltgate listening"
        );
        #[cfg(unix)]
        tokio::spawn(reload_on_sighup(cli.clone(), server.reloader()));
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Log lines (one access line per call) are formatted on the request path
/// and written to stderr in batches by a thread of their own (see
/// `doltgate::log_output`); the returned guard writes what is left at exit.
fn init_logging(config: &Config) -> doltgate::log_output::FlushOnDrop {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = doltgate::log_output::LogOutput::start(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
