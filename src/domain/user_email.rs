//! A user's email address: valid address syntax, at most 254 bytes. Unique
//! case-insensitively: [`UserEmail::key`] is the form the database's unique
//! index holds, while the address itself keeps the case the user gave.

use std::str::FromStr;

use email_address::EmailAddress;
use serde::Serialize;

pub const MAX_BYTES: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UserEmail(String);

impl UserEmail {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.len() > MAX_BYTES {
            return Err(format!("must be at most {MAX_BYTES} bytes"));
        }
        let parsed = EmailAddress::from_str(trimmed)
            .map_err(|e| format!("is not a valid email address ({e})"))?;
        if !parsed.domain().contains('.') || parsed.domain().starts_with('[') {
            return Err("must have a domain name such as example.com".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded address that uniqueness is decided on.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_addresses_and_keys_them_case_insensitively() {
        let email = UserEmail::parse(" Ada@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada@Example.COM");
        assert_eq!(email.key(), "ada@example.com");
    }

    #[test]
    fn refuses_bad_syntax_and_length() {
        for bad in ["", "plain", "a@", "@b.com", "a b@c.com", "a@localhost"] {
            assert!(UserEmail::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(UserEmail::parse(&long).is_err());
    }
}
