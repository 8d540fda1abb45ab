//! The faces of one snapshot: JSON (`json.rs`, versioned schema), Prometheus
//! text (`prom.rs`) and HAProxy's CSV (`csv.rs`). Each is a pure function of
//! a `Snapshot` (and, for JSON, the collector's history): tested on values,
//! served by `web.rs`, and used by the admin socket.

pub mod csv;
pub mod json;
pub mod prom;

/// Microseconds as milliseconds (three decimals are kept by the value).
pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}
