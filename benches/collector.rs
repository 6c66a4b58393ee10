//! A local trace collector for `benches/cpu.py --traces`: takes every
//! OTLP/HTTP export and answers 200 at once, so switchboard's cost of
//! recording and exporting its spans shows without a real backend's.
//!
//! `cargo bench --bench collector -- PORT`

use actix_web::{web, App, HttpResponse, HttpServer};

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(18430);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::default().limit(64 << 20))
                .default_service(web::to(|_: web::Bytes| async {
                    HttpResponse::Ok().finish()
                }))
        })
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
