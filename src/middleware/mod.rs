//! Middleware that wraps every request.

pub mod authorize;
pub mod body;
pub mod compress;
pub mod disconnect;
pub mod guards;
pub mod in_flight;
pub mod listener;
pub mod request_context;
