//! Which cluster serves a request: routes map the database a request names
//! (and an optional client-side path prefix) to a cluster, first match wins.
//!
//! Names compare case-insensitively because sql-server looks databases up
//! that way; a route that only matched one spelling would let another slip by.

use glob::{MatchOptions, Pattern};

use crate::config::{invalid, ConfigError, ReadPolicy, RouteConfig};
use crate::error::GatewayError;
use crate::remotesapi::{canonical_database, database_of};

const MATCH_OPTIONS: MatchOptions =
    MatchOptions { case_sensitive: false, require_literal_separator: false, require_literal_leading_dot: false };

#[derive(Debug)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Glob(Pattern),
}

impl Matcher {
    /// The one matcher a route sets, checked: names without `/` or `@`
    /// (Dolt cuts a database name there), globs that parse.
    fn build(key: &str, route: &RouteConfig) -> Result<Matcher, ConfigError> {
        let set = [&route.database, &route.database_prefix, &route.database_glob];
        if set.iter().filter(|m| m.is_some()).count() != 1 {
            return Err(invalid(key, "set exactly one of database, database_prefix, database_glob"));
        }
        let literal = |field: &str, value: &str| {
            if value.is_empty() || value.contains(['/', '@']) {
                return Err(invalid(
                    format!("{key}.{field}"),
                    format!("{value:?} must be non-empty, without '/' or '@'"),
                ));
            }
            Ok(value.to_lowercase())
        };
        Ok(match (&route.database, &route.database_prefix, &route.database_glob) {
            (Some(name), _, _) => Matcher::Exact(literal("database", name)?),
            (_, Some(prefix), _) => Matcher::Prefix(literal("database_prefix", prefix)?),
            (_, _, glob) => {
                let glob = glob.as_deref().unwrap_or_default();
                Matcher::Glob(Pattern::new(glob).map_err(|e| invalid(format!("{key}.database_glob"), e.to_string()))?)
            }
        })
    }

    fn matches(&self, database: &str) -> bool {
        match self {
            Matcher::Exact(name) => database.eq_ignore_ascii_case(name),
            Matcher::Prefix(prefix) => database.to_lowercase().starts_with(prefix.as_str()),
            Matcher::Glob(pattern) => pattern.matches_with(database, MATCH_OPTIONS),
        }
    }

    /// The literal text every matched name starts with, when the matcher is
    /// "anything starting with it" (`Prefix`, or a glob `lit*`).
    fn as_prefix(&self) -> Option<&str> {
        match self {
            Matcher::Prefix(prefix) => Some(prefix),
            Matcher::Glob(pattern) => {
                let text = pattern.as_str();
                let literal = text.strip_suffix('*')?;
                (!literal.contains(['*', '?', '[', ']'])).then_some(literal)
            }
            Matcher::Exact(_) => None,
        }
    }

    /// The literal text before the first wildcard of every name this matches.
    fn leading_literal(&self) -> &str {
        match self {
            Matcher::Exact(name) => name,
            Matcher::Prefix(prefix) => prefix,
            Matcher::Glob(pattern) => {
                let text = pattern.as_str();
                &text[..text.find(['*', '?', '[']).unwrap_or(text.len())]
            }
        }
    }

    /// Whether every name `other` matches is matched by `self` (conservative:
    /// false when unsure).
    fn covers(&self, other: &Matcher) -> bool {
        match other {
            Matcher::Exact(name) => self.matches(name),
            _ => match self.as_prefix() {
                Some(prefix) => other.leading_literal().to_lowercase().starts_with(&prefix.to_lowercase()),
                None => match (self, other) {
                    (Matcher::Glob(a), Matcher::Glob(b)) => a.as_str().eq_ignore_ascii_case(b.as_str()),
                    _ => false,
                },
            },
        }
    }
}

/// A route, ready to match requests; `C` is what it routes to (the gateway's
/// clusters; names in tests).
#[derive(Debug)]
pub struct Route<C> {
    /// The route as configured, e.g. `orders`, `team_*`, `eu/*`: a bounded metric label.
    label: String,
    matcher: Matcher,
    /// Lower-cased, without slashes at either end.
    path_prefix: Option<String>,
    cluster: C,
    read_policy: ReadPolicy,
}

fn route_label(route: &RouteConfig) -> String {
    let pattern = match (&route.database, &route.database_prefix, &route.database_glob) {
        (Some(name), _, _) => name.clone(),
        (_, Some(prefix), _) => format!("{prefix}*"),
        (_, _, glob) => glob.clone().unwrap_or_else(|| "*".into()),
    };
    match &route.path_prefix {
        Some(prefix) => format!("{}/{pattern}", prefix.trim_matches('/')),
        None => pattern,
    }
}

