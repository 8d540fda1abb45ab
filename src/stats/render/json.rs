//! `/stats.json`: schema version 1 (docs/stats-json.md). Additions keep the
//! version; a renamed or removed key, or a changed meaning, raises it.
//!
//! Every counter of a set appears under `counters` by its field name, so a
//! counter added to a set appears here without touching this file.

use serde_json::{Map, Value, json};

use super::ms;
use crate::stats::collect::{Collector, Of, Point};
use crate::stats::latency::Phase;
use crate::stats::{
    BackendStats, FrontendStats, HTTP_REJECT_CLASSES, Latency, RESPONSE_CLASSES, Rates,
    ServerStats, Snapshot, Window,
};

/// The schema version.
pub const SCHEMA: u64 = 1;

/// The whole snapshot; with `history` > 0, the last `history` seconds of
/// request rate, error rate and p99 per frontend, backend and server.
pub fn render(snap: &Snapshot, collector: &Collector, history: usize) -> Value {
    let g = &snap.global;
    let mut process = json!({
        "version": g.version,
        "pid": g.pid,
        "started_at": g.started_at,
        "uptime_s": g.uptime_s,
        "generation": g.generation,
        "threads": g.threads,
        "fd_limit": g.fd_limit,
        "maxconn": g.maxconn,
        "conn_cur": g.conn_cur,
        "tick": collector.ticks(),
        "last_reload": g.last_reload.as_ref().map(|(at, r)| match r {
            Ok(generation) => json!({ "at": at, "ok": true, "generation": generation }),
            Err(e) => json!({ "at": at, "ok": false, "error": e }),
        }),
    });
    let mut counters = Map::new();
    g.base.visit(|f, v| {
        counters.insert(f.name.into(), v.into());
    });
    process["counters"] = counters.into();
    let hist = |of: Of<'_>| (history > 0).then(|| series(&collector.history(of, history)));
    json!({
        "schema": SCHEMA,
        "process": process,
        "frontends": snap.frontends.iter().map(|f| {
            let mut v = frontend(f);
            if let Some(h) = hist(Of::Frontend(&f.name)) {
                v["history"] = h;
            }
            v
        }).collect::<Vec<_>>(),
        "backends": snap.backends.iter().map(|b| {
            let mut v = backend(b);
            if let Some(h) = hist(Of::Backend(&b.name)) {
                v["history"] = h;
            }
            if let Some(list) = v["servers"].as_array_mut() {
                for (sv, s) in list.iter_mut().zip(&b.servers) {
                    if let Some(h) = hist(Of::Server(s.id)) {
                        sv["history"] = h;
                    }
                }
            }
            v
        }).collect::<Vec<_>>(),
    })
}

fn series(points: &[Point]) -> Value {
    json!({
        "req": points.iter().map(|p| p.req).collect::<Vec<_>>(),
        "err": points.iter().map(|p| p.err).collect::<Vec<_>>(),
        "p99_ms": points.iter().map(|p| ms(u64::from(p.p99_us))).collect::<Vec<_>>(),
    })
}

fn rates(r: &Rates) -> Value {
    json!({
        "conn_rate": r.conn_rate,
        "conn_rate_max": r.conn_rate_max,
        "req_rate": r.req_rate,
        "req_rate_max": r.req_rate_max,
    })
}

fn responses(r: &[u64; 6]) -> Value {
    let mut m = Map::new();
    for (name, v) in RESPONSE_CLASSES.iter().zip(r) {
        m.insert((*name).into(), (*v).into());
    }
    m.into()
}

fn latency(l: Option<&Latency>) -> Value {
    let Some(l) = l else { return Value::Null };
    let mut windows = Map::new();
    for w in Window::ALL {
        let mut phases = Map::new();
        for p in Phase::ALL {
            let q = l.get(w, p);
            phases.insert(
                p.as_str().into(),
                json!({
                    "count": q.count,
                    "p50_ms": ms(q.p50),
                    "p90_ms": ms(q.p90),
                    "p99_ms": ms(q.p99),
                    "p999_ms": ms(q.p999),
                    "max_ms": ms(q.max),
                    "mean_ms": ms(q.mean),
                }),
            );
        }
        windows.insert(w.as_str().into(), phases.into());
    }
    windows.into()
}

