//! A user's email address: a bare address (`name@example.com`, never
//! `Name <name@example.com>`, whose display text would make one address
//! look like many), valid syntax, a domain name, at most 254 bytes, no
//! control or bidirectional-formatting characters. Unique
//! case-insensitively: [`UserEmail::key`] is the form the database's unique
//! index holds, while the address itself keeps the case the user gave.

use email_address::{EmailAddress, Options};
use serde::Serialize;

use super::text::refuse_hidden_characters;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UserEmail(String);

impl UserEmail {
    pub const MAX_BYTES: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        if trimmed.len() > Self::MAX_BYTES {
            return Err(format!("must be at most {} bytes", Self::MAX_BYTES));
        }
        refuse_hidden_characters(trimmed)?;
        let bare = Options {
            minimum_sub_domains: 2,
            allow_domain_literal: false,
            allow_display_text: false,
            ..Options::default()
        };
        let parsed = EmailAddress::parse_with_options(trimmed, bare).map_err(|e| match e {
            email_address::Error::DomainTooFew | email_address::Error::UnsupportedDomainLiteral => {
                "must have a domain name such as example.com".to_owned()
            }
            e => format!("is not a valid email address ({e})"),
        })?;
        if parsed.as_str() != trimmed {
            return Err("must be a bare address, without a display name".into());
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
        for bad in [
            "",
            "plain",
            "a@",
            "@b.com",
            "a b@c.com",
            "a@localhost",
            "a@[127.0.0.1]",
            "Anyone <victim@example.com>",
            "<victim@example.com>",
            "vic\u{0}tim@example.com",
            "victim\u{202E}@example.com",
        ] {
            assert!(UserEmail::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(UserEmail::parse(&long).is_err());
    }
}
