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
//! - the tokens' bytes are bounded per worker; past the bound, the least
//!   used go.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use mini_moka::unsync::Cache;

use super::verify::{Principal, Verified};

/// The bytes of tokens one worker keeps (a token of a few hundred bytes:
/// some thousands of clients).
const MAX_BYTES: u64 = 1 << 20;
/// What an entry weighs beyond its token's bytes.
const ENTRY_OVERHEAD: u64 = 64;

pub struct VerifiedTokens(RefCell<Cache<String, Kept>>);

#[derive(Clone)]
struct Kept {
    principal: Principal,
    /// The token's `exp`, in seconds since the epoch.
    expires: u64,
}

impl VerifiedTokens {
    pub fn new() -> Self {
        let cache = Cache::builder()
            .max_capacity(MAX_BYTES)
            .weigher(|token: &String, _: &Kept| {
                u32::try_from(token.len() as u64 + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .build();
        Self(RefCell::new(cache))
    }

    /// Who `token` speaks for, if it verified here and has not expired.
    pub fn get(&self, token: &str) -> Option<Principal> {
        // The cache looks up by its own key type: a copy of the token.
        let key = token.to_owned();
        let mut cache = self.0.borrow_mut();
        let kept = cache.get(&key)?.clone();
        if now() < kept.expires {
            return Some(kept.principal);
        }
        cache.invalidate(&key);
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
        if started {
            let kept = Kept {
                principal: verified.principal.clone(),
                expires,
            };
            self.0.borrow_mut().insert(token.to_owned(), kept);
        }
    }

    /// Forgets every token (the keys changed).
    pub fn clear(&self) {
        self.0.borrow_mut().invalidate_all();
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
        let tokens = VerifiedTokens::new();
        tokens.keep("a.b.c", &verified(Some(now() + 60), Some(now())));
        assert_eq!(&*tokens.get("a.b.c").unwrap().subject, "ada");
        assert!(tokens.get("a.b.d").is_none());
        assert!(tokens.get("a.b.c ").is_none());
    }

    #[test]
    fn a_token_past_its_expiry_without_one_or_not_yet_valid_is_not_kept() {
        let tokens = VerifiedTokens::new();
        tokens.keep("past", &verified(Some(now()), None));
        tokens.keep("no-exp", &verified(None, None));
        tokens.keep("early", &verified(Some(now() + 60), Some(now() + 10)));
        for token in ["past", "no-exp", "early"] {
            assert!(tokens.get(token).is_none(), "{token}");
        }
    }

    #[test]
    fn new_keys_forget_every_token() {
        let tokens = VerifiedTokens::new();
        tokens.keep("a.b.c", &verified(Some(now() + 60), None));
        tokens.clear();
        assert!(tokens.get("a.b.c").is_none());
    }
}
