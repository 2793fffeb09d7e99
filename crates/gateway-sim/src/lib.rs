//! A payment gateway simulator: the reference PG's HTTP API, byte for byte by default,
//! plus opt-in fault injection (`/sim/faults`) and an audit ledger (`/sim/ledger`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = gateway_sim::spawn(gateway_sim::SimConfig::default()).await?;
//! println!("PG at {}", sim.base_url());
//! # Ok(()) }
//! ```

mod api;
mod callback;
mod control;
pub mod faults;
pub mod ledger;
pub mod link;
mod refunds;
pub mod request;
mod server;
mod state;
pub mod tls;

use std::net::SocketAddr;

pub use faults::Faults;
pub use request::CallbackAllowList;
pub use server::{RunningSim, spawn};
pub use state::Sim;

/// Start-up settings. Only `faults` can change while running.
#[derive(Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// A second port for `/sim/*` that stays open while the API port refuses connections.
    pub control_listen: Option<SocketAddr>,
    /// Makes every random draw reproducible.
    pub seed: Option<u64>,
    pub callback_allow: CallbackAllowList,
    /// Signs callbacks with HMAC-SHA256 when set.
    pub callback_secret: Option<String>,
    pub faults: Faults,
    /// Serve the API over HTTPS with this identity.
    pub tls: Option<tls::TlsIdentity>,
    /// Offer the refund API (`POST /api/v1/payments/{key}/cancel`, src/refunds.rs),
    /// which the reference PG does not have.
    pub refunds: bool,
}

impl Default for SimConfig {
    /// The reference PG on its usual port.
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            control_listen: None,
            seed: None,
            callback_allow: CallbackAllowList::Loopback,
            callback_secret: None,
            faults: Faults::default(),
            tls: None,
            refunds: false,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("control_listen", &self.control_listen)
            .field("seed", &self.seed)
            .field("callback_allow", &self.callback_allow)
            .field("callback_secret", &self.callback_secret.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .field("tls", &self.tls)
            .field("refunds", &self.refunds)
            .finish()
    }
}
