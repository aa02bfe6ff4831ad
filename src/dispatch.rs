//! Dispatch: from a routing decision to an answer. The decision's model is tried, then its
//! fallbacks in order, and last, when a budget refused a cloud call and the policy says
//! `on_exhausted: local`, the on-box model. A model is skipped when it lacks a capability the
//! request needs, has no engine, is unavailable, its circuit breaker is open, a budget cannot
//! take its worst-case cost, or the budget and rate-limit store does not answer in time (with
//! `state.on_unavailable: reject`). A rate limit ends the request at its first admission. A call
//! that fails before its first byte moves on to the next model unless the failure is the
//! client's own. The first model that answers gives the [`Answer`]; when none does, the
//! [`DispatchError`] carries every tried model's reason. Nothing here speaks HTTP.

use crate::accounting::budget::Exhausted;
use crate::accounting::state::StoreError;
use crate::accounting::{Refusal, Settlement};
use crate::api::{ApiError, Capability};
use crate::engines::{ChatEngine, Completion, EngineError, EngineRequest, Streaming};
use crate::policy::{Decision, OnExhausted, Policy};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The engines of a gateway, by the policy's model name.
pub type Engines = HashMap<String, Arc<dyn ChatEngine>>;

/// A model's answer.
pub struct Answer<'p> {
    /// The model that answers.
    pub model: &'p str,
    /// Its route label (`local` or `cloud`).
    pub route: &'static str,
    /// The first model that could not answer and why (a failure kind, or `budget_exhausted`),
    /// when a fallback answers.
    pub fallback: Option<(&'p str, &'static str)>,
    pub reply: Reply,
}

/// A complete answer or a stream of chunks, as the request asked (`stream`).
pub enum Reply {
    Complete(Completion),
    /// Its first byte is certain: a later failure ends the stream with an error event.
    Stream(Streaming),
}

/// Why one model did not answer.
#[derive(Debug)]
pub enum Failure {
    Engine(EngineError),
    Budget(Exhausted),
    /// The budget and rate-limit store did not answer in time (`on_unavailable: reject`).
    State(StoreError),
}

impl Failure {
    /// The reason's label (`x-switchyard-fallback`'s `reason`).
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Engine(e) => e.kind(),
            Failure::Budget(_) => "budget_exhausted",
            Failure::State(_) => "state_unavailable",
        }
    }
}

/// One model tried, and why it did not answer.
#[derive(Debug)]
pub struct Attempt<'p> {
    pub model: &'p str,
    pub failure: Failure,
    /// When the model's circuit breaker refuses calls after this failure: how long until it
    /// lets one through.
    pub circuit_retry_in: Option<std::time::Duration>,
}

