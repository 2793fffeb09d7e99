//! The reference PG's wire format: the `{meta, data}` envelope, request and response
//! bodies, enums and the exact Korean reason and error texts.

use serde::{Deserialize, Serialize};

/// Card companies the PG accepts. The JSON spelling is the PG's (`SAMSUNG`, `KB`, `HYUNDAI`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CardType {
    Samsung,
    Kb,
    Hyundai,
}

impl CardType {
    pub const ALL: [CardType; 3] = [CardType::Samsung, CardType::Kb, CardType::Hyundai];

    pub fn as_str(self) -> &'static str {
        match self {
            CardType::Samsung => "SAMSUNG",
            CardType::Kb => "KB",
            CardType::Hyundai => "HYUNDAI",
        }
    }

    /// Exact, case-sensitive parse, as the reference PG's JSON mapper does it.
    pub fn parse(s: &str) -> Option<CardType> {
        CardType::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A transaction's status at the PG. Note `FAILED`, not `FAIL` (a known integration trap:
/// `FAIL` is the envelope's `meta.result`, never a transaction status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransactionStatus {
    Pending,
    Success,
    Failed,
}

impl TransactionStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, TransactionStatus::Pending)
    }
}

/// `meta.result` of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultKind {
    Success,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub result: ResultKind,
    pub error_code: Option<String>,
    pub message: Option<String>,
}

/// Every PG answer: `{"meta": {...}, "data": ...}`. On failure `data` is null and
/// `meta.errorCode` is the HTTP reason phrase (`Bad Request`, `Not Found`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub meta: Meta,
    pub data: Option<T>,
}

impl<T> Envelope<T> {
    pub fn success(data: T) -> Self {
        Envelope { meta: Meta { result: ResultKind::Success, error_code: None, message: None }, data: Some(data) }
    }

    pub fn fail(error_code: impl Into<String>, message: impl Into<String>) -> Self {
        Envelope {
            meta: Meta { result: ResultKind::Fail, error_code: Some(error_code.into()), message: Some(message.into()) },
            data: None,
        }
    }
}

/// `POST /api/v1/payments` body. Its `Debug` masks the card number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    pub order_id: String,
    pub card_type: CardType,
    pub card_no: String,
    pub amount: i64,
    pub callback_url: String,
}

/// `data` of a `POST /api/v1/payments` answer and one element of an orderId lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionSummary {
    pub transaction_key: String,
    pub status: TransactionStatus,
    pub reason: Option<String>,
}

/// `data` of `GET /api/v1/payments/{transactionKey}`, and (flat, without an envelope)
/// the body the PG POSTs to the callback URL. Its `Debug` masks the card number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionDetail {
    pub transaction_key: String,
    pub order_id: String,
    pub card_type: CardType,
    pub card_no: String,
    #[serde(deserialize_with = "whole_number")]
    pub amount: i64,
    pub status: TransactionStatus,
    pub reason: Option<String>,
}

/// A JSON number with no fractional part, as JSON Schema's `integer` means it: `39` and
/// `39.0` alike (clients whose language has no integers send the latter); `39.5`, a
/// string or a number beyond i64 are refused.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // Exactly representable: |v| below 2^53, so the cast is exact.
            if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
                Ok(v as i64)
            } else {
                Err(E::custom(format!("{v} is not a whole number")))
            }
        }
    }
    deserializer.deserialize_any(Whole)
}

/// The last four characters of a card number, for anything a person may read.
pub fn mask_card(card_no: &str) -> String {
    let last4: String = card_no.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("****-****-****-{last4}")
}

impl std::fmt::Debug for PaymentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentRequest")
            .field("order_id", &self.order_id)
            .field("card_type", &self.card_type)
            .field("card_no", &mask_card(&self.card_no))
            .field("amount", &self.amount)
            .field("callback_url", &self.callback_url)
            .finish()
    }
}

impl std::fmt::Debug for TransactionDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionDetail")
            .field("transaction_key", &self.transaction_key)
            .field("order_id", &self.order_id)
            .field("card_type", &self.card_type)
            .field("card_no", &mask_card(&self.card_no))
            .field("amount", &self.amount)
            .field("status", &self.status)
            .field("reason", &self.reason)
            .finish()
    }
}

/// `data` of `GET /api/v1/payments?orderId=X`. Transactions are newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderTransactions {
    pub order_id: String,
    pub transactions: Vec<TransactionSummary>,
}

