//! Prometheus metrics: the families doltgate exports and their text
//! exposition. Label values come only from bounded sets (RPC names, gRPC
//! codes, HTTP statuses, configured cluster and endpoint names), never from
//! what clients send, so a client cannot grow the series count.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Finished gRPC calls by method and final status code.
    pub grpc_requests: IntCounterVec,
    pub grpc_duration: HistogramVec,
    /// Finished table-file requests by HTTP method and status.
    pub file_requests: IntCounterVec,
    pub in_flight: IntGauge,
    pub open_connections: IntGauge,
    /// 1 while the endpoint answers its role polls (or, for a fixed role, its connections).
    pub endpoint_healthy: IntGaugeVec,
    /// 1 for the member doltgate currently sends writes to.
    pub endpoint_primary: IntGaugeVec,
    pub primary_changes: IntCounterVec,
    /// Table-file bytes by direction (`download`, `upload`).
    pub file_bytes: IntCounterVec,
    /// Table-file requests from arrival to the last byte of the answer.
    pub file_duration: HistogramVec,
    /// Configuration reloads by outcome (`applied`, `rejected`).
    pub config_reloads: IntCounterVec,
    /// Credential checks by kind (`basic`, `bearer`) and outcome (`accepted`, `refused`, `error`).
    pub auth_attempts: IntCounterVec,
    /// Logins to a cluster's SQL port made to check a password.
    pub auth_sql_logins: IntCounterVec,
    /// Verdict cache lookups (`hit`) and fresh checks (`miss`).
    pub auth_cache: IntCounterVec,
    /// Calls refused for lack of a grant, by the permission they needed.
    pub authz_denied: IntCounterVec,
    /// Commits inspected, by verdict (`allowed`, `refused`, `error`).
    pub push_verdicts: IntCounterVec,
    /// Ref changes judged, by the push rule that decided (`default` for the
    /// built-in one, `dolt_branch_control` for mirrored rows) and verdict
    /// (`allowed`, `refused`, `bypassed` by a user the rule lets bypass it,
    /// `would_refuse` for rules in evaluate mode).
    pub push_rule_verdicts: IntCounterVec,
    /// Client connections closed or refused by doltgate's own bounds, by reason
    /// (`max_connections`, `protocol_deadline`).
    pub connections_refused: IntCounterVec,
    /// Requests whose handling panicked (answered INTERNAL).
    pub panics: IntCounterVec,
    /// Credential checks refused (`address`) or slowed (`user`) after repeated failures.
    pub auth_throttled: IntCounterVec,
    /// Requests past a per-user limit (`streams`, `calls`, `transfers`):
    /// `queued`, then `refused` if no slot freed in time.
    pub user_limits: IntCounterVec,
    /// Open HTTP/2 connections to each upstream endpoint for gRPC.
    pub upstream_connections: IntGaugeVec,
    /// Self-hosted login: keys `registered` and `revoked`, registrations `refused`.
    pub login_keys: IntCounterVec,
    /// Edge cache lookups by result (`hit`, `miss`, `bypass`).
    pub cache_requests: IntCounterVec,
    /// Bytes clients read out of the edge cache's files (hits and fills they follow).
    pub cache_served_bytes: IntCounter,
    /// Table-file bytes read from Dolt for GETs: passed through, filled, probed.
    pub upstream_file_bytes: IntCounter,
    /// Files the edge cache removed to make room.
    pub cache_evictions: IntCounter,
    /// Edge cache fills by outcome (`stored`, `too_large`, `corrupt`, `upstream_error`, `disk_error`).
    pub cache_fills: IntCounterVec,
    /// Shared tier lookups and uploads (`hit`, `miss`, `stored`, `corrupt`, `error`).
    pub cache_shared: IntCounterVec,
    pub cache_shared_read_bytes: IntCounter,
    pub cache_shared_written_bytes: IntCounter,
    pub cache_files: IntGauge,
    pub cache_size_bytes: IntGauge,
    build_info: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(family.clone())).expect("unique metric");
    family
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let family = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(family.clone())).expect("unique metric");
    family
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(counter.clone())).expect("unique metric");
    counter
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid metric");
    registry.register(Box::new(gauge.clone())).expect("unique metric");
    gauge
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let grpc_duration = HistogramVec::new(
            HistogramOpts::new("doltgate_grpc_request_duration_seconds", "Time from request to final status.")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["method"],
        )
        .expect("valid metric");
        registry.register(Box::new(grpc_duration.clone())).expect("unique metric");
        let file_duration = HistogramVec::new(
            HistogramOpts::new(
                "doltgate_file_transfer_duration_seconds",
                "Table-file requests from arrival to the last byte of the answer.",
            )
            .buckets(vec![0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["method"],
        )
        .expect("valid metric");
        registry.register(Box::new(file_duration.clone())).expect("unique metric");
        let build = gauge_vec(&registry, "doltgate_build_info", "Always 1; labels name the build.", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            grpc_requests: counter(
                &registry,
                "doltgate_grpc_requests_total",
                "Finished remotesapi gRPC calls.",
                &["method", "code", "route", "cluster", "endpoint"],
            ),
            grpc_duration,
            file_requests: counter(
                &registry,
                "doltgate_file_requests_total",
                "Finished table-file HTTP requests.",
                &["method", "status"],
            ),
            in_flight: gauge(&registry, "doltgate_requests_in_flight", "Requests being served now."),
            open_connections: gauge(&registry, "doltgate_open_connections", "Client connections open now."),
            connections_refused: counter(
                &registry,
                "doltgate_connections_refused_total",
                "Client connections refused or closed by doltgate's limits, by reason.",
                &["reason"],
            ),
            user_limits: counter(
                &registry,
                "doltgate_user_limit_total",
                "Requests past a per-user limit (streams, calls, transfers): queued, and refused when no slot freed in time.",
                &["limit", "outcome"],
            ),
            login_keys: counter(
                &registry,
                "doltgate_login_keys_total",
                "Keys registered and revoked through self-hosted login, and registrations refused.",
                &["event"],
            ),
            upstream_connections: gauge_vec(
                &registry,
                "doltgate_upstream_connections",
                "Open HTTP/2 connections carrying gRPC calls to the endpoint.",
                &["endpoint"],
            ),
            auth_throttled: counter(
                &registry,
                "doltgate_auth_throttled_total",
                "Credential checks refused (an address in backoff) or slowed (a user name failing often).",
                &["by"],
            ),
            panics: counter(
                &registry,
                "doltgate_request_panics_total",
                "Requests whose handling panicked and were answered INTERNAL.",
                &["kind"],
            ),
            endpoint_healthy: gauge_vec(
                &registry,
                "doltgate_upstream_healthy",
                "1 while the upstream endpoint is reachable.",
                &["cluster", "endpoint"],
            ),
            endpoint_primary: gauge_vec(
                &registry,
                "doltgate_upstream_primary",
                "1 for the endpoint writes go to.",
                &["cluster", "endpoint"],
            ),
            primary_changes: counter(
                &registry,
                "doltgate_primary_changes_total",
                "Times a cluster's primary changed (including to none).",
                &["cluster"],
            ),
            file_bytes: counter(
                &registry,
                "doltgate_file_bytes_total",
                "Table-file bytes moved, by direction.",
                &["direction"],
            ),
            file_duration,
            config_reloads: counter(
                &registry,
                "doltgate_config_reloads_total",
                "Configuration reloads by outcome.",
                &["outcome"],
            ),
            auth_attempts: counter(
                &registry,
                "doltgate_auth_attempts_total",
                "Credential checks (cache misses) by kind and outcome.",
                &["kind", "outcome"],
            ),
            auth_sql_logins: counter(
                &registry,
                "doltgate_auth_sql_logins_total",
                "Logins to a SQL port made to check a password, by outcome.",
                &["outcome"],
            ),
            auth_cache: counter(
                &registry,
                "doltgate_auth_cache_total",
                "Authentication verdict cache lookups.",
                &["result"],
            ),
            authz_denied: counter(
                &registry,
                "doltgate_authz_denied_total",
                "Requests refused for lack of a grant, by the permission needed.",
                &["permission"],
            ),
            push_verdicts: counter(
                &registry,
                "doltgate_push_verdicts_total",
                "Commits inspected for push rules, by verdict.",
                &["verdict"],
            ),
            push_rule_verdicts: counter(
                &registry,
                "doltgate_push_rule_verdicts_total",
                "Ref changes judged, by deciding push rule and verdict (bypassed; would_refuse: a rule in evaluate mode).",
                &["rule", "verdict"],
            ),
            cache_requests: counter(
                &registry,
                "doltgate_cache_requests_total",
                "Edge cache lookups of table-file GETs, by result (hit, miss, bypass).",
                &["result"],
            ),
            cache_served_bytes: plain_counter(
                &registry,
                "doltgate_cache_served_bytes_total",
                "Bytes clients read from the edge cache's files.",
            ),
            upstream_file_bytes: plain_counter(
                &registry,
                "doltgate_upstream_file_bytes_total",
                "Table-file bytes read from Dolt for GETs (passed through, cache fills, length checks).",
            ),
            cache_evictions: plain_counter(
                &registry,
                "doltgate_cache_evictions_total",
                "Files the edge cache removed to stay within cache.max_bytes.",
            ),
            cache_fills: counter(
                &registry,
                "doltgate_cache_fills_total",
                "Whole-file fetches into the edge cache, by outcome.",
                &["outcome"],
            ),
            cache_shared: counter(
                &registry,
                "doltgate_cache_shared_total",
                "Edge cache shared-tier events: hit, miss, stored, corrupt (deleted), error.",
                &["event"],
            ),
            cache_shared_read_bytes: plain_counter(
                &registry,
                "doltgate_cache_shared_read_bytes_total",
                "Bytes fills read from the shared tier.",
            ),
            cache_shared_written_bytes: plain_counter(
                &registry,
                "doltgate_cache_shared_written_bytes_total",
                "Bytes uploaded to the shared tier.",
            ),
            cache_files: gauge(&registry, "doltgate_cache_files", "Files in the edge cache."),
            cache_size_bytes: gauge(&registry, "doltgate_cache_size_bytes", "Bytes in the edge cache."),
            build_info: build,
            registry,
        }
    }

    /// Names of every family, whether or not it has samples yet.
    pub fn family_names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 34] = [
            &self.cache_shared,
            &self.cache_shared_read_bytes,
            &self.cache_shared_written_bytes,
            &self.cache_requests,
            &self.cache_served_bytes,
            &self.upstream_file_bytes,
            &self.cache_evictions,
            &self.cache_fills,
            &self.cache_files,
            &self.cache_size_bytes,
            &self.push_verdicts,
            &self.push_rule_verdicts,
            &self.login_keys,
            &self.upstream_connections,
            &self.user_limits,
            &self.auth_throttled,
            &self.connections_refused,
            &self.panics,
            &self.auth_attempts,
            &self.auth_sql_logins,
            &self.auth_cache,
            &self.authz_denied,
            &self.file_bytes,
            &self.file_duration,
            &self.grpc_requests,
            &self.grpc_duration,
            &self.file_requests,
            &self.in_flight,
            &self.open_connections,
            &self.endpoint_healthy,
            &self.endpoint_primary,
            &self.primary_changes,
            &self.config_reloads,
            &self.build_info,
        ];
        collectors.iter().flat_map(|c| c.desc()).map(|d| d.fq_name.clone()).collect()
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Counts one request in flight until dropped.
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        metrics().in_flight.inc();
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics().in_flight.dec();
    }
}

