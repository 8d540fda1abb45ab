//! `/metrics`: the Prometheus text format (version 0.0.4).
//!
//! Names are `fulcrum_<scope>_<field>`; a counter ends in `_total` (a field
//! already named `..._total` is not doubled: `conn_total` becomes
//! `fulcrum_frontend_conn_total`). Labels `frontend`, `backend`, `server`.
//! Times are in seconds. Latency is a summary per backend and per server and
//! phase (`queue`, `connect`, `first_byte`, `total`): its quantiles cover the
//! last five minutes, its `_sum` and `_count` everything since start.

use std::fmt::Write as _;

use crate::stats::latency::Phase;
use crate::stats::{
    BackendBase, Field, FrontendBase, GlobalCounters, HTTP_REJECT_CLASSES, Kind, Latency,
    RESPONSE_CLASSES, ServerBase, Snapshot, Window,
};

/// The content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric's family, written once: `# HELP` and `# TYPE`, then its samples.
struct Family<'o> {
    out: &'o mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_label(val, self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {v}");
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The metric name of a counter-set field.
fn metric(scope: &str, f: &Field) -> String {
    match f.kind {
        Kind::Counter => {
            let base = f.name.strip_suffix("_total").unwrap_or(f.name);
            format!("fulcrum_{scope}_{base}_total")
        }
        Kind::Gauge => format!("fulcrum_{scope}_{}", f.name),
    }
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    }
}

/// One object of a counter set: its labels, and its values in field order.
type Object<'s> = (Vec<(&'static str, &'s str)>, Vec<u64>);

/// One family per field of a set, one sample per object.
fn set_families(fam: &mut Family<'_>, scope: &str, fields: &[Field], objects: &[Object<'_>]) {
    for (i, f) in fields.iter().enumerate() {
        let name = metric(scope, f);
        fam.head(&name, kind(f.kind), f.help);
        for (labels, values) in objects {
            fam.sample(&name, labels, values[i]);
        }
    }
}

