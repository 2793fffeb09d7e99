//! The simulator's books: every stored transaction, and counts of what reached it.
//! `GET /sim/ledger` shows them so audits can compare our database with the PG's view.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gateway::wire::{CancelDetail, CardType, TransactionDetail, TransactionStatus, TransactionSummary};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Transaction {
    pub key: String,
    pub user_id: String,
    pub order_id: String,
    pub card_type: CardType,
    /// The PG holds the full number (it is the card processor); only the ledger view masks it.
    pub card_no: String,
    pub amount: i64,
    pub callback_url: String,
    pub status: TransactionStatus,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub callbacks_delivered: u32,
    /// Refunds of this payment (`--refunds`), oldest first.
    pub cancels: Vec<Cancel>,
}

/// One cancel of a transaction, as the PG keeps it.
#[derive(Debug, Clone)]
pub struct Cancel {
    pub key: String,
    /// The merchant's key that made it: the same key answers this cancel again.
    pub idempotency_key: String,
    pub amount: i64,
    pub status: TransactionStatus,
    pub reason: Option<String>,
    pub callback_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
}

impl Transaction {
    /// What may still be cancelled: the amount less every cancel that has not failed
    /// (a pending one holds its amount until it is decided).
    pub fn cancellable(&self) -> i64 {
        let held: i64 = self.cancels.iter().filter(|c| c.status != TransactionStatus::Failed).map(|c| c.amount).sum();
        self.amount - held
    }

    /// What was refunded: the cancels that succeeded.
    pub fn refunded(&self) -> i64 {
        self.cancels.iter().filter(|c| c.status == TransactionStatus::Success).map(|c| c.amount).sum()
    }

    pub fn cancel_detail(&self, cancel: &Cancel) -> CancelDetail {
        CancelDetail {
            cancel_key: cancel.key.clone(),
            transaction_key: self.key.clone(),
            order_id: self.order_id.clone(),
            cancel_amount: cancel.amount,
            status: cancel.status,
            reason: cancel.reason.clone(),
        }
    }

    pub fn detail(&self) -> TransactionDetail {
        TransactionDetail {
            transaction_key: self.key.clone(),
            order_id: self.order_id.clone(),
            card_type: self.card_type,
            card_no: self.card_no.clone(),
            amount: self.amount,
            status: self.status,
            reason: self.reason.clone(),
        }
    }

    pub fn summary(&self) -> TransactionSummary {
        TransactionSummary { transaction_key: self.key.clone(), status: self.status, reason: self.reason.clone() }
    }
}

/// Counts of what reached the simulator, for "nothing was sent" proofs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// `POST /api/v1/payments` calls that reached the server (any answer).
    pub payment_requests: u64,
    /// Lookups by key or by orderId that reached the server.
    pub status_queries: u64,
    /// Callback POSTs answered 2xx by the receiver.
    pub callbacks_delivered: u64,
    /// Callback POSTs that failed (error or non-2xx), retries included.
    pub callbacks_failed: u64,
    /// Callbacks dropped on purpose by the `dropRate` fault.
    pub callbacks_dropped: u64,
    /// `POST .../cancel` calls that reached the server (any answer), with `--refunds`.
    pub cancel_requests: u64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    transactions: Vec<Transaction>,
    by_key: HashMap<String, usize>,
    pub counts: Counts,
}

impl Ledger {
    pub fn contains_key(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn insert(&mut self, tx: Transaction) {
        self.by_key.insert(tx.key.clone(), self.transactions.len());
        self.transactions.push(tx);
    }

    pub fn get(&self, key: &str) -> Option<&Transaction> {
        self.by_key.get(key).map(|&i| &self.transactions[i])
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Transaction> {
        self.by_key.get(key).map(|&i| &mut self.transactions[i])
    }

    /// A user's transactions for an order, newest first (the reference's order).
    pub fn by_order(&self, user_id: &str, order_id: &str) -> Vec<&Transaction> {
        self.transactions.iter().rev().filter(|t| t.user_id == user_id && t.order_id == order_id).collect()
    }

    pub fn transactions(&self) -> &[Transaction] {
        &self.transactions
    }

    pub fn view(&self) -> LedgerView {
        LedgerView { counts: self.counts, transactions: self.transactions.iter().map(LedgerEntry::from).collect() }
    }
}

/// `GET /sim/ledger`: oldest first; card numbers masked to the last 4 digits.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerView {
    pub counts: Counts,
    pub transactions: Vec<LedgerEntry>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub transaction_key: String,
    pub user_id: String,
    pub order_id: String,
    pub card_type: CardType,
    pub card_last4: String,
    pub amount: i64,
    pub status: TransactionStatus,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub callbacks_delivered: u32,
    /// The sum of the cancels that succeeded.
    pub refunded: i64,
    pub cancels: Vec<CancelDetail>,
}

impl From<&Transaction> for LedgerEntry {
    fn from(t: &Transaction) -> Self {
        LedgerEntry {
            transaction_key: t.key.clone(),
            user_id: t.user_id.clone(),
            order_id: t.order_id.clone(),
            card_type: t.card_type,
            card_last4: t.card_no.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect(),
            amount: t.amount,
            status: t.status,
            reason: t.reason.clone(),
            created_at: t.created_at,
            finalized_at: t.finalized_at,
            callbacks_delivered: t.callbacks_delivered,
            refunded: t.refunded(),
            cancels: t.cancels.iter().map(|c| t.cancel_detail(c)).collect(),
        }
    }
}
