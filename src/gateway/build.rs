//! Assembling a gateway from a configuration: a short recipe of steps, each
//! handing one section to the module that turns it into its runtime form and
//! is where that section is rejected, with the key that is wrong. Serving,
//! reloading and `check-config` all run this same build; only `check-config`
//! leaves secrets unread and starts nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Auth, Gateway, UpstreamAuthorization};
use crate::authn::{basic_authorization, Authenticator};
use crate::authz::Grants;
use crate::cluster::Cluster;
use crate::config::auth::{BranchControlMode, UpstreamCredentials};
use crate::config::{check_positive, invalid, origin_url, AuthConfig, Config, ConfigError, Secrets, Topology};
use crate::file_url::UrlSigner;
use crate::limits::Limits;
use crate::login::Login;
use crate::push::branch_control::Mirror;
use crate::push::rules::PushRules;
use crate::route::Router;
use crate::uploads::UploadSettings;

/// Why a gateway is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// To serve: secrets are read.
    Serve,
    /// To check a configuration: secrets need only be named.
    Check,
}

type Clusters = BTreeMap<String, Arc<Cluster>>;

impl Gateway {
    /// The gateway `config` describes, or the first thing in it that cannot be.
    pub fn build(config: &Config, purpose: Purpose) -> Result<Gateway, ConfigError> {
        let secrets = match purpose {
            Purpose::Serve => Secrets::read(),
            Purpose::Check => Secrets::named_only(),
        };
        // 1. Which clusters exist and which routes lead to them.
        let topology = config.topology()?;
        // 2. The clusters, their members, and doltgate's SQL login on each.
        let clusters = build_clusters(&topology, &secrets)?;
        // 3. Routes to those clusters.
        let router = Router::build(&topology.routes, |name| clusters.get(name).cloned())?;
        // 4. Self-hosted `dolt login`, whose registered keys authentication accepts.
        let login = config
            .login
            .as_ref()
            .map(|login| Login::build(login, &clusters, config.auth.as_ref(), &secrets))
            .transpose()?;
        // 5. Who may call and what they may change.
        let auth = config
            .auth
            .as_ref()
            .map(|auth| build_auth(auth, config, &topology, &clusters, &secrets, login.as_ref()))
            .transpose()?;
        // 6. The key behind doltgate's table-file URLs.
        let url_signer = Arc::new(UrlSigner::build(&config.file_urls, &secrets)?);
        // 7. What bounds each call and each upload.
        let limits = Limits::build(&config.limits)?;
        let uploads = UploadSettings::build(&config.uploads)?;
        // 8. The edge cache (opened only to serve: a check touches no directory).
        let cache = config.cache.as_ref().map(|cache| build_cache(cache, &secrets, purpose)).transpose()?.flatten();
        // 9. The address clients are told to use.
        let public_url =
            config.listener.public_url.as_deref().map(|url| origin_url("listener.public_url", url)).transpose()?;
        Ok(Gateway {
            router,
            endpoints: endpoint_index(&clusters),
            clusters: clusters.into_iter().collect(),
            public_url,
            limits,
            auth,
            login,
            url_signer,
            uploads,
            peers_share_url_key: config.file_urls.key_env.is_some() || config.file_urls.key_file.is_some(),
            cache,
        })
    }
}

/// The edge cache `[cache]` describes; opened only to serve (a check
/// touches no directory and contacts no bucket).
fn build_cache(
    cache: &crate::config::CacheConfig,
    secrets: &Secrets,
    purpose: Purpose,
) -> Result<Option<Arc<crate::cache::EdgeCache>>, ConfigError> {
    if cache.dir.as_os_str().is_empty() {
        return Err(invalid("cache.dir", "name the directory the cache may own"));
    }
    if cache.max_bytes == 0 {
        return Err(invalid("cache.max_bytes", "must be above 0 (leave out [cache] for no cache)"));
    }
    let tier = cache.shared.as_ref().map(|shared| crate::cache::SharedTier::build(shared, secrets)).transpose()?;
    Ok((purpose == Purpose::Serve).then(|| crate::cache::EdgeCache::shared(cache, tier)))
}

