//! fulcrum: an L4/L7 load-balancer daemon configured by one TOML file.
//!
//! The flow: `config` validates a file into a `Config`; `runtime` builds the
//! immutable snapshot the connections read (`Shared`, one `ArcSwap`);
//! `daemon::start` sizes the file-descriptor budget, binds the `listener`s and
//! starts the worker threads. Each accepted connection goes through the accept
//! pipeline (PROXY header, per-source `limits`) and becomes a `net::Stream`
//! with its `net::Conn`, served by `l4` (tcp) or `l7::session` (http); both
//! reach servers through `connect` (pick with `balancers`, queue, connect,
//! retry) and move bytes with `net`. `command` reads and steers a running
//! daemon. Layers and the module map: CONTRIBUTING.md.

// No unsafe code but the one registration tokio makes unsafe (`l7::park`).
#![deny(unsafe_code)]
// Nothing on the network path may panic on input: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod balancers;
pub mod command;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod demo;
pub mod eject;
pub mod fdlimit;
pub mod health;
pub mod l4;
pub mod l7;
pub mod limits;
pub mod listener;
pub mod listeners;
pub mod net;
pub mod origin;
pub mod rules;
pub mod runtime;
pub mod server;
pub mod sessions;
pub mod shutdown;
pub mod stats;
pub mod table;
pub mod tls;
pub mod web;
