//! The stats page (`[stats] listen`): axum on a thread and a single-threaded
//! runtime of its own, so a page being read never takes time from a traffic
//! thread.
//!
//! - `/` the dashboard (`dashboard.html`, embedded; it polls `/stats.json`);
//! - `/stats.json` (`?history=N` adds the last N ≤ 300 seconds per object);
//! - `/metrics` Prometheus text; `/stats.csv` (and `/;csv`) HAProxy's CSV;
//! - `POST /admin` (only with `admin = true`): `backend`, `server`, `action`
//!   = `ready` | `drain` | `maint`, through the command layer. It must carry
//!   the page's CSRF token in `X-Fulcrum-Csrf` (a page from another site
//!   cannot read it) and, when the browser says where it comes from
//!   (`Sec-Fetch-Site`), come from this origin.
//!
//! With `auth`, every path asks for HTTP basic authentication (compared in
//! constant time).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;

use crate::command::{AdminState, Command, execute};
use crate::config::Stats;
use crate::runtime::Shared;
use crate::stats::render;

const DASHBOARD: &str = include_str!("dashboard.html");

struct Ctx {
    shared: Arc<Shared>,
    /// The `Authorization` value that opens the page, when auth is on.
    expected: Option<String>,
    admin: bool,
    csrf: String,
}

/// The running page; dropping it stops it.
#[derive(Debug)]
pub struct Web {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Web {
    /// Bind `addr` (here, so a busy port is an error at start) and serve.
    pub fn start(addr: SocketAddr, cfg: &Stats, shared: Arc<Shared>) -> std::io::Result<Web> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let expected = cfg.auth.as_ref().map(|a| {
            let raw = format!("{}:{}", a.user, a.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        });
        let ctx = Arc::new(Ctx {
            shared,
            expected,
            admin: cfg.admin,
            csrf: token(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("fulcrum-web".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "stats page: cannot build its runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "stats page: cannot listen");
                            return;
                        }
                    };
                    let app = router(ctx);
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = stopped.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "stats page stopped");
                    }
                });
            })?;
        tracing::info!(%addr, "stats page listening");
        Ok(Web {
            addr,
            stop: Some(stop),
            handle: Some(handle),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// 128 random bits from the kernel, in hex.
fn token() -> String {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        match rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(_) => {
                // Never expected on Linux; fall back to the clock-seeded draw.
                let x = crate::net::rand::fastrand_u64().to_le_bytes();
                let y = crate::net::rand::fastrand_u64().to_le_bytes();
                b[..8].copy_from_slice(&x);
                b[8..].copy_from_slice(&y);
                break;
            }
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/stats.json", get(stats_json))
        .route("/metrics", get(metrics))
        .route("/stats.csv", get(stats_csv))
        .route("/;csv", get(stats_csv))
        .route("/admin", post(admin))
        .with_state(ctx)
}

/// Equal in constant time (for the password).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Err` with the 401 to send when auth is on and the request lacks it.
fn authorize(ctx: &Ctx, headers: &HeaderMap) -> Result<(), Response> {
    let Some(expected) = &ctx.expected else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if same(given, expected.as_bytes()) {
        return Ok(());
    }
    Err((
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"fulcrum\"")],
        "authentication required\n",
    )
        .into_response())
}

async fn dashboard(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&ctx, &headers) {
        return r;
    }
    let page = DASHBOARD
        .replace("{{CSRF}}", &ctx.csrf)
        .replace("{{ADMIN}}", if ctx.admin { "true" } else { "false" });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct JsonQuery {
    history: Option<usize>,
}

async fn stats_json(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Query(q): Query<JsonQuery>,
) -> Response {
    if let Err(r) = authorize(&ctx, &headers) {
        return r;
    }
    let snap = ctx.shared.stats();
    let history = q.history.unwrap_or(0).min(crate::stats::collect::HISTORY);
    let v = render::json::render(&snap, &ctx.shared.collector, history);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

async fn metrics(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&ctx, &headers) {
        return r;
    }
    let text = render::prom::render(&ctx.shared.stats());
    ([(header::CONTENT_TYPE, render::prom::CONTENT_TYPE)], text).into_response()
}

async fn stats_csv(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&ctx, &headers) {
        return r;
    }
    let text = render::csv::render(&ctx.shared.stats());
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response()
}

#[derive(serde::Deserialize)]
struct AdminForm {
    backend: String,
    server: String,
    action: String,
}

async fn admin(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<AdminForm>,
) -> Response {
    if let Err(r) = authorize(&ctx, &headers) {
        return r;
    }
    let refuse = |status: StatusCode, msg: &str| (status, format!("{msg}\n")).into_response();
    if !ctx.admin {
        return refuse(
            StatusCode::FORBIDDEN,
            "admin actions are off ([stats] admin)",
        );
    }
    let token = headers
        .get("x-fulcrum-csrf")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() != b"same-origin");
    if !same(token, ctx.csrf.as_bytes()) || cross_site {
        return refuse(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
    }
    let state = match form.action.as_str() {
        "ready" => AdminState::Ready,
        "drain" => AdminState::Drain,
        "maint" => AdminState::Maint,
        other => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("unknown action \"{other}\" (ready, drain or maint)"),
            );
        }
    };
    let cmd = Command::SetState {
        backend: form.backend.clone(),
        server: form.server.clone(),
        state,
    };
    match execute(&ctx.shared, cmd) {
        Ok(_) => {
            tracing::info!(
                backend = %form.backend, server = %form.server, action = %form.action,
                "server state set from the stats page"
            );
            (StatusCode::OK, "done\n").into_response()
        }
        Err(e) => refuse(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