/// `POST /api/v1/payments/{transactionKey}/cancel` body: the simulator's opt-in refund
/// API (`--refunds`), modelled on Toss Payments' cancel; the reference PG has none. Sent
/// with an `Idempotency-Key`: the same key for the same transaction answers the cancel it
/// made, so a cancel whose answer was lost can be sent again without refunding twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    /// Whole or part of what is left to cancel, in the payment's currency units.
    #[serde(deserialize_with = "whole_number")]
    pub cancel_amount: i64,
    pub cancel_reason: String,
    /// Where the cancel's final status is posted (flat, like a payment's callback); with
    /// none, lookups tell.
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// One cancel of a transaction: `data` of a cancel answer, an element of a cancel lookup,
/// and (flat) the body posted to the cancel's callback URL. PENDING until the PG decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelDetail {
    pub cancel_key: String,
    pub transaction_key: String,
    pub order_id: String,
    #[serde(deserialize_with = "whole_number")]
    pub cancel_amount: i64,
    pub status: TransactionStatus,
    pub reason: Option<String>,
}

/// `data` of `GET /api/v1/payments/{transactionKey}/cancels`: the payment's amount and
/// its cancels, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionCancels {
    pub transaction_key: String,
    #[serde(deserialize_with = "whole_number")]
    pub amount: i64,
    pub cancels: Vec<CancelDetail>,
}

/// The header that makes a cancel safe to send again: 1 to 300 characters (Toss's limit).
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// The longest `Idempotency-Key` a cancel may carry.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 300;

/// The header every PG call carries: the merchant's id at the PG.
pub const USER_ID_HEADER: &str = "X-USER-ID";

/// Header of the simulator's opt-in callback signature: `t=<unix seconds>,v1=<hex>`,
/// where v1 = HMAC-SHA256(secret, "<t>.<raw body>").
pub const SIGNATURE_HEADER: &str = "X-PG-Signature";

/// `meta.errorCode` values: the HTTP reason phrases the reference PG uses.
pub mod error_code {
    pub const BAD_REQUEST: &str = "Bad Request";
    pub const NOT_FOUND: &str = "Not Found";
    pub const METHOD_NOT_ALLOWED: &str = "Method Not Allowed";
    pub const INTERNAL_SERVER_ERROR: &str = "Internal Server Error";
    pub const SERVICE_UNAVAILABLE: &str = "Service Unavailable";
}

/// The reference PG's texts, byte for byte.
pub mod message {
    pub const APPROVED: &str = "정상 승인되었습니다.";
    pub const LIMIT_EXCEEDED: &str = "한도초과입니다. 다른 카드를 선택해주세요.";
    pub const INVALID_CARD: &str = "잘못된 카드입니다. 다른 카드를 선택해주세요.";
    pub const UNSTABLE: &str = "현재 서버가 불안정합니다. 잠시 후 다시 시도해주세요.";
    pub const USER_ID_REQUIRED: &str = "유저 ID 헤더는 필수입니다.";
    pub const BODY_UNREADABLE: &str = "요청 본문을 처리하는 중 오류가 발생했습니다. JSON 메세지 규격을 확인해주세요.";
    pub const ORDER_ID_INVALID: &str = "주문 ID는 6자리 이상 문자열이어야 합니다.";
    pub const CARD_NO_INVALID: &str = "카드 번호는 xxxx-xxxx-xxxx-xxxx 형식이어야 합니다.";
    pub const AMOUNT_INVALID: &str = "결제금액은 양의 정수여야 합니다.";
    pub const UNEXPECTED: &str = "일시적인 오류가 발생했습니다.";
    pub const UNKNOWN_PATH: &str = "존재하지 않는 요청입니다.";
    // The refund API's texts (the simulator's own: the reference PG has no cancel).
    pub const CANCELED: &str = "정상 취소되었습니다.";
    pub const CANCEL_DECLINED: &str = "취소 처리에 실패했습니다. 잠시 후 다시 시도해주세요.";
    pub const CANCEL_NOT_PAID: &str = "결제가 완료된 건만 취소할 수 있습니다.";
    pub const CANCEL_AMOUNT_INVALID: &str = "취소 금액은 양의 정수여야 합니다.";
    pub const CANCEL_AMOUNT_EXCEEDED: &str = "취소 금액이 취소 가능 금액을 초과합니다.";
    pub const IDEMPOTENCY_KEY_REQUIRED: &str = "Idempotency-Key 헤더는 1자 이상 300자 이하로 필수입니다.";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "같은 Idempotency-Key 로 다른 취소 요청을 보낼 수 없습니다.";

