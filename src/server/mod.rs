//! The HTTP server: one tower stack (auth, then routes) on hyper, with graceful shutdown.

mod auth;
mod chat;
mod dialects;
mod limits;
mod linger;
mod listen;
mod models;
pub mod reload;
mod request_id;
pub mod respond;
mod routes;
pub mod sticky;
mod stream;

pub use auth::{Auth, AuthLayer, AuthService, Caller};
pub use listen::{serve, serve_handle, ServeOptions};
pub use request_id::{RequestIdLayer, REQUEST_ID};

use crate::accounting::recorder::Recorder;
use crate::accounting::{Ledger, Metrics};
use crate::classifier::batcher::Batcher;
use crate::dispatch::Engines;
use crate::engines::openai::OpenAiEngine;
use crate::engines::ChatEngine;
use crate::policy::{Model, ModelKind, Policy};
use http::{Request, Response};
use hyper::body::Incoming;
use respond::Body;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// Everything a request needs: the policy, its engines, classifier and request log, and the
/// ledger (metrics, budgets, rate limits).
pub struct Gateway {
    pub policy: Arc<Policy>,
    pub engines: Engines,
    pub ledger: Arc<Ledger>,
    pub auth: Auth,
    /// The request classifier, when the policy routes on it.
    pub classifier: Option<Batcher>,
    /// What is stripped from the classifier's input (built-in rules and the policy's).
    pub harness: crate::classifier::input::HarnessFilter,
    /// The request log, when the policy enables it.
    pub recorder: Option<Recorder>,
}

impl Gateway {
    /// Builds the gateway of `policy`, counting into `metrics`, for `serve`, a policy reload
    /// and the tests alike. One rule decides what comes from `previous` (the gateway serving
    /// until now, on a reload): a part carries over when the policy settings it was built from
    /// did not change, and is built anew otherwise. That covers each model's engine (a cloud
    /// engine keeps its connection pool and circuit breaker; an on-box engine its loaded
    /// weights), the classifier, the request log, and budget and rate-limit state. On-box
    /// models with a `path` are loaded here, and the classifier when a rule routes on it.
    ///
    /// Errors: a message naming the part that could not be built (an invalid cloud model, an
    /// on-box model or classifier that cannot be loaded, a request log that cannot be opened).
    pub fn build(
        policy: Policy,
        metrics: Metrics,
        previous: Option<&Gateway>,
    ) -> Result<Gateway, String> {
        let mut policy = policy;
        let carried = |m: &Model| -> Option<Arc<dyn ChatEngine>> {
            let p = previous?;
            let before = p.policy.models.get(&m.name)?;
            let same = match m.kind {
                ModelKind::Local => before.kind == m.kind && before.local == m.local,
                _ => before == m,
            };
            same.then(|| p.engines.get(&m.name).cloned()).flatten()
        };
        let mut engines = Engines::new();
        let mut to_load = vec![];
        for m in policy.models.values() {
            if let Some(e) = carried(m) {
                engines.insert(m.name.clone(), e);
            } else if m.kind.is_cloud() {
                let retries = metrics.retry_counter(&m.name);
                engines.insert(m.name.clone(), Arc::new(OpenAiEngine::new(m, retries)?));
            } else if m.kind == ModelKind::Encoder {
                let engine = crate::engines::encoder::EncoderEngine::load(m).map_err(|e| {
                    format!("cannot load the encoder: {e}\nhint: scripts/fetch-models.sh fetches all-MiniLM-L6-v2")
                })?;
                engines.insert(m.name.clone(), Arc::new(engine));
            } else {
                to_load.push(m);
            }
        }
        for (name, e) in crate::local::engine::start_all(to_load, metrics.local())
            .map_err(|e| format!("cannot load the on-box model: {e}"))?
        {
            engines.insert(name, e);
        }
        // What each engine reports it can do narrows what the policy says of its model
        // (an on-box model whose chat template offers no tools cannot take tool calls).
        for (name, m) in policy.models.iter_mut() {
            if let Some(report) = engines.get(name).and_then(|e| e.capabilities()) {
                m.capabilities = m.capabilities.iter().filter(|c| report.has(*c)).collect();
            }
        }
        let policy = Arc::new(policy);
        let classifier = if !policy.uses_classifier() {
            tracing::info!("no rule routes on the classifier: it is not loaded");
            None
        } else {
            match previous {
                Some(p) if p.policy.classifier == policy.classifier && p.classifier.is_some() => {
                    p.classifier.clone()
                }
                _ => {
                    let c = &policy.classifier;
                    let started = crate::classifier::start(c).map_err(|e| {
                        format!(
                            "cannot load the request classifier ({}): {e}\n\
                             hint: scripts/fetch-models.sh fetches the default encoder",
                            c.encoder.display()
                        )
                    })?;
                    let shared = c
                        .heads
                        .as_ref()
                        .map_or("built in".into(), |h| h.display().to_string());
                    tracing::info!(
                        "request classifier: encoder {}, heads {shared}",
                        c.encoder.display()
                    );
                    for (model, dir) in &c.model_heads {
                        tracing::info!(
                            "model `{model}`: strong_score rules read its own heads, {}",
                            dir.display()
                        );
                    }
                    for note in crate::classifier::calibration_notes(&policy) {
                        tracing::warn!("{note}");
                    }
                    Some(started)
                }
            }
        };
        let recorder = match (&policy.recording, previous) {
            (None, _) => None,
            (Some(r), Some(p))
                if p.policy.recording.as_ref() == Some(r) && p.recorder.is_some() =>
            {
                p.recorder.clone()
            }
            (Some(r), _) => {
                let rec = Recorder::start(r).map_err(|e| {
                    format!("cannot open the request log {}: {e}", r.path.display())
                })?;
                tracing::info!("recording requests to {}", r.path.display());
                Some(rec)
            }
        };
        let ledger = Ledger::new(policy.clone(), metrics, previous.map(|p| &*p.ledger))?;
        Ok(Gateway {
            harness: crate::classifier::input::HarnessFilter::of(&policy.classifier)
                .unwrap_or_default(),
            auth: Auth::new(policy.tenants.clone()),
            policy,
            engines,
            ledger: Arc::new(ledger),
            classifier,
            recorder,
        })
    }

    /// Sets (or replaces) the engine of a model: the seam for engines the policy cannot
    /// describe (the tests' scripted ones).
    pub fn with_engine(mut self, model: &str, engine: Arc<dyn ChatEngine>) -> Gateway {
        self.engines.insert(model.to_string(), engine);
        self
    }

    /// Sets (or replaces) the request classifier (any [`crate::classifier::RouterModel`]
    /// behind a batcher).
    pub fn with_classifier(mut self, classifier: Batcher) -> Gateway {
        self.classifier = Some(classifier);
        self
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.ledger.metrics
    }

    /// Whether `model` can take requests now; `Err` says why not.
    pub fn availability(&self, model: &str) -> Result<(), String> {
        crate::dispatch::availability(&self.policy, &self.engines, model)
    }

    /// Availability of every model, in policy order, also published as a metric.
    pub fn model_states(&self) -> Vec<(String, Result<(), String>)> {
        self.policy
            .models
            .keys()
            .map(|name| {
                let state = self.availability(name);
                let circuit = self.engines.get(name).and_then(|e| e.circuit());
                self.metrics()
                    .model_state(name, state.is_ok(), circuit.map(|c| c as i64));
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

impl Routes {
    pub fn new(gateway: GatewayHandle) -> Routes {
        Routes { gateway }
    }
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