/// Every cluster, with endpoint names unique across all of them (table-file
/// URLs name an endpoint, not a cluster).
fn build_clusters(topology: &Topology, secrets: &Secrets) -> Result<Clusters, ConfigError> {
    let mut clusters = Clusters::new();
    let mut seen = std::collections::HashSet::new();
    for (name, config) in &topology.clusters {
        let keys = topology.keys(name);
        for (i, endpoint) in config.endpoints.iter().enumerate() {
            if !seen.insert(endpoint.name.clone()) {
                return Err(invalid(
                    keys.endpoint(i, "name"),
                    format!("{:?} is used twice; endpoint names are unique across clusters", endpoint.name),
                ));
            }
        }
        clusters.insert(name.clone(), Arc::new(Cluster::build(name, &keys, config, secrets)?));
    }
    Ok(clusters)
}

fn endpoint_index(clusters: &Clusters) -> HashMap<String, (Arc<Cluster>, usize)> {
    let mut index = HashMap::new();
    for cluster in clusters.values() {
        for (i, endpoint) in cluster.endpoints.iter().enumerate() {
            index.insert(endpoint.name.clone(), (cluster.clone(), i));
        }
    }
    index
}

/// `[auth]`: credentials, grants, push rules, and what each needs of the
/// clusters (a service login to present upstream or to read Dolt's tables).
fn build_auth(
    auth: &AuthConfig,
    config: &Config,
    topology: &Topology,
    clusters: &Clusters,
    secrets: &Secrets,
    login: Option<&Login>,
) -> Result<Auth, ConfigError> {
    let upstream_credentials = match auth.upstream_credentials {
        UpstreamCredentials::Passthrough => UpstreamAuthorization::Passthrough,
        UpstreamCredentials::Service => {
            let needs = "auth.upstream_credentials = \"service\" needs the cluster's sql_user (a Dolt user with SUPER and CLONE_ADMIN); set it, or use upstream_credentials = \"passthrough\"";
            UpstreamAuthorization::Service(service_authorizations(topology, clusters, needs)?)
        }
    };
    let branch_control = match auth.branch_control {
        BranchControlMode::Ignore => None,
        BranchControlMode::Mirror => {
            let needs = "auth.branch_control = \"mirror\" reads Dolt's tables as the cluster's sql_user; set it";
            service_authorizations(topology, clusters, needs)?;
            check_positive("auth.branch_control_poll_interval", auth.branch_control_poll_interval)?;
            Some(Mirror::new(clusters.keys().map(String::as_str), auth.branch_control_poll_interval))
        }
    };
    let public_url = config.listener.public_url.as_deref();
    let mut authenticator = Authenticator::build(auth, public_url, secrets)?;
    if let Some(login) = login {
        authenticator = authenticator.with_registered_keys(login.store().clone());
    }
    Ok(Auth {
        authenticator,
        grants: Grants::build(&auth.grants)?,
        push_rules: PushRules::build(auth)?,
        branch_control,
        upstream_credentials,
    })
}

