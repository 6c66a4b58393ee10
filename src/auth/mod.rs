//! Access control: bearer JWTs (RFC 6750), verified in the HTTP edge
//! ([`crate::middleware::authorize`]) before any actor sees the request.
//!
//! - [`keys`]: the keys (an HS256 secret, a JWKS of public keys) and the
//!   one algorithm each allows.
//! - [`keyring`]: keys that rotate on `SIGHUP` or a file change, and each
//!   worker's copy of them.
//! - [`verify`]: a request's bearer token, verified: its subject and scopes,
//!   or the refusal RFC 6750 names.
//! - [`verified`]: the tokens a worker has verified, until they expire or
//!   the keys change.
//! - [`scope`]: the scopes, and what each route asks.

pub mod keyring;
pub mod keys;
pub mod scope;
mod verified;
pub mod verify;

pub use keyring::Authenticator;
pub use keys::{KeyFiles, Rules};
pub use scope::{Access, Scope};
pub use verify::{Principal, Refusal};
