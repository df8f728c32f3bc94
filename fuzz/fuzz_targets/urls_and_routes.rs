//! Table-file paths and repository names from clients: parsing and route
//! resolution never panic, and a URL doltgate issues always routes back.
#![no_main]

use doltgate::config::{ReadPolicy, RouteConfig};
use doltgate::file_url;
use doltgate::route::Router;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = file_url::from_client_path(text);
    if let Ok(url) = file_url::to_client_url(text, "dolt-0", "http://gw:1") {
        let target = file_url::from_client_path(url.strip_prefix("http://gw:1").unwrap()).expect("routes back");
        assert_eq!(target.endpoint, "dolt-0");
    }
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
