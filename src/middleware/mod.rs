//! Middleware that wraps every request.

pub mod guards;
pub mod request_context;
