//! Assembles the application: database, gateway clients, use cases, router, reconciler.
//! Nothing else knows how the parts are wired.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use gateway::{ClientError, GatewayClient};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::callbacks::CallbackIntake;
use crate::app::catalog::Catalog;
use crate::app::checkout::Checkout;
use crate::app::gateways::{Gateway, Gateways};
use crate::app::health::Health;
use crate::app::listings::Listings;
use crate::app::orders::Orders;
use crate::app::reconciler::Reconciler;
use crate::configuration::Settings;
use crate::http::limits::RequestLimits;
use crate::http::linger::Linger;
use crate::http::server::{self, ConnectionLimits};
use crate::http::{AppParts, AppState, router};
use crate::store::{Inspect, PgStore, PoolSettings, SqliteStore, Store, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::{Activity, Tee};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("gateway client: {0}")]
    Gateway(#[from] ClientError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("unsupported database URL '{0}' (expected sqlite://... or postgres://...)")]
    DatabaseUrl(String),
    #[error("settings: {0}")]
    Settings(String),
}

/// A burst of connections waits in the kernel's accept queue rather than being dropped
/// (tokio's default backlog is 1,024; Linux caps this at `net.core.somaxconn`).
const ACCEPT_BACKLOG: u32 = 4_096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// In-flight requests get this long after a shutdown signal: more than the PG client's
/// total deadline, so a payment call in flight ends with a known outcome.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    /// Only for tests and tools that look at what was stored; requests go through the use cases.
    store: Arc<dyn Inspect>,
    connection_limits: ConnectionLimits,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let listener =
            listen(settings.listen).map_err(|source| StartupError::Listen { addr: settings.listen, source })?;
        Application::build_on(settings, listener).await
    }

    /// Builds on a listener bound by the caller (tests bind port 0 first, so the public
    /// URL the PG calls back can name the port).
    pub async fn build_on(settings: Settings, listener: TcpListener) -> Result<Application, StartupError> {
        // Settings built in code (tests, the dev command) get the same checks as a file.
        settings.validate().map_err(StartupError::Settings)?;
        let url = settings.database_url.as_str();
        let inspect: Arc<dyn Inspect> = if url.starts_with("sqlite:") {
            Arc::new(SqliteStore::connect(url, Duration::from_millis(settings.database_acquire_timeout_ms)).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PoolSettings {
                max_connections: settings.database_max_connections,
                acquire_timeout: Duration::from_millis(settings.database_acquire_timeout_ms),
            };
            Arc::new(PgStore::connect(url, pool).await?)
        } else {
            return Err(StartupError::DatabaseUrl(settings.database_url.clone()));
        };
        let store: Arc<dyn Store> = inspect.clone();
        let metrics = Arc::new(Metrics::new());
        let mut gateways = Vec::new();
        for g in settings.gateways() {
            let activity = Arc::new(Activity::default());
            let client = GatewayClient::with_observer(
                gateway::GatewaySettings {
                    name: g.name.clone(),
                    base_url: g.base_url.clone(),
                    merchant_id: g.merchant_id.clone(),
                    tls: g.tls.clone(),
                },
                g.resilience.clone(),
                Arc::new(Tee(vec![metrics.observer(&g.name), activity.clone()])),
            )?;
            metrics.watch_breakers(&client);
            activity.watch_breakers(&client);
            let callbacks = CallbackIntake::new(
                store.clone(),
                client.clone(),
                metrics.clone(),
                g.callback_secret.as_ref().map(|s| s.expose_secret().to_string()),
                Duration::from_secs(g.callback_replay_window_secs),
                NonZeroU32::new(g.callback_fetch_backs_per_second).expect("validated positive"),
            );
            gateways.push(Gateway { client, callback_url: settings.callback_url(&g.name), activity, callbacks });
        }
        let gateways = Gateways::new(gateways);
        for gateway in settings.gateways_refusing_admitted_checkouts() {
            tracing::warn!(
                gateway,
                max_in_flight = settings.checkout.max_in_flight,
                "checkout.max_in_flight is above this gateway's bulkhead.max_concurrent_calls and its bulkhead.max_wait is 0: checkouts beyond the bulkhead are refused after their orders are written; give the bulkhead a max_wait or match the two (docs/resilience.md)"
            );
        }
        // Payments of a gateway that is no longer configured are neither reconciled nor
        // accepted from its callbacks: say so loudly (PaymentsStuckPending follows).
        for (name, unsettled) in store.unsettled_by_gateway().await? {
            if gateways.get(&name).is_none() {
                tracing::error!(gateway = %name, unsettled, "unsettled payments belong to a gateway that is not configured: they are not reconciled and its callbacks are refused; configure it again until they settle");
            }
        }
        let listings = Listings::new(store.clone());
        let state = AppState::new(AppParts {
            orders: Orders::new(store.clone()),
            catalog: Catalog::new(store.clone(), listings.clone()),
            health: Health::new(store.clone()),
            checkout: Checkout::new(
                store.clone(),
                store.clone(),
                listings,
                gateways.clone(),
                metrics.clone(),
                settings.checkout.max_in_flight,
            ),
            idempotency: crate::app::idempotency::Idempotency::new(store.clone(), store.clone(), &settings.checkout),
            reconciler: Reconciler::new(
                store.clone(),
                store.clone(),
                gateways.clone(),
                metrics.clone(),
                settings.reconciler.clone(),
            ),
            gateways: gateways.clone(),
            metrics,
            limiter: Arc::new(crate::http::buyer_limiter(&settings.checkout)),
            checkout_settings: settings.checkout.clone(),
            admin_token: settings.admin.token.as_ref().map(|t| crate::http::admin::AdminToken::new(t.expose_secret())),
            request_limits: RequestLimits {
                body_read_timeout: Duration::from_millis(settings.http.body_read_timeout_ms),
                request_timeout: Duration::from_millis(settings.http.request_timeout_ms),
            },
        });
        let connection_limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(settings.http.header_read_timeout_ms),
            max_connections: settings.http.max_connections,
            linger: Linger {
                max_bytes: settings.http.linger_max_bytes,
                max_time: Duration::from_millis(settings.http.linger_ms),
            },
        };
        let addr = listener.local_addr().map_err(|source| StartupError::Listen { addr: settings.listen, source })?;
        Ok(Application { listener, addr, state, store: inspect, connection_limits })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn store(&self) -> &Arc<dyn Inspect> {
        &self.store
    }

    pub fn gateways(&self) -> &Gateways {
        &self.state.gateways
    }

    /// Serves until `signal` completes, then stops taking requests, lets in-flight ones
    /// (and their PG calls) finish within `SHUTDOWN_GRACE`, stops the reconciler and
    /// releases its leases.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let reconciler = tokio::spawn(self.state.reconciler.clone().run(stop_rx.clone()));
        let samplers: Vec<_> = (self.state.gateways.all().iter())
            .map(|g| tokio::spawn(g.activity.clone().run_sampler(stop_rx.clone())))
            .collect();
        let sweeper = tokio::spawn(crate::http::sweep_buyer_limiter(self.state.limiter.clone(), stop_rx.clone()));
        tracing::info!(addr = %self.addr, "payguard service listening");
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let serve = server::serve(self.listener, router(self.state), self.connection_limits, async move {
            signal.await;
            tracing::info!("shutting down: no new requests; finishing in-flight ones");
            notify.notify_one();
        });
        tokio::select! {
            () = serve => {}
            _ = async { stopping.notified().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight requests did not finish in time; stopping anyway");
            }
        };
        stop_tx.send_replace(true);
        let _ = reconciler.await;
        let _ = sweeper.await;
        for sampler in samplers {
            let _ = sampler.await;
        }
    }
}
