//! Repository names from clients: route resolution never panics, and the
//! database it yields is the one Dolt would act on: never empty, never with a
//! revision (`/`, `@`) left on it. (Table-file URLs: see `capability_urls`.)
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
    let routes = [route("team_*", None), route("*", Some("eu/west"))];
    let router = Router::build(&routes, |name| Some(name.to_owned())).expect("the routes are valid");
    if let Ok(destination) = router.resolve(text) {
        assert!(!destination.database.is_empty());
        assert!(!destination.database.contains(['/', '@']), "{:?}", destination.database);
    }
});
