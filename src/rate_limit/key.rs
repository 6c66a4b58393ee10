//! Whose allowance a request spends: an authenticated request its token's
//! subject (so clients behind one address do not share an allowance, and a
//! subject cannot dodge its limit by changing address), any other request
//! its client's address.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    Address(IpAddr),
    Subject(Arc<str>),
}

impl fmt::Display for RateKey {
    /// As Redis keys name it: an address as it was, a subject apart from
    /// every address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(ip) => write!(f, "{ip}"),
            Self::Subject(subject) => write!(f, "sub:{subject}"),
        }
    }
}
