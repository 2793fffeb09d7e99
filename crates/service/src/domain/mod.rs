//! Domain types, parsed once at the edge: a value of these types is valid by construction.

pub mod card;
pub mod order;
pub mod payment;
pub mod time;

pub use card::{CardNumber, CardType};
pub use order::{BuyerId, CheckoutLine, Listing, Money, Priced, PricedLine, ProductId, Quantity, price};
pub use payment::{
    AttemptId, Final, GatewayName, OrderId, PaymentStatus, Settlement, Source, TransactionKey, pg_order_id,
};
pub use time::Timestamp;

/// A rule of the domain that an input broke, with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    /// Korean, for the buyer.
    pub message: String,
}

impl Invalid {
    pub fn new(field: &'static str, message: impl Into<String>) -> Invalid {
        Invalid { field, message: message.into() }
    }
}
