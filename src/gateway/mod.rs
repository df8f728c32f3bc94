//! The gateway in effect: everything a request needs, built once from the
//! configuration (`build`) and swapped whole on reload. It holds state and
//! answers questions about it; the request path itself is in [`crate::dispatch`]
//! and the proxies.

mod build;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

use crate::authn::Authenticator;
use crate::authz::Grants;
use crate::cluster::{Cluster, ConnectionAffinity};
use crate::error::GatewayError;
use crate::file_url::UrlSigner;
use crate::limits::Limits;
use crate::push::branch_control::Mirror;
use crate::push::rules::PushRules;
use crate::route::Router;
use crate::uploads::UploadSettings;

pub use build::Purpose;

/// The gateway in effect; a reload swaps in a new one while requests that
/// started on the old one finish with it.
pub type SharedGateway = Arc<arc_swap::ArcSwap<Gateway>>;

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub tls: bool,
    /// Which members this connection's reads stick to.
    pub affinity: Arc<ConnectionAffinity>,
}

/// Everything a request needs, built once from the configuration.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) router: Router<Arc<Cluster>>,
    clusters: HashMap<String, Arc<Cluster>>,
    /// Endpoint name (as in table-file URLs) -> its cluster and index there.
    endpoints: HashMap<String, (Arc<Cluster>, usize)>,
    public_url: Option<String>,
    pub(crate) limits: Limits,
    /// `None`: clients' credentials pass through for Dolt to check.
    pub(crate) auth: Option<Auth>,
    /// Self-hosted `dolt login`, when configured.
    pub(crate) login: Option<crate::login::Login>,
    pub(crate) url_signer: Arc<UrlSigner>,
    pub(crate) uploads: UploadSettings,
    /// The URL key is configured, so other replicas may have verified an upload.
    pub(crate) peers_share_url_key: bool,
    /// The edge cache, when `[cache]` is configured.
    pub(crate) cache: Option<Arc<crate::cache::EdgeCache>>,
}

/// Authentication and authorization in effect.
#[derive(Debug)]
pub struct Auth {
    pub(crate) authenticator: Authenticator,
    pub(crate) grants: Grants,
    pub(crate) push_rules: PushRules,
    /// With `branch_control = "mirror"`: pushes must also pass each
    /// cluster's `dolt_branch_control` rows.
    pub(crate) branch_control: Option<Mirror>,
    upstream_credentials: UpstreamAuthorization,
}

/// What doltgate presents upstream for a proven client.
#[derive(Debug)]
enum UpstreamAuthorization {
    /// The client's own `authorization`, so Dolt checks it too.
    Passthrough,
    /// The `Basic` credentials of doltgate's SQL user, by cluster.
    Service(HashMap<String, HeaderValue>),
}

impl Auth {
    /// What to present upstream on `cluster` for a proven client whose own
    /// `authorization` is `client`.
    pub(crate) fn upstream_authorization(
        &self,
        cluster: &Cluster,
        client: &HeaderValue,
    ) -> Result<HeaderValue, GatewayError> {
        match &self.upstream_credentials {
            UpstreamAuthorization::Passthrough => Ok(client.clone()),
            UpstreamAuthorization::Service(by_cluster) => by_cluster.get(&cluster.name).cloned().ok_or_else(|| {
                GatewayError::Internal(format!("no service credentials for cluster {:?}", cluster.name))
            }),
        }
    }
}

impl Gateway {
    /// Starts the background work the gateway relies on: member role polls
    /// and, when mirrored, `dolt_branch_control` reads (needs a Tokio runtime).
    pub fn start_background(&self) {
        for cluster in self.clusters.values() {
            crate::cluster::discovery::spawn_pollers(cluster);
        }
        if let Some(mirror) = self.auth.as_ref().and_then(|auth| auth.branch_control.as_ref()) {
            mirror.spawn_pollers(self.clusters.values());
        }
    }

    /// Why the gateway should not get traffic now; empty when ready.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        self.clusters.values().filter_map(|cluster| cluster.not_ready_reason()).collect()
    }

    /// What works less well than configured, without making the gateway unready.
    pub fn degraded_reasons(&self) -> Vec<String> {
        self.cache.iter().filter_map(|cache| cache.trouble()).collect()
    }

    /// The endpoint a table-file URL names.
    pub fn endpoint(&self, name: &str) -> Option<&(Arc<Cluster>, usize)> {
        self.endpoints.get(name)
    }

    /// Self-hosted `dolt login`, when configured.
    /// `doltgate explain`: the database resolved by the routes, the change
    /// judged by the push rules in effect.
    pub fn explain_push(
        &self,
        question: &crate::push::explain::Question,
    ) -> Result<crate::push::explain::Answer, String> {
        let destination = self.router.resolve(&question.database).map_err(|e| e.to_string())?;
        let auth = self.auth.as_ref().ok_or("no [auth] section: doltgate judges no pushes, Dolt's own checks apply")?;
        let mirrored = auth.branch_control.is_some();
        crate::push::explain::answer(&auth.push_rules, mirrored, &destination.judged_name, question)
    }

    pub fn login(&self) -> Option<&crate::login::Login> {
        self.login.as_ref()
    }

    /// `listener.public_url`, without a trailing slash.
    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }
}
