//! Card numbers: the full number lives in memory only for the PG call; everything that
//! is stored, logged or shown uses the last four digits.

use super::Invalid;

/// A card number in the PG's `dddd-dddd-dddd-dddd` form. No `Display`, no `Serialize`,
/// and a masked `Debug`, so it cannot leak into logs or JSON by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    pub fn parse(raw: &str) -> Result<CardNumber, Invalid> {
        let groups: Vec<&str> = raw.split('-').collect();
        let well_formed =
            groups.len() == 4 && groups.iter().all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit()));
        if well_formed {
            Ok(CardNumber(raw.to_string()))
        } else {
            Err(Invalid::new("cardNo", "카드 번호는 xxxx-xxxx-xxxx-xxxx 형식이어야 합니다."))
        }
    }

    /// The Luhn checksum every real card number passes.
    pub fn passes_luhn(&self) -> bool {
        let digits = self.0.bytes().filter(u8::is_ascii_digit).map(|b| (b - b'0') as u32);
        let sum: u32 = digits
            .rev()
            .enumerate()
            .map(|(i, d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
            .sum();
        sum.is_multiple_of(10)
    }

    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }

    /// The full number, for the request to the PG and nothing else.
    pub fn expose_for_gateway(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardNumber(****-****-****-{})", self.last4())
    }
}

/// The card brands the shop takes, named as the buyer and the PG write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    /// Exact and case-sensitive, as the PG reads it.
    pub fn parse(raw: &str) -> Result<CardType, Invalid> {
        CardType::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| Invalid::new("cardType", "카드 종류는 SAMSUNG, KB, HYUNDAI 중 하나여야 합니다."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_number_keeps_its_last_four_and_never_shows_the_rest() {
        let card = CardNumber::parse("1234-5678-9814-1451").unwrap();
        assert_eq!(card.last4(), "1451");
        assert_eq!(format!("{card:?}"), "CardNumber(****-****-****-1451)");
    }

    #[test]
    fn luhn_tells_real_numbers_from_typos() {
        assert!(CardNumber::parse("4111-1111-1111-1111").unwrap().passes_luhn());
        assert!(CardNumber::parse("5555-5555-5555-4444").unwrap().passes_luhn());
        assert!(!CardNumber::parse("4111-1111-1111-1112").unwrap().passes_luhn());
        assert!(!CardNumber::parse("1234-5678-9814-1451").unwrap().passes_luhn(), "the course's sample card");
    }

    #[test]
    fn malformed_card_numbers_are_refused() {
        for bad in [
            "",
            "1234567898141451",
            "1234-5678-9814-145",
            "1234-5678-9814-14511",
            "abcd-5678-9814-1451",
            "１２３４-5678-9814-1451",
        ] {
            assert_eq!(CardNumber::parse(bad).unwrap_err().field, "cardNo", "{bad}");
        }
    }
}
