//! The HTTP server: one tower stack (auth, then routes) on hyper, with graceful shutdown.

mod auth;
mod chat;
pub mod reload;
pub mod respond;
mod routes;
mod stream;

pub use auth::{Auth, Caller};

use crate::accounting::budget::{BudgetStore, MemoryBudgets};
use crate::accounting::rate_limit::RateLimiter;
use crate::accounting::recorder::Recorder;
use crate::accounting::Metrics;
use crate::classifier::batcher::Batcher;
use crate::engines::openai::OpenAiEngine;
use crate::engines::ChatEngine;
use crate::policy::{ModelKind, Policy};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use respond::Body;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceBuilder};

pub use crate::policy::Limits;

/// Everything a request needs: the policy, the engines, the metrics.
pub struct Gateway {
    pub policy: Arc<Policy>,
    pub engines: HashMap<String, Arc<dyn ChatEngine>>,
    pub metrics: Metrics,
    pub auth: Auth,
    pub limits: Limits,
    /// The request classifier, when the policy routes on it.
    pub classifier: Option<Batcher>,
    /// The request log, when the policy enables it.
    pub recorder: Option<Recorder>,
    /// Spending budgets, when the policy sets them.
    pub budgets: Option<Arc<dyn BudgetStore>>,
    /// Per-tenant rate limits, when the policy sets them.
    pub rate_limiter: Option<Arc<RateLimiter>>,
}

impl Gateway {
    /// A gateway for `policy`, with a cloud engine for every `openai` model. On-box models
    /// get their engine from [`Gateway::with_engine`].
    pub fn new(policy: Policy) -> Result<Gateway, String> {
        Gateway::with_registry(policy, Metrics::new())
    }

    /// [`Gateway::new`] counting into existing metrics (a reloaded gateway keeps counting in
    /// the same registry).
    pub fn with_registry(policy: Policy, metrics: Metrics) -> Result<Gateway, String> {
        let mut engines: HashMap<String, Arc<dyn ChatEngine>> = HashMap::new();
        for m in policy.models.values() {
            if m.kind == ModelKind::Openai {
                engines.insert(m.name.clone(), Arc::new(OpenAiEngine::new(m, &metrics)?));
            }
        }
        let budgets = policy
            .budgets
            .as_ref()
            .map(|b| Arc::new(MemoryBudgets::new(b)) as Arc<dyn BudgetStore>);
        let rate_limiter = policy.rate_limits.clone().map(RateLimiter::new);
        Ok(Gateway {
            auth: Auth::new(policy.tenants.clone()),
            limits: policy.limits,
            policy: Arc::new(policy),
            engines,
            metrics,
            classifier: None,
            recorder: None,
            budgets,
            rate_limiter,
        })
    }

    /// Keeps another gateway's rate-limit buckets (same settings across a reload).
    pub fn with_rate_limiter(mut self, limiter: Option<Arc<RateLimiter>>) -> Gateway {
        self.rate_limiter = limiter;
        self
    }

    /// Sets (or replaces) the engine of a model.
    pub fn with_engine(mut self, model: &str, engine: Arc<dyn ChatEngine>) -> Gateway {
        self.engines.insert(model.to_string(), engine);
        self
    }

    /// Sets the budget store.
    pub fn with_budgets(mut self, budgets: Option<Arc<dyn BudgetStore>>) -> Gateway {
        self.budgets = budgets;
        self
    }

    /// Sets the request classifier.
    pub fn with_classifier(mut self, classifier: Batcher) -> Gateway {
        self.classifier = Some(classifier);
        self
    }

    /// Publishes every budget's remaining USD.
    pub fn publish_budgets(&self) {
        if let Some(b) = &self.budgets {
            for (tenant, period, left) in b.remaining(std::time::SystemTime::now()) {
                self.metrics
                    .budget_remaining
                    .with_label_values(&[&tenant, period.label()])
                    .set(left);
            }
        }
    }

    /// Sets the request log.
    pub fn with_recorder(mut self, recorder: Recorder) -> Gateway {
        self.recorder = Some(recorder);
        self
    }

    /// Sets the client limits (instead of the policy's).
    pub fn with_limits(mut self, limits: Limits) -> Gateway {
        self.limits = limits;
        self
    }

    /// Whether `model` can take requests now; `Err` says why not.
    pub fn availability(&self, model: &str) -> Result<(), String> {
        match self.engines.get(model) {
            Some(e) => e.availability(),
            None => Err(match self.policy.models.get(model).map(|m| m.kind) {
                Some(ModelKind::Local) => "no on-box engine is loaded for this model".to_string(),
                _ => "no engine for this model".to_string(),
            }),
        }
    }

    /// Availability of every model, in policy order, also published as a metric.
    pub fn model_states(&self) -> Vec<(String, Result<(), String>)> {
        self.policy
            .models
            .keys()
            .map(|name| {
                let state = self.availability(name);
                self.metrics
                    .model_available
                    .with_label_values(&[name])
                    .set(i64::from(state.is_ok()));
                if let Some(c) = self.engines.get(name).and_then(|e| e.circuit()) {
                    self.metrics
                        .circuit_state
                        .with_label_values(&[name])
                        .set(c as i64);
                }
                (name.clone(), state)
            })
            .collect()
    }