impl<'p> Attempt<'p> {
    fn new(model: &'p str, failure: Failure) -> Attempt<'p> {
        Attempt {
            model,
            failure,
            circuit_retry_in: None,
        }
    }
}

/// No model answered.
#[derive(Debug)]
pub enum DispatchError<'p> {
    /// A budget is used up and the policy rejects such requests (`on_exhausted: reject`).
    BudgetRejected {
        model: &'p str,
        exhausted: Exhausted,
    },
    /// The caller's rate limit refused the request (its first admission).
    RateLimited { model: &'p str, error: ApiError },
    /// Every model of the route was tried (or the last one's failure allowed no other), in
    /// order; none answered. Empty only for a route with no model.
    Exhausted(Vec<Attempt<'p>>),
}

impl<'p> DispatchError<'p> {
    /// The model the error is about: the one refused, or the last one tried.
    pub fn model(&self) -> Option<&'p str> {
        match self {
            DispatchError::BudgetRejected { model, .. }
            | DispatchError::RateLimited { model, .. } => Some(model),
            DispatchError::Exhausted(tried) => tried.last().map(|a| a.model),
        }
    }

    /// The error the client sees. A budget refusal is `BudgetExhausted` (429 until the period
    /// ends); otherwise the last model's error, and when that is "unavailable" after several
    /// models, one message naming each tried model's reason.
    pub fn to_api(&self) -> ApiError {
        let tried = match self {
            DispatchError::BudgetRejected { exhausted, .. } => {
                return ApiError::BudgetExhausted {
                    message: exhausted.to_string(),
                    retry_after_secs: exhausted.period.seconds_left(SystemTime::now()),
                }
            }
            DispatchError::RateLimited { error, .. } => return error.clone(),
            DispatchError::Exhausted(tried) => tried,
        };
        let Some(last) = tried.last() else {
            return ApiError::Internal;
        };
        let error = match &last.failure {
            Failure::Engine(e) => e.to_api(last.model),
            Failure::Budget(ex) => EngineError::Unavailable(ex.to_string()).to_api(last.model),
            Failure::State(e) => ApiError::StateUnavailable(format!(
                "{e}; the policy refuses cloud calls it cannot reserve budget or rate for (state.on_unavailable: reject)"
            )),
        };
        // The upstream's Retry-After, or the breaker's when that is longer.
        let error = match last.circuit_retry_in {
            Some(wait) => error.retry_after_at_least(wait),
            None => error,
        };
        match error {
            ApiError::Unavailable(_) if tried.len() > 1 => {
                let reasons: Vec<String> = tried
                    .iter()
                    .map(|a| {
                        let reason = match &a.failure {
                            Failure::Engine(EngineError::Unavailable(r)) => r.clone(),
                            Failure::Engine(EngineError::CircuitOpen { reason, .. }) => {
                                reason.clone()
                            }
                            Failure::Engine(e) => e.to_string(),
                            Failure::Budget(ex) => ex.to_string(),
                            Failure::State(e) => e.to_string(),
                        };
                        format!("{}: {reason}", a.model)
                    })
                    .collect();
                ApiError::Unavailable(format!(
                    "no model of the route can serve the request ({})",
                    reasons.join("; ")
                ))
            }
            e => e,
        }
    }
}

/// Whether `model` can take requests now; `Err` says why not.
pub fn availability(policy: &Policy, engines: &Engines, model: &str) -> Result<(), String> {
    match engines.get(model) {
        Some(e) => e.availability(),
        None => Err(match policy.models.get(model).map(|m| m.kind) {
            Some(crate::policy::ModelKind::Local) => {
                "no on-box engine is loaded for this model".to_string()
            }
            _ => "no engine for this model".to_string(),
        }),
    }
}

/// The engine of `model` when it can take a call now.
fn ready<'e>(
    policy: &Policy,
    engines: &'e Engines,
    model: &str,
) -> Result<&'e Arc<dyn ChatEngine>, EngineError> {
    let Some(engine) = engines.get(model) else {
        let reason = availability(policy, engines, model)
            .err()
            .unwrap_or_default();
        return Err(EngineError::Unavailable(reason));
    };
    match engine.availability() {
        Ok(()) => Ok(engine),
        Err(reason) => Err(match engine.circuit_retry_in() {
            Some(wait) => EngineError::circuit_open(wait),
            None => EngineError::Unavailable(reason),
        }),
    }
}

/// Tries the decision's route (see the module documentation) for `req`, accounting each step
/// in `settlement`: the deciding rule and the model tried (its labels), budget reservations,
/// engine failures and fallbacks, engine time, and at the end the gateway's own time.
pub async fn dispatch<'p>(
    policy: &'p Policy,
    engines: &Engines,
    decision: Decision<'p>,
    req: EngineRequest<'_>,
    settlement: &mut Settlement,
) -> Result<Answer<'p>, DispatchError<'p>> {
    let result = try_route(policy, engines, decision, req, settlement).await;
    settlement.dispatched();
    result
}

