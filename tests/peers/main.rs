//! Tests against real peers: the `dolt` CLI and `dolt sql-server` (one
//! server, or a two-node cluster), ghz, kustomize and kubernetes-validate,
//! with doltgate as the process users run. One binary, so the dependency tree
//! links once; each module is one concern.
//!
//! | module                  | proves                                                        |
//! |-------------------------|---------------------------------------------------------------|
//! | `transparent`           | clone/push/pull through doltgate match direct access, TLS too  |
//! | `big_database`          | a >50 MB database: whole, ranged and archive transfers         |
//! | `routing`               | databases routed to clusters by name, prefix and glob          |
//! | `cluster`               | a two-node Dolt cluster: writes follow the primary on failover |
//! | `auth`                  | passwords, keys, tokens, grants; floods and held streams       |
//! | `login`                 | `dolt login` through doltgate's page, in headless Chromium     |
//! | `push_rules`            | per-branch push permissions judged from the ref diff           |
//! | `table_rules`           | who may change which tables, in data or schema                 |
//! | `integrity`             | forged uploads, spellings and working sets cannot sidestep them|
//! | `branch_control_parity` | the mirror of `dolt_branch_control` gives Dolt's own verdict   |
//! | `bad_input`             | the corpus of hostile requests, each refused exactly           |
//! | `faults`                | upstreams that stall, die or lie                               |
//! | `metrics`, `ghz`        | Prometheus text over HTTP; load through ghz                    |
//! | `reload`, `shutdown`    | SIGHUP reload and SIGTERM drain without dropped calls          |
//! | `edge_cache`            | clones served from doltgate's disk cache, each file read once  |
//! | `storage`               | the storage decoders read what the real `dolt` writes          |
//! | `deploy`                | the Kubernetes manifests build and validate                    |

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod bad_input;
mod big_database;
mod branch_control_parity;
mod cluster;
mod deploy;
mod edge_cache;
mod faults;
mod ghz;
mod integrity;
mod login;
mod metrics;
mod push_rules;
mod reload;
mod routing;
mod shutdown;
mod signed_commits;
mod storage;
mod table_rules;
mod transparent;