fn frontend(f: &FrontendStats) -> Value {
    let mut counters = Map::new();
    f.base.visit(|field, v| {
        counters.insert(field.name.into(), v.into());
    });
    let mut rejected = Map::new();
    for class in HTTP_REJECT_CLASSES {
        rejected.insert(class.into(), f.rejected(class).into());
    }
    json!({
        "name": f.name,
        "mode": f.mode,
        "conn_limit": f.conn_limit,
        "counters": counters,
        "http_responses": responses(&f.http_responses),
        "http_rejected": rejected,
        "request_errors": f.request_errors(),
        "denied": f.denied(),
        "rates": rates(&f.rates),
    })
}

fn backend(b: &BackendStats) -> Value {
    let mut counters = Map::new();
    b.base.visit(|field, v| {
        counters.insert(field.name.into(), v.into());
    });
    json!({
        "name": b.name,
        "balance": b.balance,
        "status": b.status(),
        "servers_up": b.servers_up(),
        "servers_total": b.servers.len(),
        "conn_cur": b.conn_cur(),
        "counters": counters,
        "http_responses": responses(&b.http_responses),
        "rates": rates(&b.rates),
        "latency": latency(b.latency.as_deref()),
        "servers": b.servers.iter().map(server).collect::<Vec<_>>(),
    })
}

fn server(s: &ServerStats) -> Value {
    let mut counters = Map::new();
    s.base.visit(|field, v| {
        counters.insert(field.name.into(), v.into());
    });
    json!({
        "name": s.name,
        "addr": s.addr,
        "backup": s.backup,
        "status": s.status,
        "admin": s.admin,
        "health": s.health,
        "ejected": s.ejected,
        "removed": s.removed,
        "fail_open": s.fail_open,
        "reason": s.reason(),
        "weight": s.weight,
        "weight_configured": s.weight_configured,
        "throttle_pct": s.throttle_pct,
        "conn_cur": s.conn_cur,
        "conn_limit": s.conn_limit,
        "check": {
            "enabled": s.checked,
            "rise": s.rise,
            "fall": s.fall,
            "last": s.last_check,
            "duration_ms": s.check_duration_ms,
            "age_ms": s.check_age_ms,
            "progress": s.check_progress,
        },
        "since_change_ms": s.since_change_ms,
        "down_total_ms": s.down_total_ms,
        "last_pick_s": s.last_pick_s,
        "counters": counters,
        "http_responses": responses(&s.http_responses),
        "rates": rates(&s.rates),
        "latency": latency(s.latency.as_deref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Percentiles;

    fn snap() -> Snapshot {
        let mut s = ServerStats {
            name: "a".into(),
            status: "up".into(),
            ..ServerStats::default()
        };
        s.base.picked = 7;
        let mut lat = Latency::default();
        lat.by[Window::Last10s as usize][Phase::Total as usize] = Percentiles {
            count: 3,
            p99: 12_345,
            ..Percentiles::default()
        };
        s.latency = Some(Box::new(lat));
        let mut f = FrontendStats {
            name: "web".into(),
            mode: "http",
            http_rejected: vec![("bad_path", 2)],
            ..FrontendStats::default()
        };
        f.base.http_request_timeouts = 1;
        Snapshot {
            frontends: vec![f],
            backends: vec![BackendStats {
                name: "app".into(),
                servers: vec![s],
                ..BackendStats::default()
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn every_counter_and_class_is_present_by_name() {
        let v = render(&snap(), &Collector::default(), 0);
        assert_eq!(v["schema"], 1);
        let f = &v["frontends"][0];
        assert_eq!(f["http_rejected"]["bad_path"], 2);
        assert_eq!(f["http_rejected"]["bare_crlf"], 0);
        assert_eq!(f["request_errors"], 3);
        assert_eq!(
            f["counters"].as_object().unwrap().len(),
            crate::stats::FrontendBase::FIELDS.len()
        );
        let s = &v["backends"][0]["servers"][0];
        assert_eq!(s["counters"]["picked"], 7);
        assert_eq!(s["latency"]["10s"]["total"]["p99_ms"], 12.345);
        assert_eq!(s["latency"]["10s"]["total"]["count"], 3);
        assert_eq!(v["backends"][0]["status"], "UP");
        assert!(v["backends"][0].get("history").is_none());
    }
}
