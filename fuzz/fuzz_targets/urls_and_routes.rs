//! Repository names from clients: route resolution never panics and never
//! yields an empty database name. (Table-file URLs: see `capability_urls`.)
#![no_main]

use doltgate::config::{ReadPolicy, RouteConfig};
use doltgate::route::Router;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let route = |glob: &str, prefix: Option<&str>| RouteConfig {
        database: None,
        database_prefix: None,
        database_glob: Some(glob.into()),
        path_prefix: prefix.map(str::to_owned),
        cluster: "c".into(),
        read_policy: ReadPolicy::Primary,
    };
    let router = Router::new(&[route("team_*", None), route("*", Some("eu/west"))]);
    if let Ok(destination) = router.resolve(text) {
        assert!(!destination.database.is_empty());
    }
});
