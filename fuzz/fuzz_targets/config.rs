//! Configuration text: parsing and building (as `check-config` does) answer
//! with an error, never a panic.
#![no_main]

use doltgate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = Config::parse(text) {
        let _ = doltgate::check(&config);
    }
});
