//! A revision names one change: `main` is the store revision a request produced, `sub` orders
//! the changes within that request (a transaction with three puts has subs 0, 1 and 2).

use std::fmt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// The backend key: ordering the `u128` orders revisions, so a B+tree scan is a history scan.
    pub fn to_backend_key(self) -> u128 {
        debug_assert!(
            self.main >= 0 && self.sub >= 0,
            "revisions are never negative"
        );
        ((self.main as u128) << 64) | (self.sub as u64 as u128)
    }

    pub fn from_backend_key(key: u128) -> Self {
        Self {
            main: (key >> 64) as i64,
            sub: key as u64 as i64,
        }
    }

    /// The last backend key of main revision `main`: every change of that revision sorts at or before it.
    pub fn last_backend_key_of(main: i64) -> u128 {
        Revision::new(main, i64::MAX).to_backend_key()
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_key_orders_like_the_revision() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(i64::MAX, 3),
        ];
        for pair in revs.windows(2) {
            assert!(pair[0].to_backend_key() < pair[1].to_backend_key());
        }
        for r in revs {
            assert_eq!(Revision::from_backend_key(r.to_backend_key()), r);
        }
        assert!(Revision::last_backend_key_of(1) < Revision::new(2, 0).to_backend_key());
    }
}
