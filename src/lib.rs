//! fulcrum: an L4/L7 load-balancer daemon configured by one TOML file.
//!
//! Dependencies point one way: `daemon → config → runtime → {listener, l4} →
//! {balancers, stats} → server`. See README's design notes for the module map.

// No unsafe code but the one registration tokio makes unsafe (`l7::park`).
#![deny(unsafe_code)]
// Nothing on the network path may panic on input: no unwrap/expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod balancers;
pub mod command;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod demo;
pub mod fdlimit;
pub mod l4;
pub mod l7;
pub mod limits;
pub mod listener;
pub mod net;
pub mod origin;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod table;
