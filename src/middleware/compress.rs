//! Compressed answers for clients that ask (`Accept-Encoding: gzip`).
//!
//! actix-web's own `Compress` builds a fresh deflate state for every
//! response (hundreds of KiB, allocated, zeroed and freed each time) and
//! hands every chunk over 1 KiB to the blocking thread pool; on a page of
//! users that costs more than the request itself. Here each worker thread
//! keeps one compressor and resets it between answers, and an answer is
//! compressed whole, in place: switchboard's answers are complete bodies of
//! a few KiB. Bodies under 1 KiB (a user, a problem, `/hello`) gain nothing
//! and go as they are, as do bodies over 256 KiB (the docs page's script),
//! which would hold a worker for milliseconds. `Vary: Accept-Encoding` on
//! every answer of a compressible type tells caches that it depends on it.
//!
//! The `ETag` stays as it is: it names the user's version, which is the
//! same whichever coding carries it, so `If-Match` works from either.

use std::cell::RefCell;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, AcceptEncoding, Encoding, Header, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Smaller bodies gain too little to be worth the work.
const WORTH_COMPRESSING: usize = 1024;
/// Larger bodies would hold the worker thread too long.
const MOST_COMPRESSED: usize = 256 * 1024;

pub async fn compress(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let wants_gzip = accepts_gzip(&req);
    let mut res = next.call(req).await?.map_into_boxed_body();
    if !compressible(res.headers()) {
        return Ok(res);
    }
    res.headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    if !wants_gzip || res.headers().contains_key(header::CONTENT_ENCODING) {
        return Ok(res);
    }
    Ok(res.map_body(|head, body| match body.try_into_bytes() {
        Ok(bytes) => {
            let size = bytes.len();
            match (WORTH_COMPRESSING..=MOST_COMPRESSED)
                .contains(&size)
                .then(|| gzip(&bytes))
                .flatten()
            {
                Some(compressed) => {
                    head.headers_mut()
                        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    BoxBody::new(compressed)
                }
                None => BoxBody::new(bytes),
            }
        }
        Err(stream) => stream,
    }))
}

/// Whether the client takes gzip over the body as it is.
fn accepts_gzip(req: &ServiceRequest) -> bool {
    let Ok(accepted) = AcceptEncoding::parse(req) else {
        return false;
    };
    let offered = [Encoding::gzip(), Encoding::identity()];
    accepted.negotiate(offered.iter()) == Some(Encoding::gzip())
}

/// Text worth compressing: JSON, problems, HTML, scripts, style sheets.
fn compressible(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|kind| {
            kind.starts_with("application/json")
                || kind.starts_with("application/problem+json")
                || kind.starts_with("text/")
                || kind.starts_with("application/javascript")
        })
}

thread_local! {
    /// This thread's deflate state, reset between answers rather than
    /// allocated for each.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
}

/// `data` as a gzip member (RFC 1952): a header, raw deflate, CRC-32 and
/// length. `None` if deflate fails, and the body goes as it is.
fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    // No name, no time, no flags; "unknown" operating system.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.reserve(data.len() / 2 + 64);
    DEFLATE.with_borrow_mut(|deflate| {
        deflate.reset();
        loop {
            let read = usize::try_from(deflate.total_in()).ok()?;
            match deflate
                .compress_vec(&data[read..], &mut out, FlushCompress::Finish)
                .ok()?
            {
                Status::StreamEnd => return Some(()),
                Status::Ok | Status::BufError => out.reserve(out.capacity().max(4096)),
            }
        }
    })?;
    let mut crc = Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32; bodies here are far below it.
    out.extend_from_slice(&u32::try_from(data.len()).ok()?.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn gzip_members_inflate_to_the_body_again_and_again() {
        let body: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("{{\"id\":{i}}},").into_bytes())
            .collect();
        for _ in 0..3 {
            let compressed = gzip(&body).unwrap();
            assert!(compressed.len() * 5 < body.len());
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(compressed.as_slice())
                .read_to_end(&mut inflated)
                .unwrap();
            assert_eq!(inflated, body);
        }
    }
}
