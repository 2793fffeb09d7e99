//! The callback signature shared by the simulator (signs) and the service (verifies):
//! header `X-PG-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
//! Signing the timestamp with the body lets the receiver reject replays outside a window.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(secret, timestamp, body)))
}

/// A parsed signature header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub v1: Vec<u8>,
}

impl SignatureHeader {
    pub fn parse(value: &str) -> Option<SignatureHeader> {
        let mut timestamp = None;
        let mut v1 = None;
        for part in value.split(',') {
            match part.trim().split_once('=')? {
                ("t", t) => timestamp = t.parse().ok(),
                ("v1", hex_sig) => v1 = hex::decode(hex_sig).ok(),
                _ => {}
            }
        }
        Some(SignatureHeader { timestamp: timestamp?, v1: v1? })
    }

    /// Constant-time check of the signature over `body` (timing must not leak how many
    /// leading bytes of a forged signature were right).
    pub fn verify(&self, secret: &[u8], body: &[u8]) -> bool {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(self.timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&self.v1).is_ok()
    }
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_the_same_secret_timestamp_and_body() {
        let header = SignatureHeader::parse(&sign(b"s3cret", 1_700_000_000, b"{\"a\":1}")).unwrap();
        assert_eq!(header.timestamp, 1_700_000_000);
        assert!(header.verify(b"s3cret", b"{\"a\":1}"));
        assert!(!header.verify(b"other", b"{\"a\":1}"));
        assert!(!header.verify(b"s3cret", b"{\"a\":2}"));
        let moved = SignatureHeader { timestamp: 1_700_000_001, ..header };
        assert!(!moved.verify(b"s3cret", b"{\"a\":1}"));
    }

    #[test]
    fn malformed_headers_do_not_parse() {
        assert_eq!(SignatureHeader::parse(""), None);
        assert_eq!(SignatureHeader::parse("t=12"), None);
        assert_eq!(SignatureHeader::parse("t=x,v1=00"), None);
        assert_eq!(SignatureHeader::parse("t=12,v1=zz"), None);
    }
}
