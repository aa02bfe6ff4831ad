//! The Prometheus registry of the gateway (names and labels: docs/metrics.md). Every labelled
//! sample is written here, through a verb that names what happened (a request done, an upstream
//! error, a fallback, ...), so the order of each metric's labels lives in this file only.

use super::Bill;
use crate::api::Usage;
use prometheus::core::{AtomicF64, GenericCounterVec};
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Duration;

/// A float counter with labels.
pub type CounterVec = GenericCounterVec<AtomicF64>;

/// Every metric the gateway exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    savings: CounterVec,
    overspend: CounterVec,
    request_duration: HistogramVec,
    ttft: HistogramVec,
    upstream_errors: IntCounterVec,
    fallbacks: IntCounterVec,
    gateway_overhead: Histogram,
    model_available: IntGaugeVec,
    local: LocalMetrics,
    classifier: ClassifierMetrics,
    /// `switchyard_budget_remaining_usd{tenant,period}` (`tenant="*"`: the whole gateway).
    budget_remaining: prometheus::GaugeVec,
    /// `switchyard_budget_limit_usd{tenant,period}`: each budget's limit.
    budget_limit: prometheus::GaugeVec,
    /// `switchyard_budget_exhausted_total{tenant}`: cloud requests a used-up budget refused.
    budget_exhausted: IntCounterVec,
    /// `switchyard_policy_reloads_total{result}`: policy reloads, `success` or `error`.
    policy_reloads: IntCounterVec,
    /// `switchyard_upstream_retries_total{model,reason}`: cloud calls sent again after a failure.
    upstream_retries: IntCounterVec,
    /// `switchyard_circuit_state{model}`: 0 closed, 1 half-open, 2 open.
    circuit_state: IntGaugeVec,
    /// `switchyard_rate_limited_total{tenant,limit}`: requests refused by a rate limit.
    rate_limited: IntCounterVec,
    /// `switchyard_open_connections`: client connections open now.
    open_connections: prometheus::IntGauge,
    /// `switchyard_rejected_connections_total`: connections over `limits.max_connections`.
    rejected_connections: prometheus::IntCounter,
    /// `switchyard_client_timeouts_total{phase}`: clients too slow to send headers or body.
    client_timeouts: IntCounterVec,
    /// `switchyard_usage_estimated_total{model}`: requests settled with estimated token counts.
    usage_estimated: IntCounterVec,
    /// `switchyard_web_searches_total{model}`: web searches a provider ran and bills per search.
    web_searches: IntCounterVec,
    /// `switchyard_state_unavailable_total{operation,action}`: state-store calls not answered in
    /// time, and what the gateway did instead.
    state_unavailable: IntCounterVec,
    /// `switchyard_state_up{backend}`: whether the state store answered its last call.
    state_up: IntGaugeVec,
    /// `switchyard_pii_detections_total{kind}`: private-data matches found in requests.
    pii_detections: IntCounterVec,
    /// `switchyard_pii_redactions_total{kind}`: values replaced before a cloud call.
    pii_redactions: IntCounterVec,
    /// `switchyard_sticky_total{outcome}`: sticky-conversation lookups by outcome.
    sticky: IntCounterVec,
}

/// Metrics of the request classifier.
#[derive(Clone)]
struct ClassifierMetrics {
    /// `switchyard_classifier_duration_seconds`: time a request waited for its classification
    /// (batching included).
    duration: Histogram,
    /// `switchyard_classifier_strong_score`: the strong scores given.
    strong_score: Histogram,
    /// `switchyard_classifier_truncated_total`: inputs longer than the token budget.
    truncated: prometheus::IntCounter,
    /// `switchyard_classifier_errors_total`: classifications that failed (the request is routed
    /// as if no classifier condition matched).
    errors: prometheus::IntCounter,
}

