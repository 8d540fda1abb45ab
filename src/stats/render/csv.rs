//! `/stats.csv`: HAProxy's `show stat` CSV — its 100 column names in its
//! order (fields 0 to 99, as HAProxy 2.6 to 3.2 document them), one row per
//! frontend (`FRONTEND`), server, and backend (`BACKEND`), so tools written
//! for HAProxy's CSV read it. A column fulcrum has no value for is empty.
//! Times (`qtime`, `ctime`, `rtime`, `ttime` and their `_max`) are in
//! milliseconds over the last five minutes (HAProxy: the last 1,024
//! requests).

use std::fmt::Write as _;

use crate::stats::latency::Phase;
use crate::stats::{BackendStats, FrontendStats, Latency, ServerStats, Snapshot, Window};

/// HAProxy's column names, in order.
pub const COLUMNS: [&str; 100] = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
];

/// One row being filled: a value per column, by name.
struct Row([String; 100]);

impl Row {
    fn new() -> Row {
        Row(std::array::from_fn(|_| String::new()))
    }

    fn set(&mut self, col: &str, v: impl ToString) -> &mut Row {
        // The names are this file's constants: a miss is a bug caught by the tests.
        if let Some(i) = COLUMNS.iter().position(|c| *c == col) {
            self.0[i] = v.to_string();
        } else {
            debug_assert!(false, "no column {col}");
        }
        self
    }

    fn write(&self, out: &mut String) {
        for v in &self.0 {
            quote(v, out);
            out.push(',');
        }
        out.push('\n');
    }
}

/// Quoted only when it must be (a comma, a quote or a line break).
fn quote(v: &str, out: &mut String) {
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn times(row: &mut Row, l: Option<&Latency>) {
    let Some(l) = l else { return };
    let ms = |p: Phase, max: bool| {
        let q = l.get(Window::Last5m, p);
        (if max { q.max } else { q.mean }) / 1000
    };
    row.set("qtime", ms(Phase::Queue, false))
        .set("ctime", ms(Phase::Connect, false))
        .set("rtime", ms(Phase::FirstByte, false))
        .set("ttime", ms(Phase::Total, false))
        .set("qtime_max", ms(Phase::Queue, true))
        .set("ctime_max", ms(Phase::Connect, true))
        .set("rtime_max", ms(Phase::FirstByte, true))
        .set("ttime_max", ms(Phase::Total, true));
}

fn responses(row: &mut Row, r: &[u64; 6]) {
    // hrsp_1xx .. hrsp_other: six columns in a row.
    let at = COLUMNS.iter().position(|c| *c == "hrsp_1xx").unwrap_or(0);
    for (col, v) in COLUMNS[at..at + 6].iter().zip(r) {
        row.set(col, v);
    }
}

fn frontend(f: &FrontendStats, iid: usize) -> Row {
    let mut r = Row::new();
    r.set("pxname", &f.name)
        .set("svname", "FRONTEND")
        .set("scur", f.conn_cur)
        .set("smax", f.conn_max)
        .set("stot", f.conn_total)
        .set("bin", f.bytes_in)
        .set("bout", f.bytes_out)
        .set("dreq", f.denied())
        .set("ereq", f.request_errors())
        .set("status", "OPEN")
        .set("pid", 1)
        .set("iid", iid)
        .set("sid", 0)
        .set("type", 0)
        .set("rate", f.rates.conn_rate)
        .set("rate_max", f.rates.conn_rate_max)
        .set("req_rate", f.rates.req_rate)
        .set("req_rate_max", f.rates.req_rate_max)
        .set("req_tot", f.http_requests)
        .set("mode", f.mode)
        .set("conn_rate", f.rates.conn_rate)
        .set("conn_rate_max", f.rates.conn_rate_max)
        .set("conn_tot", f.conn_total)
        .set("dcon", f.limit_conns + f.limit_conn_rate);
    if f.conn_limit > 0 {
        r.set("slim", f.conn_limit);
    }
    responses(&mut r, &f.http_responses);
    r
}

fn status(s: &ServerStats) -> &'static str {
    match s.status.as_str() {
        "up" => "UP",
        "drain" => "DRAIN",
        "maint" => "MAINT",
        _ => "DOWN",
    }
}

