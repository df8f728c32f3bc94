//! Tests that need no real peer: doltgate (in this process or as its binary)
//! in front of in-process fake upstreams, for what a real Dolt cannot be made
//! to do on demand (exact frames, stalls, huge bodies) and for the CLI.
//!
//! | module              | proves                                                      |
//! |---------------------|-------------------------------------------------------------|
//! | `grpc_forwarding`   | calls forwarded message by message, statuses mapped          |
//! | `file_forwarding`   | table-file GET/PUT streamed, verified, limits enforced       |
//! | `connection_limits` | silent and half-preface connections closed; connection cap |
//! | `jwt_providers`     | bearer JWTs of every algorithm; JWK Sets from file and URL, rotated |
//! | `cli`               | `check-config` verdicts and exit codes                       |

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod connection_limits;
mod file_forwarding;
mod grpc_forwarding;
mod jwt_providers;
