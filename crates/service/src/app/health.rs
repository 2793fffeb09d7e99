//! What operators ask of the shop's own state: whether the database answers (readiness)
//! and how many payments wait for their final status (the reconciliation backlog).

use std::sync::Arc;
use std::time::Duration;

use crate::domain::Timestamp;
use crate::store::{Store, StoreError};

/// Payments without a final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub count: i64,
    /// How long the oldest has waited; zero when there is none.
    pub oldest_age: Duration,
}

#[derive(Clone)]
pub struct Health {
    store: Arc<dyn Store>,
}

impl Health {
    pub fn new(store: Arc<dyn Store>) -> Health {
        Health { store }
    }

    /// Whether the database answers now.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        let (count, oldest) = self.store.unsettled().await?;
        let oldest_age = oldest.map_or(Duration::ZERO, |t| Timestamp::now().since(t));
        Ok(Backlog { count, oldest_age })
    }
}