/// The `Basic` credentials of doltgate's SQL login on each cluster; a
/// cluster without one is an error saying what `needs` it.
fn service_authorizations(
    topology: &Topology,
    clusters: &Clusters,
    needs: &str,
) -> Result<HashMap<String, http::HeaderValue>, ConfigError> {
    let mut by_cluster = HashMap::new();
    for (name, cluster) in clusters {
        let key = topology.keys(name).field("sql_user");
        let login = cluster.service_login().ok_or_else(|| invalid(&key, needs))?;
        let header = basic_authorization(&login.user, &login.password).map_err(|reason| invalid(&key, reason))?;
        by_cluster.insert(name.clone(), header);
    }
    Ok(by_cluster)
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

    fn check(text: &str) -> Result<Gateway, ConfigError> {
        Gateway::build(&Config::parse(text).unwrap(), Purpose::Check)
    }

    #[tokio::test]
    async fn example_configs_build_with_their_secrets_unset() {
        for text in [
            include_str!("../../config/doltgate.toml"),
            include_str!("../../config/cluster.toml"),
            include_str!("../../config/auth.toml"),
        ] {
            check(text).unwrap();
        }
    }

    /// A `dolt creds` token names the host its remote URL had; accepting
    /// whatever authority a request came with would accept tokens minted for
    /// any other server.
    #[tokio::test]
    async fn dolt_keys_need_configured_audiences() {
        let key = "041061050o3gg28a1c60q3gf208h44ok2kb1e60p38dho78u3sg0";
        let auth = format!(
            "[auth]\nupstream_credentials = \"passthrough\"\n[[auth.users]]\nname = \"dana\"\ndolt_keys = [\"{key}\"]\n"
        );
        let bare = format!("[upstream]\naddress = \"h:1\"\n{auth}");
        assert_eq!(key_of(check(&bare).unwrap_err()), "auth.dolt_key_audiences");
        let named = bare.replace("[[auth.users]]", "dolt_key_audiences = [\"dolt.example.com\"]\n[[auth.users]]");
        check(&named).unwrap();
        let public =
            format!("[upstream]\naddress = \"h:1\"\n[listener]\npublic_url = \"https://dolt.example.com\"\n{auth}");
        check(&public).unwrap();
        let config = Config::parse(&public).unwrap();
        let audiences =
            crate::authn::dolt_key_audiences(config.auth.as_ref().unwrap(), config.listener.public_url.as_deref());
        assert_eq!(audiences, vec!["dolt.example.com".to_owned()]);
    }

    /// Every section is rejected by the module that builds it, with its key.
    #[tokio::test]
    async fn errors_name_the_key() {
        let up = "[upstream]\naddress = \"h:1\"\n";
        let cluster = "[clusters.c]\nendpoints = [{ name = \"a\", remotesapi = \"h:1\", role = \"primary\" }]\n";
        let cases = [
            (String::new(), "upstream"),
            ("[upstream]\naddress = \"nohost\"\n".into(), "upstream.address"),
            (format!("{up}name = \"a/b\"\n"), "upstream.name"),
            (format!("{up}max_streams_per_connection = 0\n"), "upstream.max_streams_per_connection"),
            (format!("{up}max_streams_per_connection = 251\n"), "upstream.max_streams_per_connection"),
            (format!("{up}connect_timeout = \"0s\"\n"), "upstream.connect_timeout"),
            (format!("{up}[limits]\nmax_message_bytes = 1024\n"), "limits.max_message_bytes"),
            (format!("{up}[limits]\nmax_calls_per_user = 0\n"), "limits.max_calls_per_user"),
            (format!("{up}[listener]\npublic_url = \"ftp://x\"\n"), "listener.public_url"),
            (format!("{up}[uploads]\nmax_file_bytes = 10\n"), "uploads.max_file_bytes"),
            (format!("{up}[file_urls]\nkey_env = \"A\"\nkey_file = \"/b\"\n"), "file_urls.key_env"),
            (format!("{cluster}[[routes]]\ndatabase_glob = \"[\"\ncluster = \"c\"\n"), "routes[0].database_glob"),
            (format!("{cluster}[[routes]]\ndatabase = \"a/b\"\ncluster = \"c\"\n"), "routes[0].database"),
            (format!("{cluster}[[routes]]\ndatabase = \"x\"\ncluster = \"d\"\n"), "routes[0].cluster"),
            (cluster.to_owned(), "routes"),
            (format!("{cluster}[clusters.c.transport]\nrequest_timeout = \"0s\"\n[[routes]]\ndatabase = \"x\"\ncluster = \"c\"\n"), "clusters.c.transport.request_timeout"),
            (
                format!("{cluster}sql_password = \"a\"\nsql_password_env = \"B\"\n[[routes]]\ndatabase = \"x\"\ncluster = \"c\"\n"),
                "clusters.c.sql_password",
            ),
            (format!("{up}[auth]\n"), "upstream"),
            ("[clusters.main]\nendpoints = []\n".into(), "clusters.main.endpoints"),
            (format!("{up}[auth]\nupstream_credentials = \"passthrough\"\n[[auth.grants]]\ndatabases = [\"[\"]\nusers = [\"a\"]\npermission = \"read\"\n"), "auth.grants[0].databases"),
            (format!("{up}[auth]\nupstream_credentials = \"passthrough\"\n[[auth.push_rules]]\nbranches = [\"main\"]\ntags = [\"v*\"]\nusers = [\"a\"]\nallow = []\n"), "auth.push_rules[0]"),
            (format!("{up}[auth]\nupstream_credentials = \"passthrough\"\ntoken_header = \"authorization\"\n"), "auth.token_header"),
            (format!("{up}[auth]\nupstream_credentials = \"passthrough\"\n[[auth.jwt]]\nname = \"x\"\nissuer = \"i\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\nsecret = \"s\"\n"), "auth.jwt[0].algorithms"),
        ];
        for (text, key) in cases {
            assert_eq!(key_of(check(&text).unwrap_err()), key, "{text}");
        }
    }

    /// `[login.oidc]` is checked against `[auth]` and `[login]` at start.
    #[tokio::test]
    async fn login_oidc_errors_name_the_key() {
        let base = r#"
[clusters.main]
endpoints = [{ name = "a", remotesapi = "h:1", sql = "h:2" }]
sql_user = "doltgate"
sql_password = "pw"
[[routes]]
database = "x"
cluster = "main"
[auth]
upstream_credentials = "service"
[[auth.jwt]]
name = "sso"
issuer = "https://idp.test/"
audiences = ["api"]
algorithms = ["RS256"]
jwks_url = "https://idp.test/keys"
[login]
cluster = "main"
[login.oidc]
provider = "sso"
discovery_url = "https://idp.test/.well-known/openid-configuration"
client_id = "web"
client_secret = "s"
redirect_url = "https://dolt.test/login/oidc/callback"
"#;
        check(base).unwrap();
        let cases = [
            (r#"provider = "sso""#, r#"provider = "other""#, "login.oidc.provider"),
            ("https://idp.test/.well-known", "http://idp.test/.well-known", "login.oidc.discovery_url"),
            ("dolt.test/login/oidc/callback", "dolt.test/elsewhere", "login.oidc.redirect_url"),
            ("dolt.test/login/oidc/callback", "dolt.test/login/oidc/callback?x=1", "login.oidc.redirect_url"),
            (r#"client_id = "web""#, r#"client_id = """#, "login.oidc.client_id"),
            (r#"client_secret = "s""#, "", "login.oidc"),
            (r#"client_secret = "s""#, "client_secret = \"s\"\nclient_secret_env = \"E\"", "login.oidc.client_secret"),
            (r#"client_id = "web""#, "client_id = \"web\"\nscopes = [\"email\"]", "login.oidc.scopes"),
        ];
        for (from, to, key) in cases {
            let text = base.replace(from, to);
            assert_eq!(key_of(check(&text).unwrap_err()), key, "{text}");
        }
        let moved = base.replace("[login]\n", "[login]\npath = \"/sso\"\n").replace("/login/oidc", "/sso/oidc");
        check(&moved).unwrap();
        check(
            &base
                .replace("https://idp.test/.well-known", "http://idp.test/.well-known")
                .replace("[login.oidc]\n", "[login.oidc]\nallow_http = true\n"),
        )
        .unwrap();
    }

    /// Serving reads secrets; checking only needs them named.
    #[tokio::test]
    async fn only_serving_needs_the_secrets() {
        let text = "[clusters.c]\nendpoints = [{ name = \"a\", remotesapi = \"h:1\", sql = \"h:2\" }]\nsql_user = \"doltgate\"\nsql_password_env = \"DOLTGATE_TEST_SURELY_UNSET\"\n[[routes]]\ndatabase = \"x\"\ncluster = \"c\"\n";
        check(text).unwrap();
        let err = Gateway::build(&Config::parse(text).unwrap(), Purpose::Serve).unwrap_err();
        assert_eq!(key_of(err), "clusters.c.sql_password_env");
    }
}
