//! Which state of a user a client saw: its `updated_at`, which every change
//! moves on (to the microsecond both backends store). The HTTP edge shows
//! it as an entity tag; a conditional write names the versions it expects
//! to change, and is refused if the user has moved on (two clients editing
//! one user cannot silently overwrite each other).

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub DateTime<Utc>);

impl Version {
    /// The strong entity tag that names this version.
    pub fn etag(self) -> String {
        format!("\"{:x}\"", self.0.timestamp_micros())
    }

    /// The version an entity tag names, if it names one.
    pub fn from_etag(tag: &str) -> Option<Self> {
        let micros = tag.trim().strip_prefix('"')?.strip_suffix('"')?;
        let micros = i64::from_str_radix(micros, 16).ok()?;
        DateTime::from_timestamp_micros(micros).map(Self)
    }
}

/// What a conditional write expects of the user it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Expected {
    /// Any state (no condition, or `If-Match: *`).
    #[default]
    Any,
    /// One of these versions; none of them current means it changed.
    OneOf(Vec<Version>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_round_trips_through_its_tag() {
        let at = DateTime::from_timestamp_micros(1_764_645_046_310_161).unwrap();
        let tag = Version(at).etag();
        assert_eq!(Version::from_etag(&tag), Some(Version(at)));
        assert_eq!(Version::from_etag("W/\"abc\""), None);
        assert_eq!(Version::from_etag("nonsense"), None);
    }
}