    /// Whether `model` is unavailable only because its circuit breaker is open: the instance is
    /// fine, its upstream is not (every replica shares it), so readiness does not change.
    fn circuit_tripped(&self, model: &str) -> bool {
        self.engines
            .get(model)
            .and_then(|e| e.circuit())
            .is_some_and(|c| c != crate::engines::resilience::CircuitState::Closed)
    }

    /// Ready: the classifier loaded if the policy routes on it, and the default route has a
    /// model that can answer. (A draining server is not ready either: see [`GatewayHandle`].)
    pub fn is_ready(&self) -> bool {
        let d = &self.policy.default;
        (self.classifier.is_some() || !self.policy.uses_classifier())
            && std::iter::once(&d.model)
                .chain(&d.fallbacks)
                .any(|m| self.availability(m).is_ok() || self.circuit_tripped(m))
    }
}

/// The gateway that serves new requests; a policy reload swaps it. A request keeps the gateway
/// it started with (and so its policy) until it ends. Also says whether the server is draining.
#[derive(Clone)]
pub struct GatewayHandle {
    gateway: Arc<std::sync::RwLock<Arc<Gateway>>>,
    draining: Arc<AtomicBool>,
}

impl GatewayHandle {
    pub fn new(gateway: Arc<Gateway>) -> GatewayHandle {
        GatewayHandle {
            gateway: Arc::new(std::sync::RwLock::new(gateway)),
            draining: Arc::default(),
        }
    }

    /// The gateway new requests get.
    pub fn current(&self) -> Arc<Gateway> {
        self.gateway
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `gateway` the one new requests get.
    pub fn replace(&self, gateway: Arc<Gateway>) {
        *self.gateway.write().unwrap_or_else(|e| e.into_inner()) = gateway;
    }

    /// Whether shutdown has begun (`/readyz` then reports not ready).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The tower service answering every route (behind [`AuthLayer`]).
#[derive(Clone)]
pub struct Routes {
    gateway: GatewayHandle,
}

impl Service<Request<Incoming>> for Routes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        // The snapshot the auth layer took, so that one request sees one policy.
        let gateway = req
            .extensions()
            .get::<Arc<Gateway>>()
            .cloned()
            .unwrap_or_else(|| self.gateway.current());
        let draining = self.gateway.is_draining();
        Box::pin(async move { Ok(routes::handle(gateway, req, draining).await) })
    }
}

/// Paths any caller may reach without a gateway key: probes and the metrics scrape.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Checks the gateway key of every request but the [public](is_public) ones, before the body
/// is read, and puts the [`Caller`] in the request's extensions.
#[derive(Clone)]
pub struct AuthLayer {
    gateway: GatewayHandle,
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            gateway: self.gateway.clone(),
            inner,
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    gateway: GatewayHandle,
    inner: S,
}

impl<S> Service<Request<Incoming>> for AuthService<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let gateway = self.gateway.current();
        let limit = gateway.limits.max_header_bytes;
        if header_bytes(req.headers()) > limit {
            let resp = respond::error(&crate::api::ApiError::HeadersTooLarge { limit });
            return Box::pin(async move { Ok(resp) });
        }
        if !is_public(req.uri().path()) {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            match gateway.auth.check(header) {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                }
                Err(e) => {
                    let resp = respond::error(&e);
                    return Box::pin(async move { Ok(resp) });
                }
            }
        }
        req.extensions_mut().insert(gateway);
        Box::pin(self.inner.call(req))
    }
}

/// Size of request headers as sent: names, values and the `: ` and line end of each.
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

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

/// Counts a connection as open until dropped.
struct OpenConnection {
    open: Arc<AtomicUsize>,
    gauge: prometheus::IntGauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
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
        .layer(AuthLayer {
            gateway: handle.clone(),
        })
        .service(Routes {
            gateway: handle.clone(),
        });
    let graceful = GracefulShutdown::new();
    let open = Arc::new(AtomicUsize::new(0));
    let accept = |stream: tokio::net::TcpStream| {
        let gateway = handle.current();
        let limits = gateway.limits;
        let _ = stream.set_nodelay(true);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size((limits.max_header_bytes * 2).max(8192) + 16 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX));
        let count = OpenConnection {
            open: open.clone(),
            gauge: gateway.metrics.open_connections.clone(),
        };
        let was_open = open.fetch_add(1, Ordering::Relaxed);
        count.gauge.inc();
        if was_open >= limits.max_connections {
            gateway.metrics.rejected_connections.inc();
            let limit = limits.max_connections;
            let busy = hyper::service::service_fn(move |_req| async move {
                let mut resp = respond::error(&crate::api::ApiError::TooManyConnections { limit });
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
                Ok::<_, Infallible>(resp)
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), busy)
                .into_owned();
            tokio::spawn(async move {
                let _count = count;
                let _ = tokio::time::timeout(limits.header_timeout, conn).await;
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
