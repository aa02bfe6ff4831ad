//! The end of a request, settled once: a [`Settlement`] is opened when a chat request arrives,
//! takes the rate-limit and budget reservations on its way (one admission to the state store
//! per model tried), learns the request's labels, tokens and text, and is finished exactly
//! once, however the request ends: a JSON answer, a stream's end or error, an error response,
//! or the client going away (its `Drop`).

use super::budget::Exhausted;
use super::state::{Admitted, Ask, Refused, StoreError, Ticket, ANONYMOUS};
use super::{Bill, Ledger};
use crate::api::{ApiError, Reported, Usage};
use crate::features::estimate_text_tokens;
use crate::policy::{Model, OnUnavailable};
use http::StatusCode;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The label value of a request that has no route, model or rule (yet).
pub const NONE: &str = "none";
/// Answer tokens a cloud reservation assumes when neither the request nor the model limits them.
pub const RESERVED_OUTPUT_TOKENS: u64 = 4096;

/// How a request ended, as the `status` label of `switchyard_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A complete (non-streaming) answer with its token counts, and whether the engine had to
    /// estimate some of them (the upstream left them out or garbled them): `200`.
    Complete(Usage, bool),
    /// A stream that reached its end: `200`.
    StreamDone,
    /// A stream whose engine failed after its head (`kind`: the failure's
    /// `switchyard_upstream_errors_total` kind): `stream_error`.
    StreamFailed(&'static str),
    /// An error response with this status.
    Error(StatusCode),
    /// The client went away before the end (the settlement was dropped): `client_closed`.
    ClientClosed,
}

/// Where the request's current model call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// No model is working on the request.
    None,
    /// A model has the request and has not answered yet (it may have read the prompt).
    InFlight,
    /// A model is answering (a complete answer, or a stream whose head went out).
    Answering,
}

/// The accounting of one request. See the module documentation.
pub struct Settlement {
    ledger: Arc<Ledger>,
    started: Instant,
    tenant: Option<String>,
    prompt_estimate: u64,
    route: &'static str,
    model: Cow<'static, str>,
    rule: Cow<'static, str>,
    /// What the state store holds for the request (rate-limit tokens, the budget reservation
    /// of the call in flight), replaced by the real counts and cost at the end.
    ticket: Ticket,
    /// Whether the rate limits were asked already (once per request).
    rate_asked: bool,
    /// Whether a budget refused a call of this request already (counted once per request).
    over_budget: bool,
    call: Call,
    engine_time: Duration,
    first_text: Option<Instant>,
    text_bytes: u64,
    usage: Option<Reported>,
    /// Whether the complete answer's counts were estimated by its engine.
    usage_estimated: bool,
    /// Calls that failed after their upstream took them (which the provider bills), with what
    /// each is billed.
    failed_billed: Vec<(String, Usage)>,
    /// The request's row of the request log, written when it is settled.
    log: Option<super::recorder::Row>,
    /// Whether the answer has a price on the reference model to save against (an embedding
    /// has none: [`Settlement::without_savings`]).
    saves: bool,
    settled: bool,
}

impl Ledger {
    /// Opens the settlement of a request that arrived at `started`.
    pub fn open(self: &Arc<Self>, started: Instant) -> Settlement {
        Settlement {
            ledger: self.clone(),
            started,
            tenant: None,
            prompt_estimate: 0,
            route: NONE,
            model: Cow::Borrowed(NONE),
            rule: Cow::Borrowed(NONE),
            ticket: Ticket::new(None),
            rate_asked: false,
            call: Call::None,
            engine_time: Duration::ZERO,
            first_text: None,
            text_bytes: 0,
            usage: None,
            usage_estimated: false,
            failed_billed: vec![],
            log: None,
            saves: true,
            settled: false,
            over_budget: false,
        }
    }
}

