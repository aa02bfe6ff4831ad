//! Accepting connections (with the connection limit and the HTTP settings of `limits`) and
//! shutting down: readiness first, then the listener, then the requests in flight.

use super::linger::{self, Lingering};
use super::{respond, AuthLayer, Gateway, GatewayHandle, RequestIdLayer, Routes};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// Hands each accepted connection to `accept` until `until` completes.
async fn accept_until(
    listener: &TcpListener,
    accept: &impl Fn(tokio::net::TcpStream),
    until: impl Future<Output = ()>,
) {
    tokio::pin!(until);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => accept(stream),
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = &mut until => return,
        }
    }
}

/// How shutdown proceeds.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// After the shutdown signal, how long `/readyz` reports not ready while new requests are
    /// still served, so that a load balancer stops sending them.
    pub drain_delay: Duration,
    /// How long in-flight requests and streams may then run on before they are closed.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `gateway` on `listener` until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    serve_handle(
        listener,
        GatewayHandle::new(gateway),
        shutdown,
        ServeOptions::default(),
    )
    .await
}

/// How many times `limits.max_header_bytes` a request head may take and still be parsed, so
/// that it gets the gateway's own 431 (in the OpenAI shape, from the auth layer).
const HEAD_BUFFER_MULTIPLE: usize = 16;

/// The HTTP parser's buffer for a request head ([`HEAD_BUFFER_MULTIPLE`] times the limit).
/// It grows to this only while a head that large is read; a larger head gets the parser's
/// own 431, without a body.
fn head_buffer(max_header_bytes: usize) -> usize {
    // hyper refuses a buffer under 8 KiB.
    max_header_bytes
        .saturating_mul(HEAD_BUFFER_MULTIPLE)
        .max(8192)
}

/// Longest a connection over `limits.max_connections` is kept to be told so.
const REFUSED_CONNECTION_TIME: Duration = Duration::from_secs(2);

/// Counts a connection as open until dropped: in the gauge, and (when served) against the limit.
struct OpenConnection {
    served: Option<Arc<AtomicUsize>>,
    gauge: prometheus::IntGauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(served) = &self.served {
            served.fetch_sub(1, Ordering::Relaxed);
        }
        self.gauge.dec();
    }
}

/// [`serve`] with a handle through which the gateway can be replaced while serving. On
/// `shutdown`: readiness goes false, requests are still served for `drain_delay`, then the
/// listener closes and open requests get `drain_timeout` to finish.
pub async fn serve_handle(
    listener: TcpListener,
    handle: GatewayHandle,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) {
    let service = ServiceBuilder::new()
        .layer(RequestIdLayer)
        .layer(AuthLayer::new(handle.clone()))
        .service(Routes::new(handle.clone()));
    let graceful = GracefulShutdown::new();
    let served = Arc::new(AtomicUsize::new(0));
    let accept = |stream: tokio::net::TcpStream| {
        let gateway = handle.current();
        let limits = gateway.policy.limits;
        let _ = stream.set_nodelay(true);
        // Its shutdown reads and discards what the client still sends, within bounds.
        let stream = Lingering::new(stream, linger::Bounds::of(&limits));
        let head = head_buffer(limits.max_header_bytes);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(head);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX));
        // Connections are accepted one at a time, so the check and the count cannot race.
        let over = served.load(Ordering::Relaxed) >= limits.max_connections;
        let count = OpenConnection {
            served: (!over).then(|| served.clone()),
            gauge: gateway.metrics().open_connections(),
        };
        if !over {
            served.fetch_add(1, Ordering::Relaxed);
        }
        count.gauge.inc();
        if over {
            gateway.metrics().connection_rejected();
            let limit = limits.max_connections;
            let busy = hyper::service::service_fn(move |req| async move {
                // In the client's dialect, as every other refusal.
                let mut resp =
                    respond::refusal(&crate::api::ApiError::TooManyConnections { limit }, &req);
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                Ok::<_, Infallible>(resp)
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), busy)
                .into_owned();
            // Refused connections do not count against the limit, so they get little time: long
            // enough to send a request and read the 503.
            let wait = limits.header_timeout.min(REFUSED_CONNECTION_TIME);
            tokio::spawn(async move {
                let _count = count;
                let _ = tokio::time::timeout(wait, conn).await;
            });
            return;
        }
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _count = count;
            if let Err(e) = conn.await {
                tracing::debug!("connection ended with an error: {e}");
            }
        });
    };
    accept_until(&listener, &accept, shutdown).await;
    handle.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        "draining: /readyz reports not ready; new requests are served for {:?} more",
        options.drain_delay
    );
    accept_until(&listener, &accept, tokio::time::sleep(options.drain_delay)).await;
    drop(listener);
    tracing::info!(
        "stopped accepting; waiting up to {:?} for requests in flight",
        options.drain_timeout
    );
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {:?}; closing them",
            options.drain_timeout
        );
    }
}
