//! Test harness: real `dolt` processes and doltgate, each on 127.0.0.1 with
//! ports chosen at run time, each killed when its guard drops (on failure too).
//!
//! Peers come from `$DOLT` (set by `scripts/test`, which installs them), else
//! from `dolt` on PATH. A missing peer fails the test: it is never skipped.

#![allow(dead_code)]

mod browser;
mod data;
mod dolt;
mod doltgate;
mod ghz;
mod gpg;
mod oidc;
mod process;
mod prometheus;
mod relay;
mod s3;
mod tls;

// Each test binary uses its own subset.
#[allow(unused_imports)]
pub use {
    browser::*, data::*, dolt::*, doltgate::*, ghz::*, gpg::*, oidc::*, process::*, prometheus::*, relay::*, s3::*,
    tls::*,
};
