//! A local upstream for the fetch benchmark (`benches/fetch.sh`): every GET
//! waits a fixed delay, then answers a small body, so switchboard's own cost
//! shows as the distance from that floor.
//!
//! `cargo bench --bench upstream -- PORT DELAY_MS`

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(18300);
    let delay = Duration::from_millis(args.next().and_then(|d| d.parse().ok()).unwrap_or(50));
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new().default_service(web::to(move || async move {
                actix_web::rt::time::sleep(delay).await;
                HttpResponse::Ok().body("upstream says hello")
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
