//! Outbound fetching's building blocks, kept apart from the actor that owns
//! them: which URLs may be fetched ([`allow_list`]), when a host is given a
//! rest ([`breaker`]), how long to wait between attempts ([`retry`]), and one
//! attempt itself ([`attempt`]).

pub mod allow_list;
pub mod attempt;
pub mod breaker;
pub mod retry;

use serde::Serialize;

/// One URL's outcome, as `POST /fetch` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FetchResult {
    pub url: String,
    /// The final answer was 2xx.
    pub success: bool,
    /// The final answer's status, if there was one.
    pub status: Option<u16>,
    /// Body bytes of the final answer.
    pub bytes: u64,
    pub cached: bool,
    /// Upstream calls made (0 when cached or refused).
    pub attempts: u32,
    pub elapsed_ms: u64,
    /// A short reason when there was no usable answer.
    pub error: Option<String>,
}