/// Records one gRPC call's outcome exactly once: when its status is known,
/// or as CANCELLED if the call is dropped first (the client went away).
pub struct GrpcCallRecord {
    method: &'static str,
    started: Instant,
    done: bool,
}

impl GrpcCallRecord {
    pub fn start(method: &'static str) -> GrpcCallRecord {
        GrpcCallRecord { method, started: Instant::now(), done: false }
    }

    /// `place` is `[route, cluster, endpoint]`, empty for calls refused before routing.
    pub fn finish(&mut self, code: tonic::Code, place: [&str; 3]) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = metrics();
        let [route, cluster, endpoint] = place;
        m.grpc_requests.with_label_values(&[self.method, code_name(code), route, cluster, endpoint]).inc();
        m.grpc_duration.with_label_values(&[self.method]).observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for GrpcCallRecord {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled, ["", "", ""]);
    }
}

/// Upper-case names as gRPC documents them (OK, NOT_FOUND, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_counted_once_and_dropped_calls_count_as_cancelled() {
        let before = |code: &str, place: [&str; 3]| {
            let [route, cluster, endpoint] = place;
            metrics().grpc_requests.with_label_values(&["Root", code, route, cluster, endpoint]).get()
        };
        let routed = ["db", "main", "dolt-0"];
        let (ok, cancelled) = (before("OK", routed), before("CANCELLED", ["", "", ""]));
        let mut call = GrpcCallRecord::start("Root");
        call.finish(tonic::Code::Ok, routed);
        drop(call);
        drop(GrpcCallRecord::start("Root"));
        assert_eq!(before("OK", routed), ok + 1);
        assert_eq!(before("CANCELLED", ["", "", ""]), cancelled + 1);
        assert!(metrics().render().contains("doltgate_build_info{version=\""));
    }
}

#[cfg(test)]
mod dashboard_tests {
    use super::*;

    /// Every series the Grafana dashboard queries must be one doltgate exports.
    #[test]
    fn dashboard_queries_only_exported_metrics() {
        let text = include_str!("../deploy/grafana/doltgate-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(text).expect("dashboard is valid JSON");
        let exported = metrics().family_names();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if let Some(family) = word.strip_prefix("doltgate_") {
                        let family = format!("doltgate_{}", family.trim_end_matches("_bucket"));
                        assert!(exported.contains(&family), "{word} is not exported");
                        queried += 1;
                    }
                }
            }
        }
        assert!(queried >= 9, "the dashboard queries doltgate metrics ({queried})");
    }
}
