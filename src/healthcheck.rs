//! `switchboard healthcheck`: asks the listener's `/health` and says
//! whether it answered 200, for a container's health check (the runtime
//! image then needs no shell and no HTTP client of its own). A plain
//! HTTP/1.1 request over a blocking socket: no runtime to start for one
//! request.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// How long the check waits to connect, and then for the answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `/health` at the listener `bind` answers 200; `Err` says why
/// not. A listener on every interface is asked on loopback.
pub fn check(bind: SocketAddr) -> Result<(), String> {
    let address = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bind.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bind.port())
        }
        _ => bind,
    };
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot ask {address}: {e}"))?;
    let mut head = [0u8; 32];
    let read = stream
        .read(&mut head)
        .map_err(|e| format!("no answer from {address}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("none");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("{address}/health answered {status}"))
    }
}