    pub fn missing_field(field: &str) -> String {
        format!("필수 필드 '{field}'이(가) 누락되었습니다.")
    }

    /// Type mismatch; enums list their values, other types end after the sentence.
    pub fn type_mismatch(field: &str, value: &str, type_name: &str, enum_values: Option<&[&str]>) -> String {
        let mut text = format!("필드 '{field}'의 값 '{value}'이(가) 예상 타입({type_name})과 일치하지 않습니다. ");
        if let Some(values) = enum_values {
            text.push_str(&format!("사용 가능한 값 : [{}]", values.join(", ")));
        }
        text
    }

    pub fn callback_url_invalid(allowed: &str) -> String {
        format!("콜백 URL 은 {allowed} 로 시작해야 합니다.")
    }

    pub fn transaction_not_found(key: &str) -> String {
        format!("(transactionKey: {key}) 결제건이 존재하지 않습니다.")
    }

    pub fn order_not_found(order_id: &str) -> String {
        format!("(orderId: {order_id}) 에 해당하는 결제건이 존재하지 않습니다.")
    }
}

#[cfg(test)]
mod whole_number_tests {
    #[derive(serde::Deserialize)]
    struct N(#[serde(deserialize_with = "super::whole_number")] i64);

    #[test]
    fn whole_numbers_are_read_however_they_are_written_and_fractions_are_refused() {
        for (raw, n) in [("39", 39), ("39.0", 39), ("-7", -7), ("-7.0", -7), ("0.0", 0)] {
            assert_eq!(serde_json::from_str::<N>(raw).unwrap().0, n, "{raw}");
        }
        for raw in ["39.5", "\"39\"", "1e300", "18446744073709551615", "null"] {
            assert!(serde_json::from_str::<N>(raw).is_err(), "{raw}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fail_serialises_like_the_reference() {
        let env: Envelope<()> = Envelope::fail(error_code::BAD_REQUEST, message::AMOUNT_INVALID);
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "meta": {"result": "FAIL", "errorCode": "Bad Request", "message": "결제금액은 양의 정수여야 합니다."},
                "data": null
            })
        );
    }

    #[test]
    fn statuses_and_card_types_use_the_pg_spelling() {
        assert_eq!(serde_json::to_string(&TransactionStatus::Failed).unwrap(), "\"FAILED\"");
        assert_eq!(serde_json::to_string(&CardType::Kb).unwrap(), "\"KB\"");
        assert_eq!(CardType::parse("HYUNDAI"), Some(CardType::Hyundai));
        assert_eq!(CardType::parse("hyundai"), None, "the PG's enum parse is case-sensitive");
    }

    #[test]
    fn debug_output_never_shows_a_full_card_number() {
        let request = PaymentRequest {
            order_id: "ORD000123-1".into(),
            card_type: CardType::Samsung,
            card_no: "1234-5678-9814-1451".into(),
            amount: 5000,
            callback_url: "http://localhost:8080/cb".into(),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("1234-5678-9814-1451") && shown.contains("****-****-****-1451"), "{shown}");
        let detail = TransactionDetail {
            transaction_key: "k".into(),
            order_id: "o".into(),
            card_type: CardType::Kb,
            card_no: "1234-5678-9814-1451".into(),
            amount: 1,
            status: TransactionStatus::Pending,
            reason: None,
        };
        assert!(!format!("{detail:?}").contains("1234-5678"));
    }

    #[test]
    fn type_mismatch_message_lists_enum_values_only_for_enums() {
        assert_eq!(
            message::type_mismatch("cardType", "VISA", "CardTypeDto", Some(&["SAMSUNG", "KB", "HYUNDAI"])),
            "필드 'cardType'의 값 'VISA'이(가) 예상 타입(CardTypeDto)과 일치하지 않습니다. 사용 가능한 값 : [SAMSUNG, KB, HYUNDAI]"
        );
        assert_eq!(
            message::type_mismatch("amount", "abc", "Long", None),
            "필드 'amount'의 값 'abc'이(가) 예상 타입(Long)과 일치하지 않습니다. "
        );
    }
}
