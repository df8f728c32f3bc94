//! A request's access-log line and metric labels: who made it, on which
//! database, and which route, cluster and endpoint served it — filled in by
//! the phases as each learns its part (once), written when the request ends.
//! gRPC calls and table-file requests share it, so their lines read alike.

use std::sync::OnceLock;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct AccessRecord {
    user: OnceLock<String>,
    database: OnceLock<String>,
    route: OnceLock<String>,
    cluster: OnceLock<String>,
    endpoint: OnceLock<String>,
}

fn field(cell: &OnceLock<String>) -> &str {
    cell.get().map(String::as_str).unwrap_or_default()
}

impl AccessRecord {
    /// Who made the request: the proven name, else the name it claimed.
    pub fn user(&self, user: String) {
        let _ = self.user.set(user);
    }

    /// The database it acts on, as grants judge it.
    pub fn database(&self, database: String) {
        let _ = self.database.set(database);
    }

    /// Where it went.
    pub fn served_by(&self, route: &str, cluster: &str, endpoint: &str) {
        let _ = self.route.set(route.to_owned());
        let _ = self.cluster.set(cluster.to_owned());
        let _ = self.endpoint.set(endpoint.to_owned());
    }

    /// `[route, cluster, endpoint]`: bounded metric labels (configured names only).
    pub fn place(&self) -> [&str; 3] {
        [field(&self.route), field(&self.cluster), field(&self.endpoint)]
    }

    /// The line of a finished gRPC call.
    pub fn log_call(&self, method: &str, code: tonic::Code, started: Instant) {
        tracing::info!(
            target: "doltgate::access",
            %method,
            code = %crate::metrics::code_name(code),
            user = %field(&self.user),
            database = %field(&self.database),
            endpoint = %field(&self.endpoint),
            duration_ms = started.elapsed().as_millis() as u64,
            "grpc call"
        );
    }

    /// The line of a finished table-file request; `path` only, since the
    /// query is what makes a sealed URL usable.
    pub fn log_file(&self, request: &FileRequest, status: http::StatusCode, error: Option<&str>) {
        tracing::info!(
            target: "doltgate::access",
            method = %request.method,
            path = %request.path,
            range = %request.range.as_deref().unwrap_or("none"),
            user = %field(&self.user),
            database = %field(&self.database),
            status = status.as_u16(),
            duration_ms = request.started.elapsed().as_millis() as u64,
            error = error.unwrap_or(""),
            "{}",
            if error.is_some() { "table-file request refused" } else { "table-file request" }
        );
    }
}

/// What a table-file request's line says about the request itself.
pub struct FileRequest {
    pub method: http::Method,
    pub path: String,
    pub range: Option<String>,
    pub started: Instant,
}
