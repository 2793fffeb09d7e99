//! Buyers, products, quantities and money.

use super::Invalid;

/// The buyer, as set in `X-USER-ID` by the authenticating edge in front of us.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BuyerId(String);

impl BuyerId {
    pub fn parse(raw: &str) -> Result<BuyerId, Invalid> {
        let raw = raw.trim();
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
        if ok {
            Ok(BuyerId(raw.to_string()))
        } else {
            Err(Invalid::new("X-USER-ID", "사용자 ID 형식이 올바르지 않습니다."))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProductId(pub i64);

/// 1 to 999 of one product in one order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 999;

    pub fn parse(raw: i64) -> Result<Quantity, Invalid> {
        if (1..=Self::MAX as i64).contains(&raw) {
            Ok(Quantity(raw as u32))
        } else {
            Err(Invalid::new("quantity", format!("수량은 1 이상 {} 이하여야 합니다.", Self::MAX)))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Whole won (KRW has no minor unit). Arithmetic is checked: an overflow is an error,
/// never a wrapped amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(i64);

impl Money {
    pub fn won(amount: i64) -> Money {
        Money(amount)
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_mul(self, quantity: Quantity) -> Option<Money> {
        self.0.checked_mul(quantity.get() as i64).map(Money)
    }
}

/// One line of a checkout request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_between_one_and_999() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(1_000).is_err());
        assert_eq!(Quantity::parse(999).unwrap().get(), 999);
    }

    #[test]
    fn money_arithmetic_never_wraps() {
        let q = Quantity::parse(2).unwrap();
        assert_eq!(Money::won(i64::MAX / 2 + 1).checked_mul(q), None);
        assert_eq!(Money::won(i64::MAX).checked_add(Money::won(1)), None);
        assert_eq!(Money::won(1_500).checked_mul(q), Some(Money::won(3_000)));
    }

    #[test]
    fn buyer_ids_are_short_plain_tokens() {
        assert!(BuyerId::parse("buyer-1").is_ok());
        assert!(BuyerId::parse("").is_err());
        assert!(BuyerId::parse("a b").is_err());
        assert!(BuyerId::parse(&"x".repeat(65)).is_err());
    }
}
