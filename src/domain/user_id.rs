//! A user id from a path or a cursor: a positive 64-bit integer.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(i64);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.parse::<i64>() {
            Ok(id) if id >= 1 => Ok(Self(id)),
            Ok(_) => Err(format!("user id {raw:?} is out of range: ids start at 1")),
            Err(_)
                if !raw.is_empty()
                    && raw
                        .trim_start_matches('-')
                        .bytes()
                        .all(|b| b.is_ascii_digit()) =>
            {
                Err(format!("user id {raw:?} is out of range"))
            }
            Err(_) => Err(format!("user id {raw:?} is not a number")),
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_positive_ids_only() {
        assert_eq!(UserId::parse("42").unwrap().get(), 42);
        assert!(UserId::parse("0").unwrap_err().contains("out of range"));
        assert!(UserId::parse("99999999999999999999")
            .unwrap_err()
            .contains("out of range"));
        assert!(UserId::parse("abc").unwrap_err().contains("not a number"));
    }
}
