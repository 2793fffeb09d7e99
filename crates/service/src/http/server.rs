//! The accept loop: HTTP/1.1 connections with a bounded time for each request head and
//! a cap on open connections, so slow or idle clients cannot hold the shop (slowloris).
//! axum::serve has neither knob; this is the same hyper/hyper-util machinery it runs
//! on, configured. Body and whole-request timeouts are middleware (`limits.rs`); every
//! connection closes lingering (`linger.rs`), so a refused body's client reads its answer.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::linger::{Linger, Lingering};

/// What bounds a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The request line and headers must arrive whole within this, however they are
    /// trickled. hyper starts it when it waits for a head, so it also closes a
    /// kept-alive connection that sends no next request: it is the idle timeout too.
    pub header_read_timeout: Duration,
    /// Open connections at most: a new one beyond it is closed at once, before any
    /// byte is read, and connections already open keep being served.
    pub max_connections: usize,
    /// How a connection is drained when it closes.
    pub linger: Linger,
}

/// Serves `router` until `shutdown` completes, then stops accepting and waits for the
/// open connections to finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut refused: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of descriptors, most likely: give open connections a moment.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    max = limits.max_connections,
                    refused,
                    "connection limit reached: new connections closed"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = Lingering::new(stream, limits.linger, permit);
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(connection);
    }
    drop(listener);
    graceful.shutdown().await;
}
