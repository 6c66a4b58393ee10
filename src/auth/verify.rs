//! One request's credentials: the bearer token taken from its
//! `Authorization` header (RFC 6750 §2.1; never from the query string), and
//! what verifying it says: who sent it and what it may do, or why not.
//!
//! Every refusal carries a fixed description, which goes into
//! `WWW-Authenticate` and the problem's `detail`: nothing a client sent and
//! nothing of a key is ever echoed.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header};
use serde::Deserialize;

use super::keys::{KeySet, VerifyingKey};
use super::scope::{Scope, Scopes};

/// The longest token read (a header this long is already unusual).
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The longest subject kept: it is logged and keys the rate limiter.
const MAX_SUBJECT_BYTES: usize = 256;

/// Who a verified token speaks for.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: Arc<str>,
    pub scopes: Scopes,
}

/// What verifying a token says: who it speaks for, and between which
/// times (seconds since the epoch, where the token gives them as whole
/// numbers).
#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Principal,
    /// `exp`.
    pub expires: Option<u64>,
    /// `nbf`.
    pub not_before: Option<u64>,
}

/// Why a request is refused, as RFC 6750 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials: 401 with no error code.
    Missing,
    /// A token that does not verify: 401 `invalid_token`.
    Invalid(&'static str),
    /// A token past its `exp`: 401 `invalid_token`.
    Expired,
    /// A valid token without the scope: 403 `insufficient_scope`.
    Scope(Scope),
}

impl Refusal {
    /// Every [`Self::reason`].
    pub const REASONS: [&'static str; 4] = ["missing", "invalid", "expired", "scope"];

    /// The `reason` label of `auth_failures_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(_) => "invalid",
            Self::Expired => "expired",
            Self::Scope(_) => "scope",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3).
    pub fn challenge(self) -> String {
        const REALM: &str = r#"Bearer realm="switchboard""#;
        let description = self.description();
        match self {
            Self::Missing => REALM.to_owned(),
            Self::Invalid(_) | Self::Expired => {
                format!(r#"{REALM}, error="invalid_token", error_description="{description}""#)
            }
            Self::Scope(scope) => format!(
                r#"{REALM}, error="insufficient_scope", scope="{}", error_description="{description}""#,
                scope.name()
            ),
        }
    }

    /// What the client is told (fixed text: no quote, nothing it sent).
    pub fn description(self) -> &'static str {
        match self {
            Self::Missing => "this route needs a bearer token (Authorization: Bearer <token>)",
            Self::Invalid(why) => why,
            Self::Expired => "the token has expired",
            Self::Scope(Scope::UsersRead) => "the token does not grant users:read",
            Self::Scope(Scope::UsersWrite) => "the token does not grant users:write",
            Self::Scope(Scope::Fetch) => "the token does not grant fetch",
            Self::Scope(Scope::Admin) => "the token does not grant admin",
        }
    }
}

/// The bearer token of a request, if it sent one.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Refusal> {
    let mut values = headers.get_all(header::AUTHORIZATION);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::Invalid("more than one Authorization header"));
    }
    if value.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Invalid("the bearer token is too long"));
    }
    let value = value
        .to_str()
        .map_err(|_| Refusal::Invalid("the Authorization header is not text"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Invalid("the Authorization scheme must be Bearer"));
    }
    let token = token.trim_start_matches(' ');
    // RFC 6750's b64token; a JWT is three base64url parts joined by dots.
    let b64token = !token.is_empty()
        && token
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !b64token {
        return Err(Refusal::Invalid("the bearer token is malformed"));
    }
    Ok(Some(token))
}

#[derive(Deserialize)]
struct Claims {
    /// Required (by the validation), but optional here: the claims are read
    /// before they are validated, and a missing one must say so.
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<ScopeList>,
    /// Checked by the validation; read here to say how long the token holds.
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    nbf: Option<serde_json::Value>,
}

/// `scp`: an array of scope names (or, from some issuers, one string).
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeList {
    Many(Vec<String>),
    One(String),
}

/// Who `token` speaks for, if one of `keys` signed it and it meets the
/// rules its key was loaded with.
pub fn verify(keys: &KeySet, token: &str) -> Result<Verified, Refusal> {
    let header =
        decode_header(token).map_err(|_| Refusal::Invalid("the token's header is malformed"))?;
    let VerifyingKey { key, validation } = match (keys.for_kid(header.kid.as_deref()), header.kid) {
        (Some(key), _) => key,
        (None, Some(_)) => return Err(Refusal::Invalid("the token's key (kid) is unknown")),
        (None, None) => return Err(Refusal::Invalid("the token names no key (kid)")),
    };
    if !validation.algorithms.contains(&header.alg) {
        return Err(Refusal::Invalid(
            "the token's algorithm is not the one its key allows",
        ));
    }
    let claims = decode::<Claims>(token, key, validation)
        .map_err(|e| refusal(e.kind()))?
        .claims;
    let subject = claims
        .sub
        .ok_or(Refusal::Invalid("the token has no subject (sub)"))?;
    if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES {
        return Err(Refusal::Invalid(
            "the token's subject (sub) is empty or too long",
        ));
    }
    let scopes = match (&claims.scope, &claims.scp) {
        (Some(scope), _) => Scopes::of(scope.split_whitespace()),
        (None, Some(ScopeList::Many(names))) => Scopes::of(names.iter().map(String::as_str)),
        (None, Some(ScopeList::One(names))) => Scopes::of(names.split_whitespace()),
        (None, None) => Scopes::default(),
    };
    Ok(Verified {
        principal: Principal {
            subject: subject.into(),
            scopes,
        },
        expires: claims.exp.as_ref().and_then(serde_json::Value::as_u64),
        not_before: claims.nbf.as_ref().and_then(serde_json::Value::as_u64),
    })
}

fn refusal(kind: &ErrorKind) -> Refusal {
    Refusal::Invalid(match kind {
        ErrorKind::ExpiredSignature => return Refusal::Expired,
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not the one its key allows",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "the token has no expiry (exp)",
            "sub" => "the token has no subject (sub)",
            "iss" => "the token has no issuer (iss)",
            "aud" => "the token has no audience (aud)",
            _ => "the token lacks a required claim",
        },
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted",
        ErrorKind::InvalidAudience => "the token's audience (aud) is not accepted",
        _ => "the token is malformed",
    })
}