/// Where a request goes and under which name the upstream knows the database.
#[derive(Debug, Clone)]
pub struct Destination<C> {
    pub route: usize,
    /// The matched route as configured, for metrics.
    pub route_label: String,
    pub cluster: C,
    pub read_policy: ReadPolicy,
    /// The database the upstream acts on: lower-cased as Dolt does, without
    /// revision; what mirrored `dolt_branch_control` rows are matched against.
    pub database: String,
    /// The name grants and push rules judge: [`Destination::database`],
    /// behind the route's path prefix if it has one (`eu/orders`). Never the
    /// client's spelling.
    pub judged_name: String,
    /// Whether the client named the database exactly so (no revision, no
    /// other case, nothing after it); writes must.
    pub spelled_canonically: bool,
    /// The `repo_path` to send upstream when it differs from the client's
    /// (a path prefix was stripped); `None` forwards the request unchanged.
    pub upstream_repo_path: Option<String>,
}

#[derive(Debug)]
pub struct Router<C> {
    routes: Vec<Route<C>>,
}

impl<C: Clone> Router<C> {
    /// The routes `[[routes]]` describe, each to the cluster `cluster` finds
    /// by name; a route that can never match (an earlier one matches all it
    /// would) is an error, not a silent dead entry.
    pub fn build(routes: &[RouteConfig], cluster: impl Fn(&str) -> Option<C>) -> Result<Router<C>, ConfigError> {
        if routes.is_empty() {
            return Err(invalid("routes", "no routes: add [[routes]] entries mapping databases to clusters"));
        }
        let mut built: Vec<Route<C>> = Vec::with_capacity(routes.len());
        for (i, config) in routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let target = cluster(&config.cluster)
                .ok_or_else(|| invalid(format!("{key}.cluster"), format!("no cluster named {:?}", config.cluster)))?;
            let route = Route::build(&key, config, target)?;
            if let Some(earlier) = built.iter().position(|e| e.shadows(&route)) {
                return Err(invalid(
                    &key,
                    format!("can never match: routes[{earlier}] matches every database this route names"),
                ));
            }
            built.push(route);
        }
        Ok(Router { routes: built })
    }

    /// The first route whose prefix and database pattern match `repo_path`.
    pub fn resolve(&self, repo_path: &str) -> Result<Destination<C>, GatewayError> {
        for (index, route) in self.routes.iter().enumerate() {
            let Some(rest) = strip_path_prefix(repo_path, route.path_prefix.as_deref()) else { continue };
            let database = canonical_database(rest);
            if database.is_empty() || !route.matcher.matches(&database) {
                continue;
            }
            return Ok(Destination {
                route: index,
                route_label: route.label.clone(),
                cluster: route.cluster.clone(),
                read_policy: route.read_policy,
                spelled_canonically: rest == database,
                judged_name: match &route.path_prefix {
                    Some(prefix) => format!("{prefix}/{database}"),
                    None => database.clone(),
                },
                database,
                upstream_repo_path: route.path_prefix.is_some().then(|| rest.to_owned()),
            });
        }
        Err(GatewayError::NoRoute { repo_path: repo_path.to_owned() })
    }
}

fn strip_path_prefix<'a>(repo_path: &'a str, prefix: Option<&str>) -> Option<&'a str> {
    let Some(prefix) = prefix else { return Some(repo_path) };
    let head = repo_path.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    repo_path[prefix.len()..].strip_prefix('/')
}

impl<C> Route<C> {
    fn build(key: &str, config: &RouteConfig, cluster: C) -> Result<Route<C>, ConfigError> {
        let matcher = Matcher::build(key, config)?;
        let path_prefix = match &config.path_prefix {
            None => None,
            Some(prefix) => {
                let ok = !prefix.is_empty()
                    && prefix.split('/').all(|segment| !segment.is_empty() && !segment.contains('@'));
                if !ok {
                    return Err(invalid(
                        format!("{key}.path_prefix"),
                        format!("{prefix:?} must be one or more non-empty segments separated by '/', without '@'"),
                    ));
                }
                Some(prefix.trim_matches('/').to_lowercase())
            }
        };
        Ok(Route { label: route_label(config), matcher, path_prefix, cluster, read_policy: config.read_policy })
    }

