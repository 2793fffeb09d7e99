//! The simulator's shared state: current faults, the seeded RNG and the ledger.

use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::SimConfig;
use crate::faults::Faults;
use crate::ledger::Ledger;
use crate::request::CallbackAllowList;

pub struct Sim {
    faults: watch::Sender<Faults>,
    /// One RNG for every draw, so `--seed` makes the sequence of draws reproducible.
    rng: Mutex<ChaCha8Rng>,
    ledger: Mutex<Ledger>,
    pub(crate) allow: CallbackAllowList,
    pub(crate) secret: Option<Vec<u8>>,
    pub(crate) http: reqwest::Client,
    /// Transactions still being processed or having their callbacks delivered.
    in_flight: watch::Sender<usize>,
}

/// Marks one transaction's processing as in flight until dropped.
pub(crate) struct InFlight(Arc<Sim>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

impl Sim {
    pub(crate) fn new(config: &SimConfig) -> Sim {
        let rng = match config.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        Sim {
            faults: watch::Sender::new(config.faults),
            rng: Mutex::new(rng),
            ledger: Mutex::new(Ledger::default()),
            allow: config.callback_allow.clone(),
            secret: config.callback_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("a plain HTTP client builds"),
            in_flight: watch::Sender::new(0),
        }
    }

    pub(crate) fn start_processing(self: &Arc<Self>) -> InFlight {
        self.in_flight.send_modify(|n| *n += 1);
        InFlight(self.clone())
    }

    /// Waits until every accepted transaction is final and its callbacks (with their
    /// faults and retries) are done: the point where a test can count deliveries.
    pub async fn settled(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    /// Replaces the faults; refused (unchanged) when they do not validate.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        tracing::info!(?faults, "simulator faults changed");
        self.faults.send_replace(faults);
        Ok(())
    }

    pub(crate) fn watch_faults(&self) -> watch::Receiver<Faults> {
        self.faults.subscribe()
    }

    /// Runs `f` with the RNG; keep it short, every request shares the lock.
    pub(crate) fn draw<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        f(&mut self.rng.lock().expect("rng lock poisoned"))
    }

    pub(crate) fn random_hex6(&self) -> u32 {
        self.draw(|rng| rng.random_range(0..0x100_0000))
    }

    /// The ledger, for reading or (inside the crate) writing.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("ledger lock poisoned")
    }
}
