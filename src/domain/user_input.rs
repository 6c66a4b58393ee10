//! Request bodies for creating and changing a user, parsed field by field
//! from JSON so that a 422 can list every field that is wrong (missing, of
//! the wrong type, invalid, or unknown) at once rather than the first one
//! serde trips on.

use serde_json::{Map, Value};

use super::{FieldError, UserEmail, UserName};

/// `POST /users`: both fields required.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: UserName,
    pub email: UserEmail,
}

/// `PATCH /users/{id}`: each field optional; absent means unchanged.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub name: Option<UserName>,
    pub email: Option<UserEmail>,
}

impl UserPatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.email.is_none()
    }
}

const FIELDS: [&str; 2] = ["name", "email"];

impl NewUser {
    pub fn from_json(body: &Value) -> Result<Self, Vec<FieldError>> {
        let patch = Fields::read(body)?;
        let mut errors = patch.errors;
        if patch.name.is_none() && !errors.iter().any(|e| e.field == "name") {
            errors.push(FieldError::new("name", "is required"));
        }
        if patch.email.is_none() && !errors.iter().any(|e| e.field == "email") {
            errors.push(FieldError::new("email", "is required"));
        }
        match (patch.name, patch.email) {
            (Some(name), Some(email)) if errors.is_empty() => Ok(Self { name, email }),
            _ => Err(errors),
        }
    }
}

impl UserPatch {
    pub fn from_json(body: &Value) -> Result<Self, Vec<FieldError>> {
        let fields = Fields::read(body)?;
        if fields.errors.is_empty() {
            Ok(Self {
                name: fields.name,
                email: fields.email,
            })
        } else {
            Err(fields.errors)
        }
    }
}

/// The fields a body carried, and what was wrong with the others.
struct Fields {
    name: Option<UserName>,
    email: Option<UserEmail>,
    errors: Vec<FieldError>,
}

impl Fields {
    fn read(body: &Value) -> Result<Self, Vec<FieldError>> {
        let object = body
            .as_object()
            .ok_or_else(|| vec![FieldError::new("body", "must be a JSON object")])?;
        let mut errors: Vec<FieldError> = object
            .keys()
            .filter(|key| !FIELDS.contains(&key.as_str()))
            .map(|key| FieldError::new(key, "is not a known field (expected name, email)"))
            .collect();
        let name = field(object, "name", UserName::parse, &mut errors);
        let email = field(object, "email", UserEmail::parse, &mut errors);
        Ok(Self {
            name,
            email,
            errors,
        })
    }
}

fn field<T>(
    object: &Map<String, Value>,
    key: &str,
    parse: fn(&str) -> Result<T, String>,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let value = object.get(key)?;
    let Some(text) = value.as_str() else {
        errors.push(FieldError::new(key, "must be a string"));
        return None;
    };
    parse(text)
        .map_err(|message| errors.push(FieldError::new(key, message)))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields_of(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn new_user_lists_every_bad_field() {
        let err = NewUser::from_json(&json!({"name": 5, "nickname": "x"})).unwrap_err();
        assert_eq!(fields_of(err), ["nickname", "name", "email"]);
    }

    #[test]
    fn patch_takes_any_subset() {
        let patch = UserPatch::from_json(&json!({"email": "a@b.io"})).unwrap();
        assert!(patch.name.is_none() && patch.email.is_some());
        assert!(UserPatch::from_json(&json!({})).unwrap().is_empty());
        assert!(UserPatch::from_json(&json!([1])).is_err());
    }
}
