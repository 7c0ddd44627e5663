//! Secret-token check: `Authorization: Bearer <token>`, compared in constant
//! time (`subtle`); only the length can leak, as in Go's ConstantTimeCompare.

use crate::config::Secret;
use subtle::ConstantTimeEq;

pub struct SecretToken(Secret);

impl SecretToken {
    pub fn new(s: Secret) -> Self {
        SecretToken(s)
    }

    pub fn matches(&self, presented: &str) -> bool {
        let want = self.0.expose().as_bytes();
        let got = presented.as_bytes();
        want.len() == got.len() && bool::from(want.ct_eq(got))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        let t = SecretToken::new(Secret::new("valid"));
        assert!(t.matches("valid"));
        assert!(!t.matches("invalid"));
        assert!(!t.matches("valiD"));
        assert!(!t.matches(""));
    }
}
