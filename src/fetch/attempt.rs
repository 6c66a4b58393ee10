//! One attempt at a URL: a GET with a deadline, following at most a few
//! redirects (each target checked against the allow-list before it is
//! contacted), and the body read as a stream and cut off at the limit, so
//! memory never holds more than the limit whatever the upstream sends.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Client, Response, StatusCode, Url};
use tokio::time::{timeout_at, Instant};

use super::allow_list::AllowList;
use super::retry;

pub const MAX_REDIRECTS: usize = 5;

#[derive(Debug)]
pub enum Outcome {
    /// The upstream answered (any status); the body was read within the limit.
    Answered {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<Duration>,
    },
    /// No usable answer; a transient failure is worth another attempt.
    Failed {
        reason: &'static str,
        transient: bool,
    },
}

impl Outcome {
    /// Whether the host did its job, as the circuit breaker counts it.
    pub fn host_healthy(&self) -> bool {
        match self {
            Self::Answered { status, .. } => !retry::is_transient(*status),
            Self::Failed { transient, .. } => !transient,
        }
    }
}

fn failed(reason: &'static str, transient: bool) -> Outcome {
    Outcome::Failed { reason, transient }
}

/// One attempt's request: where, with which headers (the request id and
/// trace context passed on), within what time, and how much body to take.
#[derive(Debug)]
pub struct Outbound {
    pub url: Url,
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub max_body: usize,
}

pub async fn attempt(client: &Client, allow: &AllowList, outbound: Outbound) -> Outcome {
    let Outbound {
        mut url,
        headers,
        timeout,
        max_body,
    } = outbound;
    let deadline = Instant::now() + timeout;
    for _ in 0..=MAX_REDIRECTS {
        let request = client.get(url.clone()).headers(headers.clone()).send();
        let response = match timeout_at(deadline, request).await {
            Err(_) => return failed("timeout", true),
            Ok(Err(err)) if err.is_timeout() => return failed("timeout", true),
            Ok(Err(err)) if err.is_connect() => return failed("connect error", true),
            Ok(Err(_)) => return failed("request failed", true),
            Ok(Ok(response)) => response,
        };
        match redirect(&response, &url, allow) {
            Ok(Some(next)) => url = next,
            Ok(None) => return read_answer(response, deadline, max_body).await,
            Err(refused) => return refused,
        }
    }
    failed("too many redirects", false)
}

/// Where a redirect leads, if the response is one with a `Location` (an
/// allowed URL, or the failure to follow it).
fn redirect(response: &Response, url: &Url, allow: &AllowList) -> Result<Option<Url>, Outcome> {
    if !response.status().is_redirection() {
        return Ok(None);
    }
    let Some(location) = response
        .headers()
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
    else {
        return Ok(None);
    };
    let next = url
        .join(location)
        .map_err(|_| failed("invalid redirect", false))?;
    let next = allow
        .check_url(next)
        .map_err(|_| failed("redirect to host not allowed", false))?;
    Ok(Some(next))
}

/// The answer, its body read whole, within the deadline and `max_body`.
async fn read_answer(mut response: Response, deadline: Instant, max_body: usize) -> Outcome {
    if response
        .content_length()
        .is_some_and(|len| len > max_body as u64)
    {
        return failed("body too large", false);
    }
    let status = response.status();
    let retry_after = retry::retry_after(response.headers());
    let mut body = BytesMut::new();
    loop {
        match timeout_at(deadline, response.chunk()).await {
            Err(_) => return failed("timeout", true),
            Ok(Err(_)) => return failed("body read failed", true),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > max_body {
                    return failed("body too large", false);
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
    Outcome::Answered {
        status,
        body: body.freeze(),
        retry_after,
    }
}
