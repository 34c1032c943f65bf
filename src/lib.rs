//! ncp-watchd watches media work on NAVER Cloud Platform and tells other systems the
//! moment it finishes.
//!
//! Data flows one way; the modules, in reading order:
//!
//! - [`config`]: the TOML file → validated [`config::Config`]; credentials; [`config::Secret`].
//! - [`schedule`]: when to call NCP; the per-host rate limiter, the only door to the network.
//! - [`ncp`]: the only code that knows NCP: signer, client, endpoints, wire types.
//! - [`watch`]: the domain and the pure change detector.
//! - [`event`]: the CloudEvents contract that sinks receive.
//! - [`cmd`]: the commands (`check`, `once`, `register`).
//! - [`sim`]: the NCP simulator behind `ncp-sim`, the demo and the tests.
//! - [`status`]: the status report behind `status`, `/api/status` and the status page.
//! - [`server`]: `/`, `/api/status`, `/healthz`, `/readyz`, `/metrics`, the callback route and systemd notifications.
//! - [`callbacks`]: VOD Station callbacks judged and turned into hints for the daemon loop.
//! - [`cli`]: the command line.

#![forbid(unsafe_code)]
// Nothing from outside may panic the process: no unwrap or expect outside tests, and each
// expect that remains states the invariant that makes it unreachable.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod callbacks;
pub mod cli;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod event;
pub mod ncp;
pub mod schedule;
pub mod server;
pub mod sim;
pub mod sink;
pub mod status;
pub mod store;
pub mod text;
pub mod watch;