async fn try_route<'p>(
    policy: &'p Policy,
    engines: &Engines,
    decision: Decision<'p>,
    req: EngineRequest<'_>,
    settlement: &mut Settlement,
) -> Result<Answer<'p>, DispatchError<'p>> {
    settlement.decided(decision.rule);
    let routed =
        std::iter::once(decision.model).chain(decision.fallbacks.iter().map(String::as_str));
    let on_exhausted = policy.budgets.as_ref().map(|b| b.on_exhausted);
    // With `on_exhausted: local`, the box answers what a used-up budget refuses, even when the
    // route does not list it; it is tried only after such a refusal.
    let budget_local = policy
        .local_model
        .as_deref()
        .filter(|_| on_exhausted == Some(OnExhausted::Local))
        .filter(|l| *l != decision.model && !decision.fallbacks.iter().any(|f| f == l));
    let mut tried: Vec<Attempt<'p>> = vec![];
    let mut refused_by_budget = false;
    for (model, extra) in routed
        .map(|m| (m, false))
        .chain(budget_local.map(|m| (m, true)))
    {
        if extra && !refused_by_budget {
            break;
        }
        // A fallback that lacks what the request needs is never tried (the decision's own
        // model has it all).
        if crate::policy::lacking(policy, req.request.needs, model).is_some() {
            continue;
        }
        if let Some(from) = tried.last() {
            settlement.moved_on(from.model, model);
        }
        let route = policy.route_of(model);
        settlement.target(route, model);
        let engine = match ready(policy, engines, model) {
            Ok(e) => e,
            Err(e) => {
                // An open circuit or a disabled model counts as the model's error, as a
                // failed call does (`switchyard_upstream_errors_total`).
                settlement.call_failed(e.kind(), Duration::ZERO, None);
                tried.push(Attempt::new(model, Failure::Engine(e)));
                continue;
            }
        };
        if let Some(m) = policy.models.get(model) {
            let searches = u64::from(req.request.needs.has(Capability::WebSearch));
            // An embedding writes no answer: its worst case is its prompt.
            let max_tokens = if req.request.needs.has(Capability::Embeddings) {
                Some(0)
            } else {
                req.request.max_tokens
            };
            match settlement.admit_call(m, max_tokens, searches).await {
                Ok(()) => {}
                Err(Refusal::RateLimited(error)) => {
                    return Err(DispatchError::RateLimited { model, error })
                }
                Err(Refusal::Budget(exhausted)) => {
                    if on_exhausted == Some(OnExhausted::Reject) {
                        return Err(DispatchError::BudgetRejected { model, exhausted });
                    }
                    refused_by_budget = true;
                    tried.push(Attempt::new(model, Failure::Budget(exhausted)));
                    continue;
                }
                Err(Refusal::Unavailable(e)) => {
                    tried.push(Attempt::new(model, Failure::State(e)));
                    continue;
                }
            }
        }
        settlement.call_started();
        let started = Instant::now();
        let call = req.for_engine(route == "cloud");
        let result = if call.request.stream {
            engine.infer_stream(call).await.map(Reply::Stream)
        } else {
            engine.infer(call).await.map(Reply::Complete)
        };
        match result {
            Ok(reply) => {
                settlement.answering(started.elapsed());
                return Ok(Answer {
                    model,
                    route,
                    fallback: decision
                        .skipped
                        .map(|(m, c)| (m, c.lacking()))
                        .or_else(|| tried.first().map(|a| (a.model, a.failure.kind()))),
                    reply,
                });
            }
            Err(e) => {
                settlement.call_failed(e.kind(), started.elapsed(), e.billed());
                let go_on = e.allows_fallback();
                tried.push(Attempt {
                    circuit_retry_in: engine.circuit_retry_in(),
                    ..Attempt::new(model, Failure::Engine(e))
                });
                if !go_on {
                    break;
                }
            }
        }
    }
    Err(DispatchError::Exhausted(tried))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::{Ledger, Metrics};
    use crate::api::{ChatRequest, Usage};
    use crate::engines::Chunk;
    use async_trait::async_trait;
    use bytes::Bytes;
    use http::StatusCode;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An engine that answers, or fails with a set error, and counts its calls.
    struct Scripted {
        down: Option<&'static str>,
        fails: Option<EngineError>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn answers() -> Arc<Scripted> {
            Arc::new(Scripted {
                down: None,
                fails: None,
                calls: AtomicUsize::new(0),
            })
        }
        fn fails(e: EngineError) -> Arc<Scripted> {
            Arc::new(Scripted {
                down: None,
                fails: Some(e),
                calls: AtomicUsize::new(0),
            })
        }
        fn down(reason: &'static str) -> Arc<Scripted> {
            Arc::new(Scripted {
                down: Some(reason),
                fails: None,
                calls: AtomicUsize::new(0),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl ChatEngine for Scripted {
        fn availability(&self) -> Result<(), String> {
            self.down.map_or(Ok(()), |r| Err(r.to_string()))
        }
        async fn infer(&self, _: EngineRequest<'_>) -> Result<Completion, EngineError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.fails {
                Some(e) => Err(e.clone()),
                None => Ok(Completion {
                    body: Bytes::from_static(b"{}"),
                    usage: Usage {
                        prompt_tokens: 10,
                        completion_tokens: 5,
                        cached_prompt_tokens: 0,
                        cache_write_prompt_tokens: 0,
                        web_searches: 0,
                    },
                    usage_estimated: false,
                    headers: http::HeaderMap::new(),
                    dialect: None,
                }),
            }
        }
        async fn infer_stream(&self, _: EngineRequest<'_>) -> Result<Streaming, EngineError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match &self.fails {
                Some(e) => Err(e.clone()),
                None => Ok(Streaming::new(Box::pin(futures_util::stream::empty::<
                    Result<Chunk, EngineError>,
                >()))),
            }
        }
    }

    fn status(code: u16) -> EngineError {
        EngineError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            body: Bytes::from_static(br#"{"error":{"message":"no"}}"#),
            retry_after: None,
            headers: Box::default(),
        }
    }

    /// Models `box` (on the box), `a` and `b` (cloud, $1 per million tokens); `extra` goes at
    /// the top level (budgets); the default route is `route`.
    fn policy(route: &str, extra: &str) -> Arc<Policy> {
        let cloud = "{ kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: k, price: { input_per_million: 1, output_per_million: 1 } }";
        let yaml = format!(
            "version: 1\nmodels:\n  box: {{ kind: local }}\n  a: {cloud}\n  b: {cloud}\n{extra}default: {route}\n"
        );
        Arc::new(crate::policy::parse(&yaml, "t.yaml", &|_| None).unwrap())
    }

    struct Run {
        ledger: Arc<Ledger>,
        engines: Engines,
    }

    impl Run {
        fn new(policy: &Arc<Policy>, engines: &[(&str, Arc<Scripted>)]) -> Run {
            let ledger = Arc::new(Ledger::new(policy.clone(), Metrics::new(), None).unwrap());
            let engines = engines
                .iter()
                .map(|(n, e)| (n.to_string(), e.clone() as Arc<dyn ChatEngine>))
                .collect();
            Run { ledger, engines }
        }

        /// Dispatches a request to the policy's default route.
        async fn go<'p>(&self, policy: &'p Policy) -> Result<Answer<'p>, DispatchError<'p>> {
            let req = ChatRequest::parse(
                br#"{"model":"auto","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
            )
            .unwrap();
            let headers = http::HeaderMap::new();
            let decision = crate::policy::decide(
                policy,
                &crate::features::Features {
                    requested_model: "auto".into(),
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let mut settlement = self.ledger.open(Instant::now());
            settlement.arrived(None, 5);
            let request = EngineRequest {
                request: &req,
                headers: &headers,
                native: None,
                redacted: None,
            };
            dispatch(policy, &self.engines, decision, request, &mut settlement).await
        }

        fn metrics(&self) -> String {
            self.ledger.metrics.render()
        }
    }

    #[tokio::test]
    async fn a_failure_before_the_first_byte_moves_on_to_the_next_model() {
        let p = policy("{ route: a, fallbacks: [b] }", "");
        let (a, b) = (Scripted::fails(status(503)), Scripted::answers());
        let run = Run::new(&p, &[("a", a.clone()), ("b", b.clone())]);
        let answer = run.go(&p).await.expect("b answers");
        assert_eq!((answer.model, answer.route), ("b", "cloud"));
        assert_eq!(answer.fallback, Some(("a", "status_5xx")));
        assert!(matches!(answer.reply, Reply::Complete(_)));
        assert_eq!((a.calls(), b.calls()), (1, 1));
        let m = run.metrics();
        assert!(
            m.contains(r#"switchyard_fallbacks_total{from="a",to="b"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(r#"switchyard_upstream_errors_total{kind="status_5xx",model="a"} 1"#),
            "{m}"
        );
    }

    #[tokio::test]
    async fn the_clients_own_mistake_is_not_tried_elsewhere() {
        let p = policy("{ route: a, fallbacks: [b] }", "");
        let (a, b) = (Scripted::fails(status(400)), Scripted::answers());
        let run = Run::new(&p, &[("a", a.clone()), ("b", b.clone())]);
        let Err(e) = run.go(&p).await else {
            panic!("a 400 ends the route");
        };
        assert_eq!(b.calls(), 0);
        assert_eq!(e.model(), Some("a"));
        assert_eq!(e.to_api().status(), StatusCode::BAD_REQUEST);
        assert!(!run.metrics().contains("switchyard_fallbacks_total{"));
    }

    #[tokio::test]
    async fn when_no_model_answers_every_tried_models_reason_is_told() {
        let p = policy("{ route: a, fallbacks: [b, box] }", "");
        let run = Run::new(&p, &[("a", Scripted::down("no API key is set"))]);
        let Err(e) = run.go(&p).await else {
            panic!("nothing can answer");
        };
        let DispatchError::Exhausted(tried) = &e else {
            panic!("{e:?}");
        };
        let models: Vec<&str> = tried.iter().map(|a| a.model).collect();
        assert_eq!(models, ["a", "b", "box"]);
        let api = e.to_api();
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ApiError::Unavailable(message) = api else {
            panic!("{api:?}");
        };
        for part in [
            "a: no API key is set",
            "b: no engine for this model",
            "box: no on-box engine is loaded for this model",
        ] {
            assert!(message.contains(part), "{message}");
        }
    }

    #[tokio::test]
    async fn a_used_up_budget_sends_the_request_to_the_box_when_the_policy_says_so() {
        let budgets = "budgets:\n  global: { daily_usd: 0 }\n  on_exhausted: local\n";
        let p = policy("{ route: a }", budgets);
        let (a, local) = (Scripted::answers(), Scripted::answers());
        let run = Run::new(&p, &[("a", a.clone()), ("box", local.clone())]);
        let answer = run.go(&p).await.expect("the box answers");
        assert_eq!((answer.model, answer.route), ("box", "local"));
        assert_eq!(answer.fallback, Some(("a", "budget_exhausted")));
        assert_eq!((a.calls(), local.calls()), (0, 1));
        let m = run.metrics();
        assert!(
            m.contains(r#"switchyard_budget_exhausted_total{tenant="*"} 1"#),
            "{m}"
        );
    }

    #[tokio::test]
    async fn the_box_is_not_tried_outside_the_route_unless_a_budget_refused() {
        let budgets = "budgets:\n  global: { daily_usd: 100 }\n  on_exhausted: local\n";
        let p = policy("{ route: a }", budgets);
        let (a, local) = (Scripted::fails(status(503)), Scripted::answers());
        let run = Run::new(&p, &[("a", a.clone()), ("box", local.clone())]);
        assert!(run.go(&p).await.is_err());
        assert_eq!((a.calls(), local.calls()), (1, 0));
    }

    #[tokio::test]
    async fn a_used_up_budget_rejects_when_the_policy_says_so() {
        let budgets = "budgets:\n  global: { daily_usd: 0 }\n  on_exhausted: reject\n";
        let p = policy("{ route: a, fallbacks: [box] }", budgets);
        let (a, local) = (Scripted::answers(), Scripted::answers());
        let run = Run::new(&p, &[("a", a.clone()), ("box", local.clone())]);
        let Err(e) = run.go(&p).await else {
            panic!("the budget rejects");
        };
        assert!(matches!(
            e,
            DispatchError::BudgetRejected { model: "a", .. }
        ));
        assert_eq!(e.to_api().status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!((a.calls(), local.calls()), (0, 0));
    }
}
