//! The payment attempt's state machine (docs/architecture.md). Nothing else decides which
//! status may follow which; the stores bind these statuses into their conditional
//! updates and write none of their own.
//!
//! ```text
//! REQUESTED --accepted--> PENDING --callback/reconcile--> SUCCESS | FAILED(reason)
//! REQUESTED --timeout/crash (outcome unknown)--> PENDING(no key) --reconcile--> ...
//! REQUESTED --not delivered--> rolled back (the order is removed)
//! ```

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Stored before the PG call; its outcome is not known yet.
    Requested,
    /// The PG has (or may have) the payment; the final status is awaited.
    Pending,
    Success,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Requested => "REQUESTED",
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Success => "SUCCESS",
            PaymentStatus::Failed => "FAILED",
        }
    }

    pub fn parse(raw: &str) -> Option<PaymentStatus> {
        [PaymentStatus::Requested, PaymentStatus::Pending, PaymentStatus::Success, PaymentStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }

    pub fn is_final(self) -> bool {
        matches!(self, PaymentStatus::Success | PaymentStatus::Failed)
    }

    /// The statuses a move to `to` may start from. Final statuses are never left.
    pub fn allowed_sources(to: PaymentStatus) -> &'static [PaymentStatus] {
        match to {
            PaymentStatus::Requested => &[],
            PaymentStatus::Pending => &[PaymentStatus::Requested],
            PaymentStatus::Success | PaymentStatus::Failed => PaymentStatus::UNSETTLED,
        }
    }

    /// Not final yet: what the reconciler asks about, what may still learn its key.
    pub const UNSETTLED: &'static [PaymentStatus] = &[PaymentStatus::Requested, PaymentStatus::Pending];

    /// Only an attempt that surely never reached a PG may be rolled back or moved to
    /// another gateway: one still REQUESTED whose call ended NotDelivered.
    pub const UNSENT: &'static [PaymentStatus] = &[PaymentStatus::Requested];

    /// What the buyer sees: REQUESTED is an internal detail, shown as PENDING.
    pub fn for_buyer(self) -> &'static str {
        match self {
            PaymentStatus::Requested | PaymentStatus::Pending => "PENDING",
            PaymentStatus::Success => "SUCCESS",
            PaymentStatus::Failed => "FAILED",
        }
    }

    pub fn buyer_message(self) -> &'static str {
        match self {
            PaymentStatus::Requested | PaymentStatus::Pending => "결제 진행 중",
            PaymentStatus::Success => "결제 성공",
            PaymentStatus::Failed => "결제 실패",
        }
    }
}

/// A status an attempt never leaves: all a settlement may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Final {
    Success,
    Failed,
}

impl Final {
    pub fn as_str(self) -> &'static str {
        PaymentStatus::from(self).as_str()
    }
}

impl From<Final> for PaymentStatus {
    fn from(status: Final) -> PaymentStatus {
        match status {
            Final::Success => PaymentStatus::Success,
            Final::Failed => PaymentStatus::Failed,
        }
    }
}

impl PartialEq<Final> for PaymentStatus {
    fn eq(&self, other: &Final) -> bool {
        *self == PaymentStatus::from(*other)
    }
}

/// A final result to apply to an attempt: final by its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub status: Final,
    pub transaction_key: Option<String>,
    pub reason: Option<String>,
}

/// Who decided a final status: recorded on the attempt as `settled_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The PG rejected the payment request itself.
    Checkout,
    Callback,
    Reconciler,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Checkout => "checkout",
            Source::Callback => "callback",
            Source::Reconciler => "reconciler",
        }
    }
}

/// The reason recorded when the PG never received an attempt.
pub const NOT_RECEIVED_REASON: &str = "결제 요청이 PG에 도달하지 않았습니다.";

/// A payment attempt in our records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub i64);

/// An order in our records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(pub i64);

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of a configured gateway, which an attempt is sent to and settled by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayName(String);

impl GatewayName {
    pub fn new(name: impl Into<String>) -> GatewayName {
        GatewayName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for GatewayName {
    fn from(name: &str) -> GatewayName {
        GatewayName::new(name)
    }
}

impl std::fmt::Display for GatewayName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The PG's key for one transaction: unique at its gateway, the proof of a charge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey(String);

impl TransactionKey {
    pub fn new(key: impl Into<String>) -> TransactionKey {
        TransactionKey(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The PG orderId of an order's `attempt_no`th payment attempt: unique per attempt and
/// at least the 6 characters the PG asks for.
pub fn pg_order_id(order_id: i64, attempt_no: i64) -> String {
    format!("ORD{order_id:06}-{attempt_no}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_order_ids_meet_the_pgs_minimum_length() {
        assert_eq!(pg_order_id(123, 1), "ORD000123-1");
        assert!(pg_order_id(1, 1).len() >= 6);
    }

    #[test]
    fn final_statuses_are_never_left() {
        for to in [PaymentStatus::Requested, PaymentStatus::Pending, PaymentStatus::Success, PaymentStatus::Failed] {
            for from in PaymentStatus::allowed_sources(to) {
                assert!(!from.is_final(), "{from:?} -> {to:?}");
            }
        }
        assert_eq!(PaymentStatus::allowed_sources(PaymentStatus::Pending), [PaymentStatus::Requested]);
        let all = [PaymentStatus::Requested, PaymentStatus::Pending, PaymentStatus::Success, PaymentStatus::Failed];
        let unsettled: Vec<_> = all.into_iter().filter(|s| !s.is_final()).collect();
        assert_eq!(PaymentStatus::UNSETTLED, unsettled, "exactly the statuses not final");
        assert!(PaymentStatus::UNSENT.iter().all(|s| PaymentStatus::UNSETTLED.contains(s)));
    }

    #[test]
    fn statuses_round_trip_and_show_pending_to_buyers() {
        for s in [PaymentStatus::Requested, PaymentStatus::Pending, PaymentStatus::Success, PaymentStatus::Failed] {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(PaymentStatus::Requested.for_buyer(), "PENDING");
    }
}
