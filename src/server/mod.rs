//! The HTTP server: one tower stack (auth, then routes) on hyper, with graceful shutdown.

mod auth;
mod chat;
pub mod reload;
pub mod respond;
mod routes;
mod stream;

pub use auth::{Auth, Caller};

use crate::accounting::budget::{BudgetStore, MemoryBudgets};
use crate::accounting::recorder::Recorder;
use crate::accounting::Metrics;
use crate::classifier::batcher::Batcher;
use crate::engines::openai::OpenAiEngine;
use crate::engines::ChatEngine;
use crate::policy::{ModelKind, Policy};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use respond::Body;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceBuilder};

/// Server limits on what a client sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

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
    ready: AtomicBool,
}

impl Gateway {
    /// A gateway for `policy`, with a cloud engine for every `openai` model. On-box models
    /// get their engine from [`Gateway::with_engine`].
    pub fn new(policy: Policy) -> Result<Gateway, String> {
        let mut engines: HashMap<String, Arc<dyn ChatEngine>> = HashMap::new();
        for m in policy.models.values() {
            if m.kind == ModelKind::Openai {
                engines.insert(m.name.clone(), Arc::new(OpenAiEngine::new(m)?));
            }
        }
        let budgets = policy
            .budgets
            .as_ref()
            .map(|b| Arc::new(MemoryBudgets::new(b)) as Arc<dyn BudgetStore>);
        Ok(Gateway {
            auth: Auth::new(policy.tenants.clone()),
            policy: Arc::new(policy),
            engines,
            metrics: Metrics::new(),
            limits: Limits::default(),
            classifier: None,
            recorder: None,
            budgets,
            ready: AtomicBool::new(true),
        })
    }

    /// Sets (or replaces) the engine of a model.
    pub fn with_engine(mut self, model: &str, engine: Arc<dyn ChatEngine>) -> Gateway {
        self.engines.insert(model.to_string(), engine);
        self
    }

    /// Shares another gateway's metrics (a reloaded gateway keeps counting in the same registry).
    pub fn with_metrics(mut self, metrics: Metrics) -> Gateway {
        self.metrics = metrics;
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

    /// Sets the client limits.
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
                (name.clone(), state)
            })
            .collect()
    }

    /// Ready: not shutting down, the classifier loaded if the policy routes on it, and the
    /// default route has a model that can answer.
    pub fn is_ready(&self) -> bool {
        let d = &self.policy.default;
        self.ready.load(Ordering::Relaxed)
            && (self.classifier.is_some() || !self.policy.uses_classifier())
            && std::iter::once(&d.model)
                .chain(&d.fallbacks)
                .any(|m| self.availability(m).is_ok())
    }
}

/// The gateway that serves new requests; a policy reload swaps it. A request keeps the gateway
/// it started with (and so its policy) until it ends.
#[derive(Clone)]
pub struct GatewayHandle(Arc<std::sync::RwLock<Arc<Gateway>>>);

impl GatewayHandle {
    pub fn new(gateway: Arc<Gateway>) -> GatewayHandle {
        GatewayHandle(Arc::new(std::sync::RwLock::new(gateway)))
    }

    /// The gateway new requests get.
    pub fn current(&self) -> Arc<Gateway> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `gateway` the one new requests get.
    pub fn replace(&self, gateway: Arc<Gateway>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = gateway;
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
        Box::pin(async move { Ok(routes::handle(gateway, req).await) })
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

/// How long in-flight requests may run on after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `gateway` on `listener` until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    serve_handle(listener, GatewayHandle::new(gateway), shutdown).await
}

/// [`serve`] with a handle through which the gateway can be replaced while serving.
pub async fn serve_handle(
    listener: TcpListener,
    handle: GatewayHandle,
    shutdown: impl Future<Output = ()>,
) {
    let service = ServiceBuilder::new()
        .layer(AuthLayer {
            gateway: handle.clone(),
        })
        .service(Routes {
            gateway: handle.clone(),
        });
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended with an error: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    handle.current().ready.store(false, Ordering::Relaxed);
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}
