//! What an accepted connection holds for its whole life, and the settings
//! every connection of the process shares.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};

use crate::runtime::Runtime;

/// Process-wide settings a connection needs besides the snapshot.
#[derive(Debug, Clone)]
pub struct ConnOpts {
    pub splice: bool,
    /// Latency buckets per server (`[stats] histograms`).
    pub histograms: bool,
    /// The access log, when on (`[log] access`).
    pub access_log: Option<Arc<crate::stats::access::AccessLog>>,
    /// http: park idle client connections after this long (`global.idle_park_after`).
    pub park_after: Option<std::time::Duration>,
    /// The daemon's forced and graceful stops, for the park's watcher (a
    /// connection's task waits on its session's `Sessions::halted`).
    pub force_stop: watch::Receiver<bool>,
    pub soft_stop: watch::Receiver<bool>,
}

/// The process-wide and frontend admission permits a connection holds.
pub type Permits = (Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>);

/// What an accepted connection holds for its whole life, whichever task serves
/// it (an idle HTTP connection that was parked and resumed gets a new task but
/// keeps this): its runtime snapshot, its admission permits and the shutdown
/// tracker. Dropping it counts the connection as closed.
pub struct Conn {
    pub rt: Arc<Runtime>,
    pub fe: usize,
    /// Where newer snapshots come from (http: each request uses the newest).
    pub shared: Arc<crate::runtime::Shared>,
    pub opts: Arc<ConnOpts>,
    /// Counted against its source's `conn_per_source` while it lives.
    limit: Option<crate::limits::ConnGuard>,
    /// Its entry in the open sessions (`show sessions`, `shutdown sessions`).
    pub session: Arc<crate::sessions::Session>,
    _tracker: mpsc::Sender<()>,
    _permits: Permits,
}

impl Conn {
    /// A new connection of frontend `fe` of snapshot `rt` (counted open until
    /// dropped).
    pub fn new(
        (rt, fe): (Arc<Runtime>, usize),
        opts: Arc<ConnOpts>,
        tracker: mpsc::Sender<()>,
        permits: Permits,
        (shared, client): (Arc<crate::runtime::Shared>, std::net::SocketAddr),
    ) -> Conn {
        let session = shared.sessions.open(client, rt.frontends[fe].name.clone());
        let counters = &rt.frontends[fe].counters;
        counters.conn_total.inc();
        let open = counters.conn_cur.inc();
        counters.conn_max.observe(open);
        Conn {
            rt,
            fe,
            shared,
            opts,
            limit: None,
            session,
            _tracker: tracker,
            _permits: permits,
        }
    }

    pub fn front(&self) -> &crate::runtime::FrontendRt {
        &self.rt.frontends[self.fe]
    }

    /// Apply the frontend's per-source connection limits to a connection from
    /// `src` (the PROXY header's address when there is one) to `dst_port`.
    /// `Ok(true)`: the source's requests are rate-limited too; `Err`: refused
    /// (counted; the caller closes the connection).
    pub fn admit_source(
        &mut self,
        src: std::net::IpAddr,
        dst_port: u16,
    ) -> Result<bool, crate::limits::Refused> {
        let front = &self.rt.frontends[self.fe];
        let Some(l) = front.source_limits.clone() else {
            return Ok(false);
        };
        if l.exempt(&front.acls, src, dst_port) {
            return Ok(false);
        }
        match l.connect(src, std::time::Instant::now()) {
            Ok(g) => {
                self.limit = Some(g);
                Ok(l.config().req_rate.is_some())
            }
            Err(why) => {
                match why {
                    crate::limits::Refused::Conns => front.counters.limit_conns.inc(),
                    crate::limits::Refused::ConnRate => front.counters.limit_conn_rate.inc(),
                }
                tracing::debug!(frontend = %front.name, %src, reason = ?why, "connection refused by per-source limits");
                Err(why)
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.front().counters.conn_cur.dec();
        self.shared.sessions.close(self.session.id);
    }
}