impl Settlement {
    /// The request is no answer the reference model could have given (an embedding): it saves
    /// nothing against it, and costs what it costs (`switchyard_savings_usd_total` and the
    /// request log's `savings_usd` get 0 for it).
    pub fn without_savings(&mut self) {
        self.saves = false;
    }

    /// The request comes from `tenant` (`None`: an open gateway) with `prompt_estimate` tokens.
    pub fn arrived(&mut self, tenant: Option<&str>, prompt_estimate: u64) {
        self.tenant = tenant.map(str::to_string);
        self.prompt_estimate = prompt_estimate;
        self.ticket = Ticket::new(tenant);
    }

    /// The tenant label of metrics (`anonymous` on an open gateway).
    pub fn tenant_label(&self) -> &str {
        self.tenant.as_deref().unwrap_or(ANONYMOUS)
    }

    /// The request's estimated prompt tokens.
    pub fn prompt_estimate(&self) -> u64 {
        self.prompt_estimate
    }

    /// The rule that decided the request's route.
    pub fn decided(&mut self, rule: &str) {
        self.rule = Cow::Owned(rule.to_string());
    }

    /// The model tried now, on `route` (`local` or `cloud`): the request's labels from here on.
    pub fn target(&mut self, route: &'static str, model: &str) {
        self.route = route;
        if self.model != model {
            self.model = Cow::Owned(model.to_string());
        }
    }

    /// The model the request is labelled with (the one tried now, or `none`).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The request moves on from model `from`, which could not answer, to `to`.
    pub fn moved_on(&self, from: &str, to: &str) {
        self.ledger.metrics.fallback(from, to);
    }

