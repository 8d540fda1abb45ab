//! fulcrum: an L4/L7 load-balancer daemon configured by one TOML file.
//!
//! Module map (see `DESIGN.md` in the shared docs and README's design notes):
//! `config` parses and validates; `runtime` builds the immutable snapshot;
//! `daemon` binds listeners and runs them; `l4` forwards TCP with splice(2);
//! `balancers` pick servers; `stats` counts; `server` holds live server state.

pub mod config;