fn values(visit: impl FnOnce(&mut dyn FnMut(&'static Field, u64))) -> Vec<u64> {
    let mut v = Vec::new();
    visit(&mut |_, n| v.push(n));
    v
}

/// The whole snapshot as Prometheus text.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let mut fam = Family { out: &mut out };
    process(&mut fam, snap);

    let fronts: Vec<_> = snap
        .frontends
        .iter()
        .map(|f| {
            let labels = vec![("frontend", f.name.as_str())];
            (labels, values(|cb| f.base.visit(cb)))
        })
        .collect();
    set_families(&mut fam, "frontend", FrontendBase::FIELDS, &fronts);
    fam.head(
        "fulcrum_frontend_http_responses_total",
        "counter",
        "http: responses sent, by status class.",
    );
    for f in &snap.frontends {
        for (class, v) in RESPONSE_CLASSES.iter().zip(f.http_responses) {
            fam.sample(
                "fulcrum_frontend_http_responses_total",
                &[("frontend", &f.name), ("code", class)],
                v,
            );
        }
    }
    fam.head(
        "fulcrum_frontend_http_rejected_total",
        "counter",
        "http: requests refused as malformed, by class.",
    );
    for f in &snap.frontends {
        for class in HTTP_REJECT_CLASSES {
            let n = f.rejected(class);
            fam.sample(
                "fulcrum_frontend_http_rejected_total",
                &[("frontend", &f.name), ("class", class)],
                n,
            );
        }
    }

    let backs: Vec<_> = snap
        .backends
        .iter()
        .map(|b| {
            let labels = vec![("backend", b.name.as_str())];
            (labels, values(|cb| b.base.visit(cb)))
        })
        .collect();
    set_families(&mut fam, "backend", BackendBase::FIELDS, &backs);
    backend_state(&mut fam, snap);

    let servers: Vec<_> = snap
        .backends
        .iter()
        .flat_map(|b| {
            b.servers.iter().map(move |s| {
                let labels = vec![("backend", b.name.as_str()), ("server", s.name.as_str())];
                (labels, values(|cb| s.base.visit(cb)))
            })
        })
        .collect();
    set_families(&mut fam, "server", ServerBase::FIELDS, &servers);
    server_state(&mut fam, snap);
    latency(&mut fam, snap);
    out
}

fn process(fam: &mut Family<'_>, snap: &Snapshot) {
    let g = &snap.global;
    fam.head("fulcrum_info", "gauge", "The version running (always 1).");
    fam.sample("fulcrum_info", &[("version", g.version)], 1);
    let gauges: [(&str, &str, u64); 6] = [
        (
            "fulcrum_start_time_seconds",
            "When the daemon started (Unix time).",
            g.started_at,
        ),
        (
            "fulcrum_config_generation",
            "The configuration generation serving (1 at start, +1 per change).",
            g.generation,
        ),
        (
            "fulcrum_fd_limit",
            "The file-descriptor limit in effect.",
            g.fd_limit,
        ),
        (
            "fulcrum_maxconn",
            "Client connections allowed at once over every frontend.",
            g.maxconn,
        ),
        ("fulcrum_threads", "Worker threads.", g.threads),
        (
            "fulcrum_connections",
            "Client connections open now.",
            g.conn_cur,
        ),
    ];
    for (name, help, v) in gauges {
        fam.head(name, "gauge", help);
        fam.sample(name, &[], v);
    }
    let vals = values(|cb| g.base.visit(cb));
    set_families(fam, "process", GlobalCounters::FIELDS, &[(vec![], vals)]);
}

fn backend_state(fam: &mut Family<'_>, snap: &Snapshot) {
    fam.head(
        "fulcrum_backend_up",
        "gauge",
        "1 while some server of the backend takes new connections.",
    );
    for b in &snap.backends {
        let up = u8::from(b.status() == "UP");
        fam.sample("fulcrum_backend_up", &[("backend", &b.name)], up);
    }
    fam.head(
        "fulcrum_backend_http_responses_total",
        "counter",
        "http: responses from its servers (and the 502/504 given for them), by status class.",
    );
    for b in &snap.backends {
        for (class, v) in RESPONSE_CLASSES.iter().zip(b.http_responses) {
            fam.sample(
                "fulcrum_backend_http_responses_total",
                &[("backend", &b.name), ("code", class)],
                v,
            );
        }
    }
}

fn server_state(fam: &mut Family<'_>, snap: &Snapshot) {
    let each = |fam: &mut Family<'_>, name: &str, f: &dyn Fn(&crate::stats::ServerStats) -> f64| {
        for b in &snap.backends {
            for s in &b.servers {
                fam.sample(name, &[("backend", &b.name), ("server", &s.name)], f(s));
            }
        }
    };
    fam.head(
        "fulcrum_server_status",
        "gauge",
        "1 for the server's current status (up, down, drain or maint), 0 for the others.",
    );
    for b in &snap.backends {
        for s in &b.servers {
            for st in ["up", "down", "drain", "maint"] {
                fam.sample(
                    "fulcrum_server_status",
                    &[("backend", &b.name), ("server", &s.name), ("status", st)],
                    u8::from(s.status == st),
                );
            }
        }
    }
    type Gauge<'a> = (
        &'a str,
        &'a str,
        &'a dyn Fn(&crate::stats::ServerStats) -> f64,
    );
    let gauges: [Gauge<'_>; 6] = [
        (
            "fulcrum_server_conn_cur",
            "Connections open to it now.",
            &|s| s.conn_cur as f64,
        ),
        (
            "fulcrum_server_weight",
            "The weight in effect (slow start, a script's weight).",
            &|s| f64::from(s.weight),
        ),
        (
            "fulcrum_server_ejected",
            "1 while passive ejection keeps it out.",
            &|s| f64::from(u8::from(s.ejected)),
        ),
        (
            "fulcrum_server_check_duration_seconds",
            "How long its last active check took.",
            &|s| s.check_duration_ms as f64 / 1000.0,
        ),
        (
            "fulcrum_server_downtime_seconds",
            "Total time its checks kept it down.",
            &|s| s.down_total_ms as f64 / 1000.0,
        ),
        (
            "fulcrum_server_last_change_seconds",
            "Time since its health last changed.",
            &|s| s.since_change_ms as f64 / 1000.0,
        ),
    ];
    for (name, help, f) in gauges {
        fam.head(name, "gauge", help);
        each(fam, name, f);
    }
    fam.head(
        "fulcrum_server_http_responses_total",
        "counter",
        "http: its responses (and the 502/504 given for it), by status class.",
    );
    for b in &snap.backends {
        for s in &b.servers {
            for (class, v) in RESPONSE_CLASSES.iter().zip(s.http_responses) {
                fam.sample(
                    "fulcrum_server_http_responses_total",
                    &[("backend", &b.name), ("server", &s.name), ("code", class)],
                    v,
                );
            }
        }
    }
}

