//! The body of `POST /fetch`: a list of URLs, parsed field by field so that
//! a 422 names every problem at once. Whether each URL may be fetched is the
//! fetcher's call (its allow-list), not the request's: one refused URL never
//! fails the others.

use serde_json::Value;

use super::FieldError;

/// The URLs one `POST /fetch` asks for: 1 to the configured maximum, as
/// given (each is checked against the allow-list when it is fetched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchUrls(Vec<String>);

impl FetchUrls {
    /// `{"urls": [string, ...]}` with 1 to `max` URLs, or every field's
    /// problem.
    pub fn from_json(body: &Value, max: usize) -> Result<Self, Vec<FieldError>> {
        parse_urls(body, max).map(Self)
    }

    pub fn into_inner(self) -> Vec<String> {
        self.0
    }
}

fn parse_urls(body: &Value, max: usize) -> Result<Vec<String>, Vec<FieldError>> {
    let object = body
        .as_object()
        .ok_or_else(|| vec![FieldError::new("body", "must be a JSON object")])?;
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|key| key.as_str() != "urls")
        .map(|key| FieldError::new(key, "is not a known field (expected urls)"))
        .collect();
    let urls = match object.get("urls") {
        None => {
            errors.push(FieldError::new("urls", "is required"));
            Vec::new()
        }
        Some(Value::Array(items)) if items.is_empty() => {
            errors.push(FieldError::new("urls", "must list at least one URL"));
            Vec::new()
        }
        Some(Value::Array(items)) if items.len() > max => {
            errors.push(FieldError::new(
                "urls",
                format!("must list at most {max} URLs"),
            ));
            Vec::new()
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item.as_str() {
                Some(url) => Some(url.to_owned()),
                None => {
                    errors.push(FieldError::new(&format!("urls[{i}]"), "must be a string"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            errors.push(FieldError::new("urls", "must be an array of URLs"));
            Vec::new()
        }
    };
    if errors.is_empty() {
        Ok(urls)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(body: Value, max: usize) -> Vec<String> {
        let errors = FetchUrls::from_json(&body, max).unwrap_err();
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn takes_one_to_max_strings_and_names_every_problem() {
        let urls = FetchUrls::from_json(&json!({"urls": ["http://a/", "x"]}), 2).unwrap();
        assert_eq!(urls.into_inner(), ["http://a/", "x"]);
        assert_eq!(
            fields(json!({"urls": [], "extra": 1}), 2),
            ["extra", "urls"]
        );
        assert_eq!(fields(json!({"urls": ["a", "b", "c"]}), 2), ["urls"]);
        assert_eq!(fields(json!({"urls": ["a", 5]}), 2), ["urls[1]"]);
        assert_eq!(fields(json!({}), 2), ["urls"]);
        assert_eq!(fields(json!([1]), 2), ["body"]);
    }
}
