//! What a request body may be, checked before it is read: not encoded
//! (switchboard does not inflate request bodies, so a small compressed
//! body can never become a large one in memory), not declared larger than
//! the limit, and in within the body-read timeout, so a client that
//! trickles a body cannot hold a request's resources for long.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap};
use actix_web::HttpMessage;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Sleep;

use crate::error::ApiError;

/// The message of the error a body that ran out of time ends with; the
/// extractors' error handler turns it into 408.
pub const BODY_TIMED_OUT: &str = "the request body did not arrive in time";

/// Refuses, before a byte is read, a body that is encoded or declares a
/// length over `limit`.
pub fn check_declared(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    if let Some(coding) = headers.get(header::CONTENT_ENCODING) {
        let identity = coding
            .to_str()
            .is_ok_and(|coding| coding.trim().eq_ignore_ascii_case("identity"));
        if !identity {
            return Err(ApiError::EncodedBody);
        }
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(())
}

/// Gives the request's body `within` to arrive in full, if it has one.
pub fn limit_read_time(req: &mut ServiceRequest, within: Duration) {
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0");
    if has_body {
        let body = req.take_payload();
        let deadline = Box::pin(tokio::time::sleep(within));
        req.set_payload(Payload::Stream {
            payload: Box::pin(Deadlined { body, deadline }),
        });
    }
}

/// A body stream that fails once its deadline has passed.
struct Deadlined {
    body: Payload,
    deadline: Pin<Box<Sleep>>,
}

impl Stream for Deadlined {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Poll::Ready(chunk) = Pin::new(&mut self.body).poll_next(cx) {
            return Poll::Ready(chunk);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                BODY_TIMED_OUT,
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}
