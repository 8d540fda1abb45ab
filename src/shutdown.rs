//! Stop signals shared by the daemon, the accept loops and the connections:
//! `watch` channels of `bool` that turn true once and stay true.

use tokio::sync::watch;

/// Wait until the signal turns true. Returns false if the sender is gone without
/// ever firing (then the caller simply keeps going: nobody can stop it any more).
pub async fn fired(rx: &mut watch::Receiver<bool>) -> bool {
    // `map` drops the borrow guard here, so callers' futures stay `Send`.
    rx.wait_for(|v| *v).await.map(|_| ()).is_ok()
}

/// Complete only when the signal turns true (never if its sender is gone first).
/// Kept pinned across a connection's requests, it registers with the channel
/// once instead of once per request.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    if !fired(rx).await {
        std::future::pending::<()>().await;
    }
}
