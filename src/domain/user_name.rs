//! A user's display name: trimmed, 1 to 100 characters, no control or
//! bidirectional-formatting characters.

use serde::Serialize;

use super::text::refuse_hidden_characters;

const MAX_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("must not be empty or blank".into());
        }
        if trimmed.chars().count() > MAX_CHARS {
            return Err(format!("must be at most {MAX_CHARS} characters"));
        }
        refuse_hidden_characters(trimmed)?;
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds() {
        assert_eq!(UserName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"é".repeat(100)).is_ok());
        assert!(UserName::parse(&"é".repeat(101)).is_err());
        assert!(UserName::parse("a\u{0007}b").is_err());
        assert!(UserName::parse("a\nb").is_err());
        assert!(UserName::parse("a\u{0}b").is_err());
        assert!(UserName::parse("admin\u{202E}").is_err());
    }
}
