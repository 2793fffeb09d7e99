//! Parsing and validating `POST /api/v1/payments` the way the reference PG does, with its
//! exact messages and order of checks: body shape and types first, then field rules.
//!
//! The reference is a Kotlin/Jackson app: a bad type or enum is reported before a
//! missing field, and scalar strings/numbers are coerced where Jackson coerces them.

use gateway::wire::{CardType, PaymentRequest, message};
use reqwest::Url;
use serde_json::{Map, Value};

/// Field order of the reference's request class, which decides which error wins.
const FIELDS: [&str; 5] = ["orderId", "cardType", "cardNo", "amount", "callbackUrl"];

/// Parses the raw body into a request, or the reference's 400 message.
pub fn parse_payment_request(body: &[u8]) -> Result<PaymentRequest, String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| message::BODY_UNREADABLE.to_string())?;
    let Value::Object(obj) = value else {
        return Err(message::BODY_UNREADABLE.to_string());
    };
    // Type errors are found while reading, before any missing field is noticed.
    for field in FIELDS {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            check_type(field, v)?;
        }
    }
    if let Some(missing) = FIELDS.iter().find(|f| obj.get(**f).is_none_or(Value::is_null)) {
        return Err(message::missing_field(missing));
    }
    Ok(PaymentRequest {
        order_id: string_field(&obj, "orderId"),
        card_type: CardType::parse(&string_field(&obj, "cardType")).expect("checked above"),
        card_no: string_field(&obj, "cardNo"),
        amount: long_field(&obj["amount"]).expect("checked above"),
        callback_url: string_field(&obj, "callbackUrl"),
    })
}

fn check_type(field: &str, v: &Value) -> Result<(), String> {
    let ok = match field {
        "cardType" => v.as_str().and_then(CardType::parse).is_some(),
        "amount" => long_field(v).is_some(),
        _ => scalar_text(v).is_some(),
    };
    if ok {
        return Ok(());
    }
    let shown = scalar_text(v).unwrap_or_else(|| v.to_string());
    Err(match field {
        "cardType" => {
            let names: Vec<&str> = CardType::ALL.iter().map(|c| c.as_str()).collect();
            message::type_mismatch(field, &shown, "CardTypeDto", Some(&names))
        }
        "amount" => message::type_mismatch(field, &shown, "Long", None),
        _ => message::type_mismatch(field, &shown, "String", None),
    })
}

/// Jackson reads a JSON string, number or boolean into a String field.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An integer in i64 range, given as a JSON integer or an integer string.
fn long_field(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string_field(obj: &Map<String, Value>, field: &str) -> String {
    scalar_text(&obj[field]).expect("checked above")
}

/// Where callbacks may go. The reference accepts only `http://localhost:8080...`; we
/// generalise that to loopback (any port) by default, or to explicit prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CallbackAllowList {
    #[default]
    Loopback,
    Prefixes(Vec<String>),
}

impl CallbackAllowList {
    pub fn allows(&self, url: &str) -> bool {
        match self {
            CallbackAllowList::Loopback => Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && match u.host() {
                        Some(url::Host::Domain(d)) => d == "localhost",
                        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                        None => false,
                    }
            }),
            CallbackAllowList::Prefixes(prefixes) => prefixes.iter().any(|p| url.starts_with(p.as_str())),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            CallbackAllowList::Loopback => "http://localhost, http://127.0.0.1, http://[::1]".to_string(),
            CallbackAllowList::Prefixes(prefixes) => prefixes.join(", "),
        }
    }
}

/// The reference's field rules, in its order.
pub fn validate(req: &PaymentRequest, allow: &CallbackAllowList) -> Result<(), String> {
    if req.order_id.trim().is_empty() || req.order_id.chars().count() < 6 {
        return Err(message::ORDER_ID_INVALID.to_string());
    }
    if !is_card_number(&req.card_no) {
        return Err(message::CARD_NO_INVALID.to_string());
    }
    if req.amount <= 0 {
        return Err(message::AMOUNT_INVALID.to_string());
    }
    if !allow.allows(&req.callback_url) {
        return Err(message::callback_url_invalid(&allow.describe()));
    }
    Ok(())
}