/// Metrics of the on-box engines (handed to each engine).
#[derive(Clone)]
pub struct LocalMetrics {
    /// `switchyard_local_queue_depth{model}`: requests waiting for a decode worker.
    queue_depth: IntGaugeVec,
    /// `switchyard_local_tokens_per_second{model,phase}`: prefill and decode speed per generation.
    tokens_per_second: HistogramVec,
    /// `switchyard_local_generation_seconds{model}`: time a worker spent on a generation.
    generation_seconds: HistogramVec,
    /// `switchyard_local_generations_total{model,finish}`: generations by how they ended
    /// (stop, length, cancelled by a client that went away, error).
    generations: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails for invalid or duplicate names, which are constants here.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    /// Creates the registry with all metrics.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let latency = exponential_buckets(0.005, 2.0, 14).unwrap_or_default();
        let overhead = exponential_buckets(0.000_01, 2.0, 16).unwrap_or_default();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "switchyard_requests_total",
                "Chat requests answered, by route, model, deciding rule and HTTP status.",
            ),
            &["route", "model", "rule", "status"],
        ));
        let tokens = must(IntCounterVec::new(
            Opts::new(
                "switchyard_tokens_total",
                "Tokens processed, by model and direction (input, output, cached_input: the part of input served from the provider's prompt cache, and cache_write_input: the part written to it).",
            ),
            &["model", "direction"],
        ));
        let cost = must(CounterVec::new(
            Opts::new(
                "switchyard_cost_usd_total",
                "Estimated spend in USD at the policy's prices, by model and tenant.",
            ),
            &["model", "tenant"],
        ));
        let savings = must(CounterVec::new(
            Opts::new(
                "switchyard_savings_usd_total",
                "USD saved: what the same tokens would have cost on the reference model, minus what they cost.",
            ),
            &["tenant"],
        ));
        let overspend = must(CounterVec::new(
            Opts::new(
                "switchyard_overspend_usd_total",
                "USD spent above the reference model's price, for requests served by a pricier model.",
            ),
            &["tenant"],
        ));
        let request_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "switchyard_request_duration_seconds",
                "Time from request to the end of the response.",
            )
            .buckets(latency.clone()),
            &["route"],
        ));
        let ttft = must(HistogramVec::new(
            HistogramOpts::new(
                "switchyard_time_to_first_token_seconds",
                "Time from request to the first generated text (the whole answer when not streaming).",
            )
            .buckets(latency.clone()),
            &["route"],
        ));
        let upstream_errors = must(IntCounterVec::new(
            Opts::new(
                "switchyard_upstream_errors_total",
                "Failures of a model's engine, by model and kind.",
            ),
            &["model", "kind"],
        ));
        let fallbacks = must(IntCounterVec::new(
            Opts::new(
                "switchyard_fallbacks_total",
                "Requests moved from a failed or unavailable model to the next.",
            ),
            &["from", "to"],
        ));
        let gateway_overhead = must(Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_gateway_overhead_seconds",
                "Time spent inside the gateway per request, excluding upstream and model time.",
            )
            .buckets(overhead),
        ));
        let model_available = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_model_available",
                "1 when a model can take requests, 0 when it is disabled.",
            ),
            &["model"],
        ));
        let local = LocalMetrics {
            queue_depth: must(IntGaugeVec::new(
                Opts::new(
                    "switchyard_local_queue_depth",
                    "Requests waiting for a decode worker of an on-box model.",
                ),
                &["model"],
            )),
            tokens_per_second: must(HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_local_tokens_per_second",
                    "Speed of each on-box generation: prompt tokens/s (prefill) and generated tokens/s (decode).",
                )
                .buckets(exponential_buckets(1.0, 2.0, 14).unwrap_or_default()),
                &["model", "phase"],
            )),
            generation_seconds: must(HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_local_generation_seconds",
                    "Time a decode worker spent on one generation (prefill and decode).",
                )
                .buckets(latency.clone()),
                &["model"],
            )),
            generations: must(IntCounterVec::new(
                Opts::new(
                    "switchyard_local_generations_total",
                    "On-box generations by how they ended: stop, length, cancelled (client gone) or error.",
                ),
                &["model", "finish"],
            )),
        };
        let classifier = ClassifierMetrics {
            duration: must(Histogram::with_opts(
                HistogramOpts::new(
                    "switchyard_classifier_duration_seconds",
                    "Time a request waited for the request classifier, batching included.",
                )
                .buckets(exponential_buckets(0.000_5, 2.0, 12).unwrap_or_default()),
            )),
            strong_score: must(Histogram::with_opts(
                HistogramOpts::new(
                    "switchyard_classifier_strong_score",
                    "Strong scores given by the request classifier (how likely a small model's answer is worse).",
                )
                .buckets(prometheus::linear_buckets(0.1, 0.1, 9).unwrap_or_default()),
            )),
            truncated: must(prometheus::IntCounter::new(
                "switchyard_classifier_truncated_total",
                "Classifier inputs longer than its token budget (head and tail kept).",
            )),
            errors: must(prometheus::IntCounter::new(
                "switchyard_classifier_errors_total",
                "Classifications that failed; those requests match no classifier condition.",
            )),
        };
        let budget_remaining = must(prometheus::GaugeVec::new(
            Opts::new(
                "switchyard_budget_remaining_usd",
                "USD left in each budget of the policy (tenant \"*\": the whole gateway), minus reservations in flight.",
            ),
            &["tenant", "period"],
        ));
        let budget_limit = must(prometheus::GaugeVec::new(
            Opts::new(
                "switchyard_budget_limit_usd",
                "Each budget's limit in USD (tenant \"*\": the whole gateway), beside switchyard_budget_remaining_usd.",
            ),
            &["tenant", "period"],
        ));
        let budget_exhausted = must(IntCounterVec::new(
            Opts::new(
                "switchyard_budget_exhausted_total",
                "Cloud requests a used-up budget refused (rejected or sent to the box), by the budget's tenant.",
            ),
            &["tenant"],
        ));
        let policy_reloads = must(IntCounterVec::new(
            Opts::new(
                "switchyard_policy_reloads_total",
                "Policy reloads (file change or SIGHUP): success, or error (the previous policy kept serving).",
            ),
            &["result"],
        ));
        let upstream_retries = must(IntCounterVec::new(
            Opts::new(
                "switchyard_upstream_retries_total",
                "Cloud calls sent again after a failure before the first byte, by model and the failure's kind.",
            ),
            &["model", "reason"],
        ));
        let circuit_state = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_circuit_state",
                "State of each cloud model's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ),
            &["model"],
        ));
        let rate_limited = must(IntCounterVec::new(
            Opts::new(
                "switchyard_rate_limited_total",
                "Requests refused by a tenant's rate limit, by tenant and limit (requests or tokens).",
            ),
            &["tenant", "limit"],
        ));
        let open_connections = must(prometheus::IntGauge::new(
            "switchyard_open_connections",
            "Client connections open now.",
        ));
        let rejected_connections = must(prometheus::IntCounter::new(
            "switchyard_rejected_connections_total",
            "Client connections answered 503 and closed because limits.max_connections were open.",
        ));
        let client_timeouts = must(IntCounterVec::new(
            Opts::new(
                "switchyard_client_timeouts_total",
                "Requests whose client took too long to send them, by phase (body).",
            ),
            &["phase"],
        ));
        let web_searches = must(IntCounterVec::new(
            Opts::new(
                "switchyard_web_searches_total",
                "Web searches the provider ran for answers and bills per search (Anthropic's web search tool), by model.",
            ),
            &["model"],
        ));
        let usage_estimated = must(IntCounterVec::new(
            Opts::new(
                "switchyard_usage_estimated_total",
                "Requests settled with estimated token counts, in whole or in part, because the model reported none or reported them unreadably.",
            ),
            &["model"],
        ));
        let state_unavailable = must(IntCounterVec::new(
            Opts::new(
                "switchyard_state_unavailable_total",
                "Calls to the budget and rate-limit store that were not answered within state.timeout_ms, by operation (admit, settle, read) and what the gateway did instead (reject, allow, retry, drop, skip).",
            ),
            &["operation", "action"],
        ));
        let state_up = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_state_up",
                "1 when the budget and rate-limit store (backend memory or redis) answered its last call in time, else 0.",
            ),
            &["backend"],
        ));
        let pii_detections = must(IntCounterVec::new(
            Opts::new(
                "switchyard_pii_detections_total",
                "Private data found in requests, by kind (email, phone, credit_card, iban, national_id, ip_address, secret); one per match, never the value.",
            ),
            &["kind"],
        ));
        let pii_redactions = must(IntCounterVec::new(
            Opts::new(
                "switchyard_pii_redactions_total",
                "Private values replaced by a placeholder before a request went to a cloud model, by kind.",
            ),
            &["kind"],
        ));
        let sticky = must(IntCounterVec::new(
            Opts::new(
                "switchyard_sticky_total",
                "Sticky-conversation lookups of auto requests, by outcome: hit (the pin decided), new (no pin yet), overridden (a higher non-sticky or private-data rule or a missing capability moved the turn), unavailable (the state store did not answer).",
            ),
            &["outcome"],
        ));
        // What this process runs: its version and the CPU kernels it chose at start-up.
        let build_info = must(IntGaugeVec::new(
            Opts::new(
                "switchyard_build_info",
                "Always 1: the version, the CPU kernel tier (avx512, avx2, scalar) of the encoder and the on-box block kernel (avx512vnni, avxvnni, avx2, candle).",
            ),
            &["version", "kernels", "block_kernel"],
        ));
        let path = crate::cpu::chosen();
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                path.as_str(),
                crate::local::block_kernel_name(path),
            ])
            .set(1);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(build_info),
            Box::new(usage_estimated.clone()),
            Box::new(web_searches.clone()),
            Box::new(state_unavailable.clone()),
            Box::new(state_up.clone()),
            Box::new(pii_detections.clone()),
            Box::new(pii_redactions.clone()),
            Box::new(sticky.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(circuit_state.clone()),
            Box::new(rate_limited.clone()),
            Box::new(open_connections.clone()),
            Box::new(rejected_connections.clone()),
            Box::new(client_timeouts.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(budget_remaining.clone()),
            Box::new(budget_limit.clone()),
            Box::new(budget_exhausted.clone()),
            Box::new(classifier.duration.clone()),
            Box::new(classifier.strong_score.clone()),
            Box::new(classifier.truncated.clone()),
            Box::new(classifier.errors.clone()),
            Box::new(local.queue_depth.clone()),
            Box::new(local.tokens_per_second.clone()),
            Box::new(local.generation_seconds.clone()),
            Box::new(local.generations.clone()),
            Box::new(tokens.clone()),
            Box::new(cost.clone()),
            Box::new(savings.clone()),
            Box::new(overspend.clone()),
            Box::new(request_duration.clone()),
            Box::new(ttft.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(fallbacks.clone()),
            Box::new(gateway_overhead.clone()),
            Box::new(model_available.clone()),
        ] {
            must(registry.register(c));
        }
        Metrics {
            registry,
            requests,
            tokens,
            cost,
            savings,
            overspend,
            request_duration,
            ttft,
            upstream_errors,
            fallbacks,
            gateway_overhead,
            model_available,
            local,
            classifier,
            budget_remaining,
            budget_limit,
            budget_exhausted,
            policy_reloads,
            upstream_retries,
            circuit_state,
            rate_limited,
            open_connections,
            rejected_connections,
            client_timeouts,
            usage_estimated,
            web_searches,
            state_unavailable,
            state_up,
            pii_detections,
            pii_redactions,
            sticky,
        }
    }

    /// A request of `model` was settled with estimated token counts.
    pub fn usage_estimated(&self, model: &str) {
        self.usage_estimated.with_label_values(&[model]).inc();
    }

    /// A request has ended: `switchyard_requests_total{route,model,rule,status}`,
    /// `switchyard_request_duration_seconds{route}` (`took`, request to the end of the response)
    /// and, when text came, `switchyard_time_to_first_token_seconds{route}`.
    pub fn request_done(
        &self,
        route: &str,
        model: &str,
        rule: &str,
        status: &str,
        took: Duration,
        first_text: Option<Duration>,
    ) {
        self.requests
            .with_label_values(&[route, model, rule, status])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
        if let Some(t) = first_text {
            self.ttft
                .with_label_values(&[route])
                .observe(t.as_secs_f64());
        }
    }

    /// A request's tokens and their price: `switchyard_tokens_total{model,direction}`,
    /// `switchyard_web_searches_total{model}`,
    /// `switchyard_cost_usd_total{model,tenant}`, and the savings against the reference model in
    /// `switchyard_savings_usd_total{tenant}` (or, when negative, `switchyard_overspend_usd_total`).
    pub fn billed(&self, model: &str, tenant: &str, usage: Usage, bill: Bill) {
        self.tokens
            .with_label_values(&[model, "input"])
            .inc_by(usage.prompt_tokens);
        self.tokens
            .with_label_values(&[model, "output"])
            .inc_by(usage.completion_tokens);
        if usage.cached_prompt_tokens > 0 {
            self.tokens
                .with_label_values(&[model, "cached_input"])
                .inc_by(usage.cached_prompt_tokens);
        }
        if usage.cache_write_prompt_tokens > 0 {
            self.tokens
                .with_label_values(&[model, "cache_write_input"])
                .inc_by(usage.cache_write_prompt_tokens);
        }
        if usage.web_searches > 0 {
            self.web_searches
                .with_label_values(&[model])
                .inc_by(usage.web_searches);
        }
        self.cost
            .with_label_values(&[model, tenant])
            .inc_by(bill.cost_usd);
        if bill.savings_usd >= 0.0 {
            self.savings
                .with_label_values(&[tenant])
                .inc_by(bill.savings_usd);
        } else {
            self.overspend
                .with_label_values(&[tenant])
                .inc_by(-bill.savings_usd);
        }
    }

    /// Time a request spent inside the gateway, upstream and model time excluded.
    pub fn gateway_overhead(&self, took: Duration) {
        self.gateway_overhead.observe(took.as_secs_f64());
    }

    /// A model's engine failed: `switchyard_upstream_errors_total{model,kind}`.
    pub fn upstream_error(&self, model: &str, kind: &str) {
        self.upstream_errors.with_label_values(&[model, kind]).inc();
    }

    /// A request moved on from a failed or unavailable model: `switchyard_fallbacks_total{from,to}`.
    pub fn fallback(&self, from: &str, to: &str) {
        self.fallbacks.with_label_values(&[from, to]).inc();
    }

    /// A model's state: `switchyard_model_available{model}`, and its circuit breaker's state
    /// (0 closed, 1 half-open, 2 open) in `switchyard_circuit_state{model}` when it has one.
    pub fn model_state(&self, model: &str, available: bool, circuit: Option<i64>) {
        self.model_available
            .with_label_values(&[model])
            .set(i64::from(available));
        if let Some(c) = circuit {
            self.circuit_state.with_label_values(&[model]).set(c);
        }
    }

    /// USD left in a budget: `switchyard_budget_remaining_usd{tenant,period}`.
    pub fn budget_remaining(&self, tenant: &str, period: &str, usd: f64) {
        self.budget_remaining
            .with_label_values(&[tenant, period])
            .set(usd);
    }

    /// A state-store call not answered in time, and what the gateway did instead:
    /// `switchyard_state_unavailable_total{operation,action}`.
    pub fn state_unavailable(&self, operation: &str, action: &str) {
        self.state_unavailable
            .with_label_values(&[operation, action])
            .inc();
    }

    /// Whether the state store answered its last call: `switchyard_state_up{backend}`.
    pub fn state_up(&self, backend: &str, up: bool) {
        self.state_up
            .with_label_values(&[backend])
            .set(i64::from(up));
    }

    /// A budget's limit: `switchyard_budget_limit_usd{tenant,period}`.
    pub fn budget_limit(&self, tenant: &str, period: &str, usd: f64) {
        self.budget_limit
            .with_label_values(&[tenant, period])
            .set(usd);
    }

    /// A used-up budget refused a cloud call: `switchyard_budget_exhausted_total{tenant}`.
    pub fn budget_exhausted(&self, tenant: &str) {
        self.budget_exhausted.with_label_values(&[tenant]).inc();
    }

    /// A policy reload: `switchyard_policy_reloads_total{result}`, `success` or `error`.
    pub fn policy_reload(&self, succeeded: bool) {
        let result = if succeeded { "success" } else { "error" };
        self.policy_reloads.with_label_values(&[result]).inc();
    }

    /// The retry counter of one cloud model (handed to its engine).
    pub fn retry_counter(&self, model: &str) -> RetryCounter {
        RetryCounter {
            retries: self.upstream_retries.clone(),
            model: model.to_string(),
        }
    }

    /// A rate limit refused a request: `switchyard_rate_limited_total{tenant,limit}`.
    pub fn rate_limited(&self, tenant: &str, limit: &str) {
        self.rate_limited.with_label_values(&[tenant, limit]).inc();
    }

    /// `switchyard_open_connections`, kept by the listener.
    pub fn open_connections(&self) -> prometheus::IntGauge {
        self.open_connections.clone()
    }

    /// A connection over `limits.max_connections` was refused.
    pub fn connection_rejected(&self) {
        self.rejected_connections.inc();
    }

    /// A client was too slow to send its request: `switchyard_client_timeouts_total{phase}`.
    pub fn client_timeout(&self, phase: &str) {
        self.client_timeouts.with_label_values(&[phase]).inc();
    }

    /// A request was classified after waiting `waited` (batching included).
    pub fn classified(&self, waited: Duration, strong_score: f64, truncated: bool) {
        let c = &self.classifier;
        c.duration.observe(waited.as_secs_f64());
        c.strong_score.observe(strong_score);
        if truncated {
            c.truncated.inc();
        }
    }

    /// Private data found in a request: matches per kind.
    pub fn pii_detected(&self, counts: &[(crate::pii::Kind, u64)]) {
        for (k, n) in counts {
            self.pii_detections
                .with_label_values(&[k.name()])
                .inc_by(*n);
        }
    }

    /// Private values replaced before a cloud call, per kind.
    pub fn pii_redacted(&self, counts: &[(crate::pii::Kind, u64)]) {
        for (k, n) in counts {
            self.pii_redactions
                .with_label_values(&[k.name()])
                .inc_by(*n);
        }
    }

    /// A sticky-conversation lookup: `hit`, `new`, `overridden` or `unavailable`.
    pub fn sticky(&self, outcome: &str) {
        self.sticky.with_label_values(&[outcome]).inc();
    }

    /// A classification failed (the request is routed as if no classifier condition matched).
    pub fn classifier_failed(&self) {
        self.classifier.errors.inc();
    }

    /// The metrics of the on-box engines.
    pub fn local(&self) -> &LocalMetrics {
        &self.local
    }

    /// The Prometheus text exposition of all metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl LocalMetrics {
    /// Requests of on-box model `model` waiting for a decode worker now.
    pub fn queue_depth(&self, model: &str, waiting: usize) {
        self.queue_depth
            .with_label_values(&[model])
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// A generation of `model` ended after `took` on a decode worker, by `finish` (`stop`,
    /// `length`, `cancelled` or `error`).
    pub fn generation_done(&self, model: &str, took: Duration, finish: &str) {
        self.generation_seconds
            .with_label_values(&[model])
            .observe(took.as_secs_f64());
        self.generations.with_label_values(&[model, finish]).inc();
    }

    /// Speed of one generation's `phase` (`prefill` or `decode`), in tokens per second.
    pub fn speed(&self, model: &str, phase: &str, tokens_per_second: f64) {
        self.tokens_per_second
            .with_label_values(&[model, phase])
            .observe(tokens_per_second);
    }
}

/// `switchyard_upstream_retries_total` of one cloud model, for its engine.
#[derive(Clone)]
pub struct RetryCounter {
    retries: IntCounterVec,
    model: String,
}

impl RetryCounter {
    /// The model's call is sent again after a failure of `reason` (its kind).
    pub fn retried(&self, reason: &str) {
        self.retries.with_label_values(&[&self.model, reason]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