fn server(b: &BackendStats, s: &ServerStats, iid: usize, sid: usize) -> Row {
    let mut r = Row::new();
    r.set("pxname", &b.name)
        .set("svname", &s.name)
        .set("scur", s.conn_cur)
        .set("smax", s.conn_max)
        .set("stot", s.conn_total)
        .set("bin", s.bytes_in)
        .set("bout", s.bytes_out)
        .set("econ", s.connect_errors)
        .set("eresp", s.server_aborts)
        .set("wretr", s.retries)
        .set("status", status(s))
        .set("weight", s.weight)
        .set("act", u8::from(!s.backup))
        .set("bck", u8::from(s.backup))
        .set("pid", 1)
        .set("iid", iid)
        .set("sid", sid)
        .set("lbtot", s.picked)
        .set("type", 2)
        .set("rate", s.rates.conn_rate)
        .set("rate_max", s.rates.conn_rate_max)
        .set("cli_abrt", s.client_aborts)
        .set("srv_abrt", s.server_aborts)
        .set("addr", &s.addr)
        .set("connect", s.conn_total + s.connect_errors)
        .set("reuse", s.reused)
        .set("uweight", s.weight_configured);
    if s.conn_limit > 0 {
        r.set("slim", s.conn_limit);
    }
    if s.throttle_pct < 100 {
        r.set("throttle", s.throttle_pct);
    }
    if let Some(t) = s.last_pick_s {
        r.set("lastsess", t);
    }
    if s.checked {
        let health = if s.health == "up" {
            (s.rise + s.fall).saturating_sub(1 + s.check_progress)
        } else {
            s.check_progress
        };
        r.set("chkfail", s.checks_failed)
            .set("chkdown", s.went_down)
            .set("lastchg", s.since_change_ms / 1000)
            .set("downtime", s.down_total_ms / 1000)
            .set("check_duration", s.check_duration_ms)
            .set("last_chk", &s.last_check)
            .set("check_desc", &s.last_check)
            .set("check_rise", s.rise)
            .set("check_fall", s.fall)
            .set("check_health", health);
    }
    responses(&mut r, &s.http_responses);
    times(&mut r, s.latency.as_deref());
    r
}

fn backend(b: &BackendStats, iid: usize) -> Row {
    let mut r = Row::new();
    let up = |backup: bool| {
        b.servers
            .iter()
            .filter(|s| s.backup == backup && s.status == "up")
            .count()
    };
    let weight: u32 = b
        .servers
        .iter()
        .filter(|s| s.status == "up")
        .map(|s| s.weight)
        .sum();
    r.set("pxname", &b.name)
        .set("svname", "BACKEND")
        .set("qcur", b.queue_cur)
        .set("qmax", b.queue_max)
        .set("scur", b.conn_cur())
        .set("smax", b.conn_max)
        .set("stot", b.conn_total)
        .set("bin", b.bytes_in)
        .set("bout", b.bytes_out)
        .set("econ", b.connect_errors)
        .set(
            "eresp",
            b.http_bad_responses + b.http_server_timeouts + b.server_aborts,
        )
        .set("wretr", b.retries)
        .set("wredis", b.redispatches)
        .set("status", b.status())
        .set("weight", weight)
        .set("act", up(false))
        .set("bck", up(true))
        .set("pid", 1)
        .set("iid", iid)
        .set("sid", 0)
        .set("lbtot", b.servers.iter().map(|s| s.picked).sum::<u64>())
        .set("type", 1)
        .set("rate", b.rates.conn_rate)
        .set("rate_max", b.rates.conn_rate_max)
        .set("req_tot", b.http_requests)
        .set("cli_abrt", b.client_aborts)
        .set("srv_abrt", b.server_aborts)
        .set("algo", b.balance)
        .set("connect", b.conn_total + b.connect_errors)
        .set("reuse", b.http_reused)
        .set(
            "uweight",
            b.servers.iter().map(|s| s.weight_configured).sum::<u32>(),
        );
    if let Some(t) = b.servers.iter().filter_map(|s| s.last_pick_s).min() {
        r.set("lastsess", t);
    }
    responses(&mut r, &b.http_responses);
    times(&mut r, b.latency.as_deref());
    r
}

/// The header line and one row per frontend, server and backend.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("# ");
    for c in COLUMNS {
        let _ = write!(out, "{c},");
    }
    out.push('\n');
    let mut iid = 0;
    for f in &snap.frontends {
        iid += 1;
        frontend(f, iid).write(&mut out);
    }
    for b in &snap.backends {
        iid += 1;
        for (sid, s) in b.servers.iter().enumerate() {
            server(b, s, iid, sid + 1).write(&mut out);
        }
        backend(b, iid).write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HAProxy's header for fields 0..=99, as its management guide gives it.
    const HAPROXY: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,";

    #[test]
    fn the_header_is_haproxys_and_rows_have_every_column() {
        let snap = Snapshot {
            frontends: vec![FrontendStats {
                name: "web".into(),
                ..FrontendStats::default()
            }],
            backends: vec![BackendStats {
                name: "app".into(),
                servers: vec![ServerStats {
                    name: "a,b".into(),
                    status: "maint".into(),
                    checked: true,
                    rise: 2,
                    fall: 3,
                    health: "up".into(),
                    ..ServerStats::default()
                }],
                ..BackendStats::default()
            }],
            ..Snapshot::default()
        };
        let text = render(&snap);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HAPROXY));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[0].starts_with("web,FRONTEND,"));
        assert!(rows[1].starts_with("app,\"a,b\","), "{}", rows[1]);
        assert!(rows[2].starts_with("app,BACKEND,"));
        // Every row has as many fields as the header (one quoted comma aside).
        for r in [rows[0], rows[2]] {
            assert_eq!(r.matches(',').count(), 100, "{r}");
        }
        let col = |row: &str, name: &str| {
            let i = COLUMNS.iter().position(|c| *c == name).unwrap();
            row.replace("\"a,b\"", "ab")
                .split(',')
                .nth(i)
                .unwrap()
                .to_string()
        };
        assert_eq!(col(rows[1], "status"), "MAINT");
        assert_eq!(col(rows[1], "check_health"), "4");
        assert_eq!(col(rows[2], "status"), "DOWN");
        assert_eq!(col(rows[0], "status"), "OPEN");
        assert_eq!(col(rows[0], "type"), "0");
    }
}
