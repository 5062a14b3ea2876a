//! The hyper baseline of `cargo xtask bench connections`: HTTP/1.1 with keep-alive on hyper 1.x
//! and tokio's multi-thread runtime (one worker per core, tokio's default). `GET /healthz`
//! answers a small JSON body like our server's; everything else is 404.
//!
//! Usage: `hyper-baseline [PORT]` (default 8080); listens on 127.0.0.1 only.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn answer(request: &Request<Incoming>, started: Instant) -> Response<Full<Bytes>> {
    let (status, body) = if request.method() == Method::GET && request.uri().path() == "/healthz" {
        let uptime_ms = started.elapsed().as_millis();
        (
            StatusCode::OK,
            format!(
                "{{\"status\":\"ok\",\"server\":\"hyper-baseline\",\"uptime_ms\":{uptime_ms}}}"
            ),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "{\"error\":\"not found\"}".to_string(),
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let port = match std::env::args().nth(1) {
        Some(text) => text
            .parse()
            .map_err(|e| std::io::Error::other(format!("bad port {text:?}: {e}")))?,
        None => 8080,
    };
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let started = Instant::now();
    println!("hyper-baseline: listening on http://127.0.0.1:{port}/");
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service =
                service_fn(
                    move |request| async move { Ok::<_, Infallible>(answer(&request, started)) },
                );
            // Errors of single connections (resets, timeouts) are not the server's problem.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
