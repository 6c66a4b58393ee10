//! Noticing that a client has gone. actix-web goes on polling a request's
//! handler after its client has closed the connection (HTTP/1), so work
//! that waits on something slow (an upstream fetch) would run on for
//! nobody. Each connection keeps a duplicate of its socket
//! ([`remember_connection`]); a handler that waits on slow work races it
//! against [`client_gone`], which resolves when the peer has closed its
//! side, and drops the work when it does.
//!
//! Closing is seen by peeking: readiness with nothing to read is the end
//! of the stream. Bytes waiting to be read (a pipelined request) say the
//! client is still there.

use std::any::Any;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;

/// How long to wait before looking again when bytes are waiting (the
/// readiness would otherwise fire at once, again and again).
const RECHECK_EVERY: Duration = Duration::from_millis(200);

/// A duplicate of a connection's socket, kept with the connection.
struct ClientSocket(OwnedFd);

/// Keeps a duplicate of a new connection's socket (`HttpServer::on_connect`).
pub fn remember_connection(connection: &dyn Any, data: &mut Extensions) {
    let socket = connection.downcast_ref::<actix_web::rt::net::TcpStream>();
    if let Some(duplicate) = socket.and_then(|s| s.as_fd().try_clone_to_owned().ok()) {
        data.insert(ClientSocket(duplicate));
    }
}

/// Resolves once the client of `req` has closed its connection; never, if
/// that cannot be watched.
pub async fn client_gone(req: &HttpRequest) {
    let watched = req
        .conn_data::<ClientSocket>()
        .and_then(|ClientSocket(fd)| fd.try_clone().ok())
        .map(std::net::TcpStream::from)
        .and_then(|socket| {
            socket.set_nonblocking(true).ok()?;
            actix_web::rt::net::TcpStream::from_std(socket).ok()
        });
    let Some(socket) = watched else {
        return std::future::pending().await;
    };
    let mut byte = [0u8; 1];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        match socket.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => actix_web::rt::time::sleep(RECHECK_EVERY).await,
        }
    }
}