    /// Admits a call to `model`, in one round trip to the state store: the first call of the
    /// request takes it from the caller's rate limits, and a cloud call reserves its worst-case
    /// cost against the budgets: the prompt estimate and `max_tokens` (else the model's
    /// `max_output_tokens`, else [`RESERVED_OUTPUT_TOKENS`], capped by `max_output_tokens`) at
    /// the model's prices, and `web_searches` searches (one for a request that asks for a web
    /// search: what OpenAI's search models bill; Anthropic's tool may search more, which the
    /// settlement bills), in place of an earlier call's reservation. A call that takes nothing
    /// (an on-box fallback) asks nothing; nor does a policy without budgets or rate limits.
    ///
    /// Errors ([`Refusal`]): a rate limit (counted in `switchyard_rate_limited_total`); a budget
    /// that cannot take the reservation (counted in `switchyard_budget_exhausted_total`;
    /// nothing is reserved); or, for a cloud call with `state.on_unavailable: reject`, a store
    /// that did not answer in time. With `allow`, and for every on-box call, an unanswered
    /// store lets the call go ahead unreserved. Both are counted in
    /// `switchyard_state_unavailable_total{operation="admit"}`.
    pub async fn admit_call(
        &mut self,
        model: &Model,
        max_tokens: Option<u64>,
        web_searches: u64,
    ) -> Result<(), Refusal> {
        let ledger = self.ledger.clone();
        let Some(store) = &ledger.state else {
            return Ok(());
        };
        let cloud = model.kind.is_cloud();
        let reserve_usd = (cloud && ledger.policy.budgets.is_some()).then(|| {
            let cap = model.max_output_tokens.unwrap_or(u64::MAX);
            let output = max_tokens
                .or(model.max_output_tokens)
                .unwrap_or(RESERVED_OUTPUT_TOKENS)
                .min(cap);
            model.price.cost_of(&Usage {
                prompt_tokens: self.prompt_estimate,
                completion_tokens: output,
                web_searches,
                ..Usage::default()
            })
        });
        let ask = Ask {
            tenant: self.tenant.as_deref(),
            take_rate: (!self.rate_asked).then_some(self.prompt_estimate),
            reserve_usd,
        };
        if ask.take_rate.is_none() && ask.reserve_usd.is_none() {
            // Nothing to take: an earlier call's reservation is given back by the settlement,
            // which saves a round trip (and a wait, when the store is slow) on the way.
            return Ok(());
        }
        self.rate_asked = true;
        // An admission gives back the ticket's earlier reservation first; if it is refused,
        // the windows a call that failed after its head must still be billed in are kept (with
        // nothing reserved in them any more).
        let windows = (!self.failed_billed.is_empty()).then(|| self.ticket.windows.clone());
        let admitted = store.admit(&ask, &mut self.ticket).await;
        if let Some(windows) = windows.filter(|_| !matches!(admitted, Ok(Admitted::Yes))) {
            if self.ticket.windows.is_empty() {
                self.ticket.windows = windows;
                self.ticket.reserved_usd = 0.0;
            }
        }
        match admitted {
            Ok(Admitted::Yes) => Ok(()),
            Ok(Admitted::OverBudget(ex)) => {
                // One request whose route tries two cloud models is one request refused.
                if !std::mem::replace(&mut self.over_budget, true) {
                    ledger.metrics.budget_exhausted(&ex.tenant);
                }
                Err(Refusal::Budget(ex))
            }
            Err(Refused::RateLimited(r)) => {
                ledger
                    .metrics
                    .rate_limited(self.tenant_label(), r.limit.label());
                Err(Refusal::RateLimited(ApiError::RateLimited {
                    message: r.to_string(),
                    retry_after_secs: crate::api::retry_after_secs(r.retry_after),
                }))
            }
            Err(Refused::Unavailable(e)) => {
                let reject = cloud && ledger.policy.state.on_unavailable == OnUnavailable::Reject;
                let action = if reject { "reject" } else { "allow" };
                ledger.metrics.state_unavailable("admit", action);
                tracing::debug!(
                    "state store: {e}; the call to `{}` is {action}ed",
                    model.name
                );
                if reject {
                    Err(Refusal::Unavailable(e))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The current model has the request (its engine is called now).
    pub fn call_started(&mut self) {
        self.call = Call::InFlight;
    }

    /// The current model failed before answering, after `took` in its engine, with `kind` (its
    /// `switchyard_upstream_errors_total` kind). Its budget reservation is replaced by the next
    /// cloud call's, or given back when the request is settled. A failure the provider bills
    /// anyway (`billed`: one after the upstream took the call) is billed to the model when the
    /// request is settled, whichever model answers in the end: its tokens and cost count, and
    /// its savings, with a reference model, are minus its cost (it answered nothing).
    pub fn call_failed(&mut self, kind: &str, took: Duration, billed: Option<Usage>) {
        self.engine_time += took;
        self.call = Call::None;
        self.ledger.metrics.upstream_error(&self.model, kind);
        if let Some(usage) = billed {
            self.failed_billed.push((self.model.to_string(), usage));
        }
    }

    /// The current model answers (a complete answer, or a stream's head), after `took` in its
    /// engine.
    pub fn answering(&mut self, took: Duration) {
        self.engine_time += took;
        self.call = Call::Answering;
    }

    /// The route and its fallbacks are done with (answered or exhausted): the time spent in the
    /// gateway until now, engine time excluded, goes into `switchyard_gateway_overhead_seconds`.
    pub fn dispatched(&self) {
        let inside = self.started.elapsed().saturating_sub(self.engine_time);
        self.ledger.metrics.gateway_overhead(inside);
    }

    /// A stream chunk went out with `text_bytes` of generated text, and `usage` when it carries
    /// the stream's token counts.
    pub fn on_chunk(&mut self, text_bytes: u64, usage: Option<Reported>) {
        if text_bytes > 0 && self.first_text.is_none() {
            self.first_text = Some(Instant::now());
        }
        self.text_bytes += text_bytes;
        if usage.is_some() {
            self.usage = usage;
        }
    }

    /// Writes the request's row of the request log when it is settled, with its outcome.
    pub fn log(&mut self, row: super::recorder::Row) {
        self.log = Some(row);
    }

    /// Settles the request: its tokens and cost (when a model had it) into the metrics, the
    /// budget reservation replaced by the cost, the rate-limit tokens by the real count, and the
    /// request counted with its status and durations. Only the first call counts; later ones
    /// change nothing and return a zero bill. The request log's row, when there is one, is
    /// written with the outcome.
    ///
    /// Tokens are the model's `usage` when it reported one, else estimated: the prompt estimate
    /// and a quarter of the bytes of text sent ([`estimate_text_tokens`]). A call cut short
    /// (the client went away) is billed that estimate, so it never holds more budget than the
    /// prompt and the text it was sent.
    pub fn finish(&mut self, end: End) -> Bill {
        if self.settled {
            return Bill::default();
        }
        self.settled = true;
        if let End::Complete(usage, estimated) = end {
            self.usage = Some(usage.into());
            self.usage_estimated = estimated;
        }
        let ledger = &self.ledger;
        let metrics = &ledger.metrics;
        let mut bill = Bill::default();
        let mut billed = None;
        if self.call != Call::None {
            let reported = self.usage.unwrap_or_default();
            let (usage, estimated) =
                reported.resolve(self.prompt_estimate, estimate_text_tokens(self.text_bytes));
            let estimated = estimated || self.usage_estimated;
            // Only an answer that ended as it should had counts to report: a cut one is
            // estimated without the model being at fault.
            if estimated && matches!(end, End::Complete(..) | End::StreamDone) {
                ledger.usage_estimated(&self.model);
            }
            billed = Some((usage, estimated));
            bill = ledger.bill(&self.model, usage);
            if !self.saves {
                bill.savings_usd = 0.0;
            }
            metrics.billed(&self.model, self.tenant_label(), usage, bill);
        }
        let mut used_tokens = billed.map_or(0, |(u, _)| u.total());
        for (model, usage) in std::mem::take(&mut self.failed_billed) {
            let cost_usd = ledger.bill(&model, usage).cost_usd;
            // Savings are measured against the reference model's price of an answer; a failed
            // call answered nothing, so it saved minus its cost.
            let wasted = Bill {
                cost_usd,
                savings_usd: if ledger.policy.reference_model.is_some() && self.saves {
                    -cost_usd
                } else {
                    0.0
                },
            };
            metrics.billed(&model, self.tenant_label(), usage, wasted);
            bill.cost_usd += wasted.cost_usd;
            bill.savings_usd += wasted.savings_usd;
            used_tokens = used_tokens.saturating_add(usage.total());
        }
        let ticket = std::mem::take(&mut self.ticket);
        ledger.settle_state(ticket, bill.cost_usd, used_tokens);
        let status = match end {
            End::Complete(..) | End::StreamDone => Cow::Borrowed("200"),
            End::StreamFailed(kind) => {
                metrics.upstream_error(&self.model, kind);
                Cow::Borrowed("stream_error")
            }
            End::Error(s) => Cow::Owned(s.as_str().to_string()),
            End::ClientClosed => Cow::Borrowed("client_closed"),
        };
        let took = self.started.elapsed();
        let first_text = match end {
            End::Complete(..) => Some(took),
            _ => self.first_text.map(|t| t - self.started),
        };
        metrics.request_done(
            self.route,
            &self.model,
            &self.rule,
            &status,
            took,
            first_text,
        );
        if let Some(row) = self.log.take() {
            row.finish(&super::recorder::Outcome {
                status: &status,
                route: self.route,
                model: &self.model,
                usage: billed.map(|(u, _)| u),
                usage_estimated: billed.is_some_and(|(_, e)| e),
                cost_usd: bill.cost_usd,
            });
        }
        bill
    }
}

/// Why a call was not admitted.
#[derive(Debug)]
pub enum Refusal {
    /// A rate limit refused the request (429 `rate_limit_exceeded`).
    RateLimited(ApiError),
    /// A budget cannot take the call's reservation.
    Budget(Exhausted),
    /// The state store did not answer in time and the policy rejects such cloud calls.
    Unavailable(StoreError),
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.finish(End::ClientClosed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::Metrics;
    use crate::policy::Policy;
    use futures_util::FutureExt;

    /// A cloud model at $1 per input and $2 per output token, a $1000 daily budget and 60
    /// requests a minute for everyone.
    fn ledger() -> Arc<Ledger> {
        let yaml = "version: 1\nmodels:\n  cloud: { kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: k, price: { input_per_million: 1000000, output_per_million: 2000000, web_search_per_thousand: 10000 } }\nbudgets:\n  global: { daily_usd: 1000 }\n  on_exhausted: reject\nrate_limits:\n  default: { requests_per_minute: 60 }\ndefault: { route: cloud }\n";
        let policy: Policy = crate::policy::parse(yaml, "t.yaml", &|_| None).unwrap();
        Arc::new(Ledger::new(Arc::new(policy), Metrics::new(), None).unwrap())
    }

    /// The day budget's remaining USD (the memory store answers at once).
    fn day_left(l: &Ledger) -> f64 {
        let store = l.state.as_ref().unwrap();
        let left = store.remaining().now_or_never().unwrap().unwrap();
        left.into_iter()
            .find(|r| r.period.label() == "day")
            .unwrap()
            .usd
    }

    fn sample(l: &Ledger, name: &str) -> Option<f64> {
        l.metrics.render().lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
        })
    }

    /// A request for the cloud with 8 prompt tokens and `max_tokens: 20`, in flight.
    fn in_flight(l: &Arc<Ledger>) -> Settlement {
        in_flight_searching(l, 0)
    }

    /// [`in_flight`], admitted for `web_searches` searches.
    fn in_flight_searching(l: &Arc<Ledger>, web_searches: u64) -> Settlement {
        let mut s = l.open(Instant::now());
        s.arrived(None, 8);
        s.decided("default");
        s.target("cloud", "cloud");
        s.admit_call(&l.policy.models["cloud"], Some(20), web_searches)
            .now_or_never()
            .expect("the memory store answers at once")
            .unwrap();
        s.call_started();
        s
    }

    const OK: &str =
        r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="200"}"#;
    const GONE: &str = r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="client_closed"}"#;

    #[test]
    fn a_call_that_asks_for_a_web_search_reserves_one() {
        let l = ledger();
        let mut s = in_flight_searching(&l, 1);
        assert_eq!(
            day_left(&l),
            1000.0 - 48.0 - 10.0,
            "8 + 20 x 2 and a $10 search"
        );
        s.answering(Duration::ZERO);
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            web_searches: 2,
            ..Usage::default()
        };
        assert_eq!(s.finish(End::Complete(usage, false)).cost_usd, 16.0 + 20.0);
        assert_eq!(day_left(&l), 1000.0 - 36.0);
    }

