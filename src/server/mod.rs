//! The HTTP server: one tower stack (auth, then routes) on hyper, with graceful shutdown.

mod admission;
mod auth;
mod chat;
mod listen;
pub mod reload;
pub mod respond;
mod routes;
mod stream;

pub use auth::{Auth, Caller};
pub use listen::{serve, serve_handle, ServeOptions};

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
use respond::Body;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Everything a request needs: the policy, the engines, the metrics.
pub struct Gateway {
    pub policy: Arc<Policy>,
    pub engines: HashMap<String, Arc<dyn ChatEngine>>,
    pub metrics: Metrics,
    pub auth: Auth,
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
        let limit = gateway.policy.limits.max_header_bytes;
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