    /// Whether `self`, listed first, matches every request `later` would, so
    /// `later` can never be chosen. Conservative: only reports sure cases.
    fn shadows(&self, later: &Route<C>) -> bool {
        let early_prefix = self.path_prefix.as_deref().unwrap_or_default();
        let late_prefix = later.path_prefix.as_deref().unwrap_or_default();
        if early_prefix == late_prefix {
            return self.matcher.covers(&later.matcher);
        }
        // A shorter prefix sees the rest of the longer one as the database name.
        let rest = if early_prefix.is_empty() {
            Some(late_prefix)
        } else {
            late_prefix.strip_prefix(early_prefix).and_then(|r| r.strip_prefix('/'))
        };
        rest.is_some_and(|rest| self.matcher.matches(database_of(rest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(kind: &str, value: &str, prefix: Option<&str>, cluster: &str) -> RouteConfig {
        RouteConfig {
            database: (kind == "exact").then(|| value.to_owned()),
            database_prefix: (kind == "prefix").then(|| value.to_owned()),
            database_glob: (kind == "glob").then(|| value.to_owned()),
            path_prefix: prefix.map(str::to_owned),
            cluster: cluster.into(),
            read_policy: ReadPolicy::Primary,
        }
    }

    #[test]
    fn first_match_wins_and_prefixes_are_stripped() {
        let router = Router::build(
            &[
                route("exact", "shop", None, "a"),
                route("prefix", "team_", None, "b"),
                route("glob", "*", Some("eu"), "c"),
                route("glob", "*_prod", None, "d"),
            ],
            |name| Some(name.to_owned()),
        )
        .unwrap();
        let dest = |p: &str| router.resolve(p).map(|d| (d.cluster, d.database, d.upstream_repo_path));
        assert_eq!(dest("shop").unwrap(), ("a".into(), "shop".into(), None));
        assert_eq!(dest("SHOP/feature").unwrap(), ("a".into(), "shop".into(), None));
        assert_eq!(dest("team_x@main").unwrap(), ("b".into(), "team_x".into(), None));
        assert_eq!(dest("eu/orders").unwrap(), ("c".into(), "orders".into(), Some("orders".into())));
        assert_eq!(dest("EU/orders/dev").unwrap(), ("c".into(), "orders".into(), Some("orders/dev".into())));
        assert_eq!(router.resolve("EU/Orders").unwrap().judged_name, "eu/orders");
        assert_eq!(dest("sales_prod").unwrap(), ("d".into(), "sales_prod".into(), None));
        assert!(matches!(router.resolve("other"), Err(GatewayError::NoRoute { .. })));
        assert!(matches!(router.resolve("eu"), Err(GatewayError::NoRoute { .. })), "prefix alone names no database");
        assert!(matches!(router.resolve("eu/"), Err(GatewayError::NoRoute { .. })));
    }

    /// Every spelling that reaches a database's store is judged as that
    /// database, and only its exact name counts as spelled canonically.
    #[test]
    fn spellings_resolve_to_the_database_dolt_acts_on() {
        let router = Router::build(&[route("exact", "inkwell", None, "a"), route("glob", "*", None, "b")], |name| {
            Some(name.to_owned())
        })
        .unwrap();
        let resolved = |p: &str| router.resolve(p).map(|d| (d.cluster, d.database, d.spelled_canonically)).unwrap();
        assert_eq!(resolved("inkwell"), ("a".into(), "inkwell".into(), true));
        for spelling in
            ["INKWELL", "inkwell/main", "inkwell@v1", "inkwell/", "\u{130}nkwell", "in\u{212a}well", "Inkwell/x@y"]
        {
            assert_eq!(resolved(spelling), ("a".into(), "inkwell".into(), false), "{spelling:?}");
        }
        assert_eq!(resolved("other"), ("b".into(), "other".into(), true));
    }

    #[test]
    fn shadowed_routes_are_detected() {
        let cases = [
            (route("glob", "*", None, "a"), route("exact", "shop", None, "b"), true),
            (route("prefix", "te", None, "a"), route("prefix", "team", None, "b"), true),
            (route("prefix", "team", None, "a"), route("prefix", "te", None, "b"), false),
            (route("glob", "team*", None, "a"), route("glob", "team_*_x", None, "b"), true),
            (route("exact", "shop", None, "a"), route("exact", "SHOP", None, "b"), true),
            (route("exact", "shop", None, "a"), route("exact", "shop", Some("eu"), "b"), false),
            (route("glob", "*", None, "a"), route("glob", "*", Some("eu"), "b"), true),
            (route("exact", "us", None, "a"), route("glob", "*", Some("eu"), "b"), false),
            (route("glob", "*", Some("eu"), "a"), route("exact", "x", Some("eu/west"), "b"), true),
            (route("glob", "*_prod", None, "a"), route("glob", "*_dev", None, "b"), false),
        ];
        for (earlier, later, expected) in cases {
            let built = |r: &RouteConfig| Route::build("routes[0]", r, ()).unwrap();
            assert_eq!(built(&earlier).shadows(&built(&later)), expected, "{earlier:?} vs {later:?}");
            let verdict = Router::build(&[earlier.clone(), later.clone()], |_| Some(()));
            assert_eq!(verdict.is_err(), expected, "a shadowed route is a configuration error");
        }
    }
}