/// `^\d{4}-\d{4}-\d{4}-\d{4}$` with ASCII digits, as Java's regex reads `\d`.
fn is_card_number(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 4 && groups.iter().all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn valid() -> Value {
        json!({"orderId": "ORD000123-1", "cardType": "SAMSUNG", "cardNo": "1234-5678-9814-1451", "amount": 5000, "callbackUrl": "http://localhost:8080/api/v1/payments/callback"})
    }

    #[test]
    fn a_valid_body_parses() {
        let req = parse_payment_request(&body(valid())).unwrap();
        assert_eq!(req.order_id, "ORD000123-1");
        assert_eq!(req.card_type, CardType::Samsung);
        assert_eq!(req.amount, 5000);
        assert_eq!(validate(&req, &CallbackAllowList::Loopback), Ok(()));
    }

    #[test]
    fn malformed_json_and_non_objects_are_unreadable() {
        for raw in [&b"{"[..], b"", b"[1,2]", b"\"x\"", b"null", b"\xff\xfe"] {
            assert_eq!(parse_payment_request(raw).unwrap_err(), message::BODY_UNREADABLE, "{raw:?}");
        }
    }

    #[test]
    fn each_missing_or_null_field_is_named_in_declaration_order() {
        for field in FIELDS {
            let mut v = valid();
            v.as_object_mut().unwrap().remove(field);
            assert_eq!(
                parse_payment_request(&body(v)).unwrap_err(),
                format!("필수 필드 '{field}'이(가) 누락되었습니다.")
            );
            let mut v = valid();
            v[field] = Value::Null;
            assert_eq!(
                parse_payment_request(&body(v)).unwrap_err(),
                format!("필수 필드 '{field}'이(가) 누락되었습니다.")
            );
        }
        assert_eq!(parse_payment_request(b"{}").unwrap_err(), "필수 필드 'orderId'이(가) 누락되었습니다.");
    }

    #[test]
    fn unknown_card_type_lists_the_accepted_values() {
        let mut v = valid();
        v["cardType"] = json!("VISA");
        assert_eq!(
            parse_payment_request(&body(v)).unwrap_err(),
            "필드 'cardType'의 값 'VISA'이(가) 예상 타입(CardTypeDto)과 일치하지 않습니다. 사용 가능한 값 : [SAMSUNG, KB, HYUNDAI]"
        );
    }

    #[test]
    fn a_type_error_wins_over_a_missing_field() {
        let v = json!({"amount": "lots"});
        assert_eq!(
            parse_payment_request(&body(v)).unwrap_err(),
            "필드 'amount'의 값 'lots'이(가) 예상 타입(Long)과 일치하지 않습니다. "
        );
    }

    #[test]
    fn amount_must_be_an_integer_but_numeric_strings_are_coerced() {
        let mut v = valid();
        v["amount"] = json!("7000");
        assert_eq!(parse_payment_request(&body(v)).unwrap().amount, 7000);
        let mut v = valid();
        v["amount"] = json!(1.5);
        assert!(parse_payment_request(&body(v)).unwrap_err().contains("예상 타입(Long)"));
        let mut v = valid();
        v["amount"] = json!(u64::MAX);
        assert!(parse_payment_request(&body(v)).unwrap_err().contains("예상 타입(Long)"));
    }

    #[test]
    fn validation_messages_follow_the_reference_order() {
        let check = |patch: Value| {
            let mut v = valid();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            validate(&parse_payment_request(&body(v)).unwrap(), &CallbackAllowList::Loopback)
        };
        assert_eq!(check(json!({"orderId": "12345"})).unwrap_err(), message::ORDER_ID_INVALID);
        assert_eq!(check(json!({"orderId": "      "})).unwrap_err(), message::ORDER_ID_INVALID);
        assert_eq!(check(json!({"cardNo": "1234567898141451"})).unwrap_err(), message::CARD_NO_INVALID);
        assert_eq!(check(json!({"cardNo": "1234-5678-9814-145"})).unwrap_err(), message::CARD_NO_INVALID);
        assert_eq!(check(json!({"cardNo": "１２３４-5678-9814-1451"})).unwrap_err(), message::CARD_NO_INVALID);
        assert_eq!(check(json!({"amount": 0})).unwrap_err(), message::AMOUNT_INVALID);
        assert_eq!(check(json!({"amount": -5})).unwrap_err(), message::AMOUNT_INVALID);
        assert_eq!(
            check(json!({"callbackUrl": "http://evil.example/cb"})).unwrap_err(),
            "콜백 URL 은 http://localhost, http://127.0.0.1, http://[::1] 로 시작해야 합니다."
        );
        // Every rule broken at once: the first in order wins.
        assert_eq!(check(json!({"orderId": "1", "cardNo": "x", "amount": 0})).unwrap_err(), message::ORDER_ID_INVALID);
    }

    #[test]
    fn loopback_allow_list_accepts_loopback_hosts_on_any_port_only() {
        let allow = CallbackAllowList::Loopback;
        for ok in ["http://localhost:8080/cb", "http://127.0.0.1:9/cb", "http://[::1]:1/x", "https://localhost/cb"] {
            assert!(allow.allows(ok), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com/cb",
            "http://10.0.0.1/cb",
            "ftp://localhost/cb",
            "not a url",
            "http://example.com/?localhost",
        ] {
            assert!(!allow.allows(bad), "{bad}");
        }
        let prefixes = CallbackAllowList::Prefixes(vec!["https://shop.example/".into()]);
        assert!(prefixes.allows("https://shop.example/api/v1/payments/callback"));
        assert!(!prefixes.allows("http://localhost:8080/cb"));
    }
}
