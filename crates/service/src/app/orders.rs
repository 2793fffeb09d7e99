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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::Orders;
    use crate::app::checkout::Placed;
    use crate::domain::{BuyerId, OrderId, PaymentStatus};
    use crate::store::{AttemptView, CreatedOrder, NewOrder, OrderRecord, OrderStore, StoreError};

    /// One order as the database holds it, counting the reads.
    struct Stored {
        order: OrderRecord,
        reads: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl OrderStore for Stored {
        async fn create_order(&self, _: NewOrder) -> Result<CreatedOrder, StoreError> {
            unreachable!("orders are only read here")
        }
        async fn order(&self, _: OrderId) -> Result<Option<OrderRecord>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(Some(self.order.clone()))
        }
        async fn buyer_order(&self, _: &BuyerId, _: OrderId) -> Result<Option<OrderRecord>, StoreError> {
            unreachable!("orders are only read by id here")
        }
        async fn orders_for_buyer(&self, _: &BuyerId, _: i64, _: i64) -> Result<Vec<OrderRecord>, StoreError> {
            unreachable!("orders are only read by id here")
        }
    }

    fn order(status: PaymentStatus) -> OrderRecord {
        OrderRecord {
            order_id: OrderId(7),
            buyer_id: crate::domain::BuyerId::parse("buyer-1").unwrap(),
            total_amount: 39_000,
            created_at: crate::domain::Timestamp::from_millis(1),
            anomaly: None,
            items: Vec::new(),
            attempt: AttemptView {
                status,
                reason: None,
                card_type: "KB".into(),
                card_last4: "1451".into(),
                transaction_key: Some("tx-1".into()),
                stuck: false,
            },
        }
    }

    #[tokio::test]
    async fn a_placed_order_is_answered_as_written_and_read_again_only_when_a_callback_overtook_it() {
        let store = Arc::new(Stored { order: order(PaymentStatus::Success), reads: AtomicUsize::new(0) });
        let orders = Orders::new(store.clone());
        let as_written = order(PaymentStatus::Pending);

        let answered = orders.latest(Placed { order: as_written.clone(), overtaken: false }).await;
        assert_eq!(answered, as_written);
        assert_eq!(store.reads.load(Ordering::SeqCst), 0, "nothing read back");

        let answered = orders.latest(Placed { order: as_written, overtaken: true }).await;
        assert_eq!(answered.attempt.status, PaymentStatus::Success, "the callback's settlement, as stored");
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    }
}
