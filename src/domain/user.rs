//! A stored user as clients see it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": 1,
    "name": "Ada Lovelace",
    "email": "Ada@Example.com",
    "created_at": "2026-11-25T13:10:46.310161Z",
    "updated_at": "2026-11-25T13:10:46.310161Z"
}))]
pub struct User {
    #[schema(minimum = 1)]
    pub id: i64,
    /// 1 to 100 characters, trimmed.
    pub name: String,
    /// As the user gave it; unique regardless of letter case.
    pub email: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// The state of the user this value shows.
    pub fn version(&self) -> super::Version {
        super::Version(self.updated_at)
    }
}

fn rfc3339<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}
