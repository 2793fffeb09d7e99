//! Listings (name and price) recently read, for pricing checkouts without reading the
//! catalog for each one. A listing is only a quote: the store reserves stock only at the
//! price an order was priced at, so an order priced from a stale entry is refused with
//! nothing written and checkout prices it again from a fresh read. What a stale entry can
//! still cost is a product name up to `MAX_AGE` old on an order, after a rename made
//! through another instance; this instance's own catalog changes drop the entry at once.
//!
//! A map and a clock rather than a cache crate: a handful of entries and one rule (older
//! than `MAX_AGE` is read again), with no eviction policy that would earn a dependency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{Listing, ProductId};
use crate::store::{CatalogStore, StoreError};

/// How long a listing read is used for pricing.
const MAX_AGE: Duration = Duration::from_secs(1);
/// Listings kept at most: a catalog larger than this is read more often, never held whole.
const MAX_ENTRIES: usize = 10_000;

#[derive(Clone)]
pub struct Listings {
    store: Arc<dyn CatalogStore>,
    known: Arc<Mutex<HashMap<ProductId, (Listing, Instant)>>>,
}

impl Listings {
    pub fn new(store: Arc<dyn CatalogStore>) -> Listings {
        Listings { store, known: Arc::default() }
    }

    /// The listings of `products`: those read within `MAX_AGE` as they were read, the
    /// rest read now.
    pub async fn quote(&self, products: &[ProductId]) -> Result<HashMap<ProductId, Listing>, StoreError> {
        self.quote_at(products, Instant::now()).await
    }

    /// The listings of `products` as the store has them now.
    pub async fn read(&self, products: &[ProductId]) -> Result<HashMap<ProductId, Listing>, StoreError> {
        self.read_at(products, HashMap::new(), Instant::now()).await
    }

    /// Drops what is known of `product`: its next quote reads it.
    pub fn forget(&self, product: ProductId) {
        self.known.lock().expect("listings lock").remove(&product);
    }

    async fn quote_at(&self, products: &[ProductId], now: Instant) -> Result<HashMap<ProductId, Listing>, StoreError> {
        let mut quoted = HashMap::with_capacity(products.len());
        let mut missing = Vec::new();
        {
            let known = self.known.lock().expect("listings lock");
            for id in products {
                match known.get(id) {
                    Some((listing, read_at)) if now.saturating_duration_since(*read_at) < MAX_AGE => {
                        quoted.insert(*id, listing.clone());
                    }
                    _ => missing.push(*id),
                }
            }
        }
        if missing.is_empty() { Ok(quoted) } else { self.read_at(&missing, quoted, now).await }
    }

    async fn read_at(
        &self,
        products: &[ProductId],
        mut into: HashMap<ProductId, Listing>,
        now: Instant,
    ) -> Result<HashMap<ProductId, Listing>, StoreError> {
        let read = self.store.listings(products).await?;
        let mut known = self.known.lock().expect("listings lock");
        if known.len() + read.len() > MAX_ENTRIES {
            known.retain(|_, (_, read_at)| now.saturating_duration_since(*read_at) < MAX_AGE);
            if known.len() + read.len() > MAX_ENTRIES {
                known.clear();
            }
        }
        for (id, listing) in read {
            known.insert(id, (listing.clone(), now));
            into.insert(id, listing);
        }
        Ok(into)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{Listings, MAX_AGE};
    use crate::domain::{Money, ProductId};
    use crate::store::{CatalogStore, SqliteStore};

    async fn listings() -> (Arc<SqliteStore>, Listings) {
        let store = Arc::new(SqliteStore::connect("sqlite::memory:", Duration::from_secs(10)).await.unwrap());
        (store.clone(), Listings::new(store))
    }

    #[tokio::test]
    async fn a_quote_is_what_was_read_until_it_is_max_age_old() {
        let (store, listings) = listings().await;
        let start = Instant::now();
        let price = |quoted: std::collections::HashMap<ProductId, crate::domain::Listing>| quoted[&ProductId(1)].price;
        let first = price(listings.quote_at(&[ProductId(1)], start).await.unwrap());
        store.update_product(1, Some("renamed"), Some(first.checked_add(Money::won(1)).unwrap())).await.unwrap();
        let just_before = start + MAX_AGE - Duration::from_millis(1);
        assert_eq!(price(listings.quote_at(&[ProductId(1)], just_before).await.unwrap()), first, "quoted, not read");
        let quoted = listings.quote_at(&[ProductId(1)], start + MAX_AGE).await.unwrap();
        assert_eq!(quoted[&ProductId(1)].name, "renamed", "read again at MAX_AGE");
        assert_ne!(quoted[&ProductId(1)].price, first);
    }

    #[tokio::test]
    async fn a_read_or_a_forgotten_product_is_what_the_store_has_now() {
        let (store, listings) = listings().await;
        let now = Instant::now();
        listings.quote_at(&[ProductId(1), ProductId(2)], now).await.unwrap();
        store.update_product(1, Some("one"), None).await.unwrap();
        store.update_product(2, Some("two"), None).await.unwrap();
        assert_eq!(listings.read(&[ProductId(1)]).await.unwrap()[&ProductId(1)].name, "one");
        listings.forget(ProductId(2));
        let quoted = listings.quote_at(&[ProductId(1), ProductId(2)], now).await.unwrap();
        assert_eq!((quoted[&ProductId(1)].name.as_str(), quoted[&ProductId(2)].name.as_str()), ("one", "two"));
    }

    #[tokio::test]
    async fn an_unknown_product_is_refused_and_not_remembered() {
        let (_, listings) = listings().await;
        let refused = listings.quote(&[ProductId(1), ProductId(42)]).await;
        assert!(matches!(refused, Err(crate::store::StoreError::ProductNotFound(42))), "{refused:?}");
        assert!(listings.known.lock().unwrap().is_empty());
    }
}
