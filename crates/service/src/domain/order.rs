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

/// A product's name and price as the catalog has them when an order is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub name: String,
    pub price: Money,
}

/// A checkout line at its listed price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: ProductId,
    pub name: String,
    pub unit_price: Money,
    pub quantity: Quantity,
    pub amount: Money,
}

/// An order's lines at the catalog's prices, and what the buyer pays for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub lines: Vec<PricedLine>,
    pub total: Money,
}

/// Prices an order: each line's amount is its price times its quantity, the total their
/// sum. `None` when an amount or the total would overflow (never a wrapped amount).
pub fn price(lines: impl IntoIterator<Item = (CheckoutLine, Listing)>) -> Option<Priced> {
    let mut total = Money::default();
    let mut priced = Vec::new();
    for (line, listing) in lines {
        let amount = listing.price.checked_mul(line.quantity)?;
        total = total.checked_add(amount)?;
        priced.push(PricedLine {
            product_id: line.product_id,
            name: listing.name,
            unit_price: listing.price,
            quantity: line.quantity,
            amount,
        });
    }
    Some(Priced { lines: priced, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: i64, quantity: i64, price: i64) -> (CheckoutLine, Listing) {
        let line = CheckoutLine { product_id: ProductId(id), quantity: Quantity::parse(quantity).unwrap() };
        (line, Listing { name: format!("product {id}"), price: Money::won(price) })
    }

    #[test]
    fn an_order_costs_each_price_times_its_quantity() {
        let priced = price([line(1, 2, 39_000), line(2, 1, 25_000), line(1, 1, 39_000)]).unwrap();
        let amounts: Vec<i64> = priced.lines.iter().map(|l| l.amount.get()).collect();
        assert_eq!(amounts, [78_000, 25_000, 39_000]);
        assert_eq!(priced.total, Money::won(142_000));
        assert_eq!(priced.lines[0].unit_price, Money::won(39_000));
    }

    #[test]
    fn an_amount_or_total_that_would_overflow_is_refused() {
        assert_eq!(price([line(1, 999, i64::MAX / 10)]), None);
        assert_eq!(price([line(1, 1, i64::MAX), line(2, 1, 1)]), None);
    }

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