fn summary(fam: &mut Family<'_>, name: &str, labels: &[(&str, &str)], l: &Latency) {
    for p in Phase::ALL {
        let mut with: Vec<(&str, &str)> = labels.to_vec();
        with.push(("phase", p.as_str()));
        let window = l.get(Window::Last5m, p);
        for (q, v) in [
            ("0.5", window.p50),
            ("0.9", window.p90),
            ("0.99", window.p99),
            ("0.999", window.p999),
        ] {
            let mut ql = with.clone();
            ql.push(("quantile", q));
            fam.sample(name, &ql, v as f64 / 1e6);
        }
        let total = l.get(Window::SinceStart, p);
        fam.sample(&format!("{name}_sum"), &with, total.sum as f64 / 1e6);
        fam.sample(&format!("{name}_count"), &with, total.count);
    }
}

fn latency(fam: &mut Family<'_>, snap: &Snapshot) {
    let name = "fulcrum_backend_latency_seconds";
    if snap.backends.iter().any(|b| b.latency.is_some()) {
        fam.head(
            name,
            "summary",
            "Time per phase over its servers: quantiles over the last 5 minutes, sum and count since start.",
        );
        for b in &snap.backends {
            if let Some(l) = &b.latency {
                summary(fam, name, &[("backend", &b.name)], l);
            }
        }
    }
    let name = "fulcrum_server_latency_seconds";
    if snap
        .backends
        .iter()
        .any(|b| b.servers.iter().any(|s| s.latency.is_some()))
    {
        fam.head(
            name,
            "summary",
            "Time per phase: quantiles over the last 5 minutes, sum and count since start.",
        );
        for b in &snap.backends {
            for s in &b.servers {
                if let Some(l) = &s.latency {
                    summary(fam, name, &[("backend", &b.name), ("server", &s.name)], l);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{BackendStats, FrontendStats, ServerStats};

    #[test]
    fn names_follow_the_conventions() {
        let f = |name, kind| Field {
            name,
            kind,
            help: "",
        };
        assert_eq!(
            metric("frontend", &f("conn_total", Kind::Counter)),
            "fulcrum_frontend_conn_total"
        );
        assert_eq!(
            metric("backend", &f("retries", Kind::Counter)),
            "fulcrum_backend_retries_total"
        );
        assert_eq!(
            metric("server", &f("conn_cur", Kind::Gauge)),
            "fulcrum_server_conn_cur"
        );
    }

    #[test]
    fn labels_are_escaped_and_every_family_has_help_and_type() {
        let snap = Snapshot {
            frontends: vec![FrontendStats {
                name: "we\"b\\".into(),
                ..FrontendStats::default()
            }],
            backends: vec![BackendStats {
                name: "app".into(),
                servers: vec![ServerStats {
                    name: "a".into(),
                    status: "drain".into(),
                    latency: Some(Box::default()),
                    ..ServerStats::default()
                }],
                ..BackendStats::default()
            }],
            ..Snapshot::default()
        };
        let text = render(&snap);
        assert!(text.contains("frontend=\"we\\\"b\\\\\""), "{text}");
        assert!(
            text.contains("fulcrum_server_status{backend=\"app\",server=\"a\",status=\"drain\"} 1")
        );
        assert!(text.contains(
            "fulcrum_server_latency_seconds_count{backend=\"app\",server=\"a\",phase=\"total\"} 0"
        ));
        let mut typed = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                assert!(typed.insert(rest.split(' ').next().unwrap().to_string()));
            }
        }
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| typed.contains(*f))
                .unwrap_or(name);
            assert!(typed.contains(family), "{name} has no TYPE");
        }
    }
}
