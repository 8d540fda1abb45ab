//! Counters and latencies: relaxed atomics bumped on the network path
//! (`sets.rs`, `latency.rs`), read as plain snapshots (`snapshot.rs`); the
//! collector (`collect.rs`) turns them into rates, windows and histories once
//! a second on its own thread; `render/` writes JSON, Prometheus and CSV from
//! one view; `web.rs` serves those and the dashboard.
//!
//! Direction names follow HAProxy: `bytes_in` is what clients sent (towards the
//! servers), `bytes_out` is what servers sent back (towards the clients).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge that goes up and down (current connections, queue length).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Up by one; returns the new value.
    #[inline]
    pub fn inc(&self) -> u64 {
        self.0.fetch_add(1, Relaxed) + 1
    }
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The highest value seen (most connections open at once, longest queue).
#[derive(Debug, Default)]
pub struct Max(AtomicU64);

impl Max {
    /// Raise the maximum to `v` if it is higher (a plain load when it is not).
    #[inline]
    pub fn observe(&self, v: u64) {
        if v > self.0.load(Relaxed) {
            self.0.fetch_max(v, Relaxed);
        }
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// What kind of number a field is (Prometheus: `counter` or `gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Counter {
    pub const KIND: Kind = Kind::Counter;
}

impl Gauge {
    pub const KIND: Kind = Kind::Gauge;
}

impl Max {
    pub const KIND: Kind = Kind::Gauge;
}

/// One field of a counter set: its name, kind and one-line meaning — what the
/// stats page, the JSON, Prometheus and the admin socket show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// Declares a set of counters once: the struct of atomics, its plain copy,
/// the table of fields, and a visitor over the copy's values.
macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident => $values:ident {
            $( #[doc = $help:literal] $field:ident : $ty:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $( #[doc = $help] pub $field: $ty, )*
        }

        #[doc = concat!("A plain copy of [`", stringify!($name), "`].")]
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $values {
            $( #[doc = $help] pub $field: u64, )*
        }

        impl $name {
            /// Every field, in declaration order.
            pub const FIELDS: &'static [Field] = &[
                $( Field { name: stringify!($field), kind: $ty::KIND, help: $help.trim_ascii() }, )*
            ];

            /// Read every counter once.
            pub fn values(&self) -> $values {
                $values { $( $field: self.$field.get(), )* }
            }
        }

        impl $values {
            /// Every field with its value, in declaration order.
            pub fn visit(&self, mut f: impl FnMut(&'static Field, u64)) {
                let values = [$( self.$field, )*];
                for (field, v) in $name::FIELDS.iter().zip(values) {
                    f(field, v);
                }
            }
        }
    };
}

// After the macro, so the counter sets can use it.
pub mod access;
pub mod collect;
pub mod latency;
pub mod render;
mod sets;
mod snapshot;

pub use sets::*;
pub use snapshot::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_set_visits_every_field_once_in_order() {
        let c = BackendBase::default();
        c.retries.add(3);
        c.queue_cur.inc();
        let mut seen = Vec::new();
        c.values().visit(|f, v| seen.push((f.name, f.kind, v)));
        assert_eq!(seen.len(), BackendBase::FIELDS.len());
        assert!(seen.contains(&("retries", Kind::Counter, 3)));
        assert!(seen.contains(&("queue_cur", Kind::Gauge, 1)));
        assert_eq!(seen[0].0, "conn_total");
        let help = BackendBase::FIELDS[0].help;
        assert_eq!(help, "Connections that reached a server.");
        for set in [
            FrontendBase::FIELDS,
            BackendBase::FIELDS,
            ServerBase::FIELDS,
        ] {
            let mut names: Vec<_> = set.iter().map(|f| f.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), set.len());
            assert!(set.iter().all(|f| !f.help.is_empty()));
        }
    }

    #[test]
    fn a_max_only_rises() {
        let m = Max::default();
        m.observe(3);
        m.observe(1);
        assert_eq!(m.get(), 3);
        m.observe(7);
        assert_eq!(m.get(), 7);
    }

    #[test]
    fn statuses_fall_in_their_class() {
        let r = Responses::default();
        for s in [100, 204, 302, 404, 503, 99, 600, 0] {
            r.count(s);
        }
        assert_eq!(r.values(), [1, 1, 1, 1, 1, 3]);
    }
}
