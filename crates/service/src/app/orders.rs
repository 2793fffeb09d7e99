//! Reading orders: a buyer's own order, a page of a buyer's orders, and the order a
//! checkout just placed as it stands now (a fast callback may already have settled it).

use std::sync::Arc;

use crate::app::checkout::Placed;
use crate::domain::{BuyerId, OrderId};
use crate::store::{OrderRecord, OrderStore, StoreError};

/// A page of a buyer's orders, newest first.
#[derive(Debug)]
pub struct OrderPage {
    pub orders: Vec<OrderRecord>,
    pub has_next: bool,
}

#[derive(Clone)]
pub struct Orders {
    store: Arc<dyn OrderStore>,
}

impl Orders {
    pub fn new(store: Arc<dyn OrderStore>) -> Orders {
        Orders { store }
    }

    /// The order a checkout placed as it stands: as the checkout left it, or read again
    /// when a callback overtook the checkout (the order as the checkout left it if the
    /// database cannot say). Never an error: the PG may have taken the payment, so the
    /// buyer gets an answer either way.
    pub async fn latest(&self, placed: Placed) -> OrderRecord {
        if !placed.overtaken {
            return placed.order;
        }
        match self.store.order(placed.order.order_id).await {
            Ok(Some(order)) => order,
            Ok(None) | Err(_) => placed.order,
        }
    }

    /// Any order by id (the answer a replayed checkout gives).
    pub async fn by_id(&self, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        self.store.order(order_id).await
    }

    /// The buyer's order; another buyer's is `None`, like an unknown one.
    pub async fn of_buyer(&self, buyer: &BuyerId, order_id: OrderId) -> Result<Option<OrderRecord>, StoreError> {
        self.store.buyer_order(buyer, order_id).await
    }

    /// Page `number` (from 0) of `size` orders; the caller bounds both.
    pub async fn page(&self, buyer: &BuyerId, number: i64, size: i64) -> Result<OrderPage, StoreError> {
        let offset = number.saturating_mul(size);
        // One more than asked tells whether another page follows.
        let mut orders = self.store.orders_for_buyer(buyer, offset, size + 1).await?;
        let has_next = orders.len() as i64 > size;
        orders.truncate(size as usize);
        Ok(OrderPage { orders, has_next })
    }
}
