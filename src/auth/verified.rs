//! Tokens a worker has already verified. A client sends the same token with
//! every request until it expires, and checking an RS256 or ES256 signature
//! costs more than the rest of a cached read: each token pays for its
//! signature once per worker.
//!
//! What is kept cannot outlive what a full check would say:
//! - only tokens that verified are kept (a client cannot fill it with
//!   garbage), keyed by the whole token, compared byte for byte;
//! - each is answered from here only before its `exp` (the clock-skew
//!   leeway past it is left to a full check), and one whose `nbf` is still
//!   ahead is not kept;
//! - every one is forgotten when the keys change, so a removed key's tokens
//!   are refused from the next request on;
//! - the tokens' bytes are bounded per worker; past the bound, all are
//!   forgotten at once and verified again as they come (a plain map looked
//!   up by the request's own `&str`: no copy of the token per request).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::verify::{Principal, Verified};

/// The bytes of tokens one worker keeps (a token of a few hundred bytes:
/// some thousands of clients).
const MAX_BYTES: usize = 1 << 20;
/// What an entry weighs beyond its token's bytes.
const ENTRY_OVERHEAD: usize = 64;

#[derive(Default)]
pub struct VerifiedTokens(RefCell<Kept>);

#[derive(Default)]
struct Kept {
    /// Each token's subject and scopes, and its `exp` in seconds since the
    /// epoch.
    tokens: HashMap<Box<str>, (Principal, u64)>,
    /// What `tokens` weighs.
    bytes: usize,
}

impl VerifiedTokens {
    /// Who `token` speaks for, if it verified here and has not expired.
    pub fn get(&self, token: &str) -> Option<Principal> {
        let mut kept = self.0.borrow_mut();
        let (principal, expires) = kept.tokens.get(token)?;
        if now() < *expires {
            return Some(principal.clone());
        }
        if kept.tokens.remove(token).is_some() {
            kept.bytes -= token.len() + ENTRY_OVERHEAD;
        }
        None
    }

    /// Keeps what verifying `token` said, if it holds from now until its
    /// `exp` (the leeway aside).
    pub fn keep(&self, token: &str, verified: &Verified) {
        let now = now();
        let started = verified.not_before.is_none_or(|nbf| nbf <= now);
        let Some(expires) = verified.expires.filter(|exp| now < *exp) else {
            return;
        };
        if !started {
            return;
        }
        let mut kept = self.0.borrow_mut();
        let weight = token.len() + ENTRY_OVERHEAD;
        if kept.bytes + weight > MAX_BYTES {
            *kept = Kept::default();
        }
        let entry = (verified.principal.clone(), expires);
        if kept.tokens.insert(token.into(), entry).is_none() {
            kept.bytes += weight;
        }
    }

    /// Forgets every token (the keys changed).
    pub fn clear(&self) {
        *self.0.borrow_mut() = Kept::default();
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scope::Scopes;

    fn verified(expires: Option<u64>, not_before: Option<u64>) -> Verified {
        Verified {
            principal: Principal {
                subject: "ada".into(),
                scopes: Scopes::of(["users:read"]),
            },
            expires,
            not_before,
        }
    }

    #[test]
    fn a_token_is_answered_until_its_expiry_and_only_that_token() {
        let tokens = VerifiedTokens::default();
        tokens.keep("a.b.c", &verified(Some(now() + 60), Some(now())));
        assert_eq!(&*tokens.get("a.b.c").unwrap().subject, "ada");
        assert!(tokens.get("a.b.d").is_none());
        assert!(tokens.get("a.b.c ").is_none());
    }

    #[test]
    fn a_token_past_its_expiry_without_one_or_not_yet_valid_is_not_kept() {
        let tokens = VerifiedTokens::default();
        tokens.keep("past", &verified(Some(now()), None));
        tokens.keep("no-exp", &verified(None, None));
        tokens.keep("early", &verified(Some(now() + 60), Some(now() + 10)));
        for token in ["past", "no-exp", "early"] {
            assert!(tokens.get(token).is_none(), "{token}");
        }
    }

    #[test]
    fn the_tokens_kept_stay_within_their_bytes() {
        let tokens = VerifiedTokens::default();
        let long = |n: usize| format!("{n:08}{}", "t".repeat(1000));
        for n in 0..2000 {
            tokens.keep(&long(n), &verified(Some(now() + 60), None));
        }
        assert!(tokens.0.borrow().bytes <= MAX_BYTES);
        assert!(tokens.get(&long(1999)).is_some(), "the newest is kept");
        assert!(tokens.get(&long(0)).is_none(), "the oldest went");
    }

    #[test]
    fn new_keys_forget_every_token() {
        let tokens = VerifiedTokens::default();
        tokens.keep("a.b.c", &verified(Some(now() + 60), None));
        tokens.clear();
        assert!(tokens.get("a.b.c").is_none());
    }
}
