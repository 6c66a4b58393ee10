//! Middleware that wraps every request.

pub mod guards;
pub mod rate_limit_headers;
pub mod request_context;