    #[test]
    fn a_request_is_settled_once_however_often_it_is_finished() {
        let l = ledger();
        let mut s = in_flight(&l);
        assert_eq!(day_left(&l), 1000.0 - 48.0, "8 + 20 x 2 reserved");
        s.answering(Duration::ZERO);
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            cached_prompt_tokens: 0,
            cache_write_prompt_tokens: 0,
            web_searches: 0,
        };
        let bill = s.finish(End::Complete(usage, false));
        assert_eq!(bill.cost_usd, 16.0);
        assert_eq!(s.finish(End::StreamDone), Bill::default());
        drop(s);
        assert_eq!(day_left(&l), 1000.0 - 16.0);
        assert_eq!(sample(&l, OK), Some(1.0));
        assert_eq!(sample(&l, GONE), None);
        let input = r#"switchyard_tokens_total{direction="input",model="cloud"}"#;
        assert_eq!(sample(&l, input), Some(10.0));
    }

    #[test]
    fn a_request_dropped_mid_call_settles_its_prompt_only() {
        let l = ledger();
        drop(in_flight(&l));
        assert_eq!(day_left(&l), 1000.0 - 8.0);
        assert_eq!(sample(&l, GONE), Some(1.0));
        let cost = r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#;
        assert_eq!(sample(&l, cost), Some(8.0));
    }

    #[test]
    fn a_failed_call_gives_its_reservation_back_and_is_not_billed() {
        let l = ledger();
        let mut s = in_flight(&l);
        s.call_failed("status_5xx", Duration::ZERO, None);
        s.finish(End::Error(StatusCode::BAD_GATEWAY));
        assert_eq!(day_left(&l), 1000.0);
        let failed =
            r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="502"}"#;
        assert_eq!(sample(&l, failed), Some(1.0));
        let errors = r#"switchyard_upstream_errors_total{kind="status_5xx",model="cloud"}"#;
        assert_eq!(sample(&l, errors), Some(1.0));
        assert_eq!(
            sample(
                &l,
                r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#
            ),
            None
        );
    }

    #[test]
    fn a_call_that_failed_after_its_head_is_billed_beside_the_answer() {
        let l = ledger();
        let mut s = in_flight(&l);
        let prompt = Usage {
            prompt_tokens: 8,
            ..Usage::default()
        };
        s.call_failed("transport", Duration::ZERO, Some(prompt));
        // The fallback (the same model again here) answers with 10 + 3 tokens ($16).
        s.call_started();
        s.answering(Duration::ZERO);
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            ..Usage::default()
        };
        let bill = s.finish(End::Complete(usage, false));
        assert_eq!(bill.cost_usd, 16.0 + 8.0);
        assert_eq!(day_left(&l), 1000.0 - 24.0);
        let cost = r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#;
        assert_eq!(sample(&l, cost), Some(24.0));
        let input = r#"switchyard_tokens_total{direction="input",model="cloud"}"#;
        assert_eq!(sample(&l, input), Some(18.0));
    }

    /// A call billed after its head, then a second cloud call the budget refuses: the first
    /// call's cost still lands in the budget.
    #[test]
    fn a_billed_failure_counts_when_the_next_reservation_is_refused() {
        let l = ledger();
        let mut s = in_flight(&l);
        let prompt = Usage {
            prompt_tokens: 8,
            ..Usage::default()
        };
        s.call_failed("transport", Duration::ZERO, Some(prompt));
        // The next call asks for more than the budget has.
        let refused = s
            .admit_call(&l.policy.models["cloud"], Some(1_000_000), 0)
            .now_or_never()
            .expect("the memory store answers at once");
        assert!(matches!(refused, Err(Refusal::Budget(_))), "{refused:?}");
        s.finish(End::Error(StatusCode::TOO_MANY_REQUESTS));
        assert_eq!(day_left(&l), 1000.0 - 8.0);
    }

    #[test]
    fn a_stream_bills_its_reported_usage_or_else_the_text_it_sent() {
        let l = ledger();
        let mut s = in_flight(&l);
        s.answering(Duration::ZERO);
        s.on_chunk(40, None);
        drop(s);
        // 8 prompt tokens ($8) and 40 bytes of text, about 10 tokens ($20).
        assert_eq!(day_left(&l), 1000.0 - 28.0);
        let mut s = in_flight(&l);
        s.answering(Duration::ZERO);
        s.on_chunk(40, None);
        let usage = Usage {
            prompt_tokens: 9,
            completion_tokens: 12,
            cached_prompt_tokens: 0,
            cache_write_prompt_tokens: 0,
            web_searches: 0,
        };
        s.on_chunk(0, Some(usage.into()));
        s.finish(End::StreamDone);
        assert_eq!(day_left(&l), 1000.0 - 28.0 - 33.0);
        assert_eq!(sample(&l, OK), Some(1.0));
    }
}
