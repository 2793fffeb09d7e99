//! Listening and lifecycle. The API port can really close (`down: refuse`) and reopen on
//! the same address, so a client sees "connection refused", not a reset: that is the one
//! failure where the caller knows for sure that nothing reached the PG.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::SimConfig;
use crate::api;
use crate::control;
use crate::state::Sim;
use crate::tls::{TlsIdentity, TlsListener};
use tokio_rustls::TlsAcceptor;

/// Requests larger than this are answered 400 without being read further.
const BODY_LIMIT: usize = 64 * 1024;
/// How long shutdown waits for in-flight requests (a `hang` fault holds them forever).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running simulator. Dropping it does not stop it; call [`RunningSim::shutdown`].
pub struct RunningSim {
    addr: SocketAddr,
    /// `https` when the API port speaks TLS.
    scheme: &'static str,
    control_addr: Option<SocketAddr>,
    sim: Arc<Sim>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningSim {
    /// The PG API's address (and the control API's, unless a separate one is configured).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Where `/sim/*` answers even while the API port is closed by `down: refuse` (a
    /// separate control port is always plain HTTP).
    pub fn control_url(&self) -> String {
        match self.control_addr {
            Some(addr) => format!("http://{addr}"),
            None => self.base_url(),
        }
    }

    pub fn sim(&self) -> &Arc<Sim> {
        &self.sim
    }

    /// Stops listening and waits (bounded) for in-flight requests.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Runs until `signal` completes, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Binds the listeners and starts serving in the background.
pub async fn spawn(config: SimConfig) -> std::io::Result<RunningSim> {
    let sim = Arc::new(Sim::new(&config));
    let acceptor = config.tls.as_ref().map(TlsIdentity::acceptor).transpose()?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown, _) = watch::channel(false);
    let router = api_router(sim.clone(), config.refunds);
    let mut tasks = vec![tokio::spawn(serve_api(listener, acceptor, addr, router, sim.clone(), shutdown.subscribe()))];

    let mut control_addr = None;
    if let Some(control_listen) = config.control_listen {
        let listener = TcpListener::bind(control_listen).await?;
        control_addr = Some(listener.local_addr()?);
        let router = control::router().with_state(sim.clone());
        let mut stop = shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let _ = axum::serve(listener, router).with_graceful_shutdown(stopped).await;
        }));
    }
    tracing::info!(%addr, scheme, ?control_addr, "gateway simulator listening");
    Ok(RunningSim { addr, scheme, control_addr, sim, shutdown, tasks })
}

fn api_router(sim: Arc<Sim>, refunds: bool) -> Router {
    let mut pg = Router::new()
        .route("/api/v1/payments", post(api::create).get(api::by_order))
        .route("/api/v1/payments/{key}", get(api::detail));
    if refunds {
        pg = pg
            .route("/api/v1/payments/{key}/cancel", post(crate::refunds::cancel))
            .route("/api/v1/payments/{key}/cancels", get(crate::refunds::cancels));
    }
    let pg = pg.route_layer(axum::middleware::from_fn_with_state(sim.clone(), api::outage));
    pg.merge(control::router())
        .fallback(api::unknown_path)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(sim)
}

/// Serves the API port; closes it while the faults say `down: refuse`, reopens after.
async fn serve_api(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    addr: SocketAddr,
    router: Router,
    sim: Arc<Sim>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut faults = sim.watch_faults();
    let mut listener = Some(listener);
    loop {
        let current = match listener.take() {
            Some(l) => l,
            None => match rebind(addr).await {
                Ok(l) => l,
                Err(error) => {
                    tracing::error!(%addr, %error, "simulator could not reopen its port");
                    return;
                }
            },
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stop_rx.await;
        };
        let mut server = match &acceptor {
            None => {
                let server = axum::serve(current, router.clone()).with_graceful_shutdown(stopped);
                tokio::spawn(async move {
                    let _ = server.await;
                })
            }
            Some(acceptor) => {
                let listener = match TlsListener::new(current, acceptor.clone()) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%addr, %error, "simulator could not listen for TLS");
                        return;
                    }
                };
                let server = axum::serve(listener, router.clone()).with_graceful_shutdown(stopped);
                tokio::spawn(async move {
                    let _ = server.await;
                })
            }
        };
        tokio::select! {
            _ = until(&mut faults, api::refusing) => {
                tracing::warn!(%addr, "simulator down: refusing connections");
                let _ = stop_tx.send(());
            }
            _ = until(&mut shutdown, |s| *s) => {
                let _ = stop_tx.send(());
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await;
                server.abort();
                return;
            }
        }
        tokio::select! {
            _ = until(&mut faults, |f| !api::refusing(f)) => tracing::info!(%addr, "simulator back up"),
            _ = until(&mut shutdown, |s| *s) => return,
        }
    }
}

/// Waits until the watched value satisfies `pred` (or its sender is gone). Unlike
/// `wait_for` it holds no borrow of the value, so the future stays `Send`.
async fn until<T>(rx: &mut watch::Receiver<T>, pred: impl FnMut(&T) -> bool) {
    let _ = rx.wait_for(pred).await;
}

/// The old listener closes asynchronously after its server is told to stop; retry briefly.
async fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..200 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(last.expect("at least one attempt"))
}
