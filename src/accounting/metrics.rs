//! The Prometheus registry of the gateway (names and labels: docs/metrics.md).

use prometheus::core::{AtomicF64, GenericCounterVec};
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A float counter with labels.
pub type CounterVec = GenericCounterVec<AtomicF64>;

/// Every metric the gateway exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub tokens: IntCounterVec,
    pub cost: CounterVec,
    pub savings: CounterVec,
    pub overspend: CounterVec,
    pub request_duration: HistogramVec,
    pub ttft: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub gateway_overhead: Histogram,
    pub model_available: IntGaugeVec,
    pub local: LocalMetrics,
    pub classifier: ClassifierMetrics,
    /// `switchyard_budget_remaining_usd{tenant,period}` (`tenant="*"`: the whole gateway).
    pub budget_remaining: prometheus::GaugeVec,
    /// `switchyard_budget_exhausted_total{tenant}`: cloud requests a used-up budget refused.
    pub budget_exhausted: IntCounterVec,
    /// `switchyard_policy_reloads_total{result}`: policy reloads, `success` or `error`.
    pub policy_reloads: IntCounterVec,
    /// `switchyard_upstream_retries_total{model,reason}`: cloud calls sent again after a failure.
    pub upstream_retries: IntCounterVec,
    /// `switchyard_circuit_state{model}`: 0 closed, 1 half-open, 2 open.
    pub circuit_state: IntGaugeVec,
    /// `switchyard_rate_limited_total{tenant,limit}`: requests refused by a rate limit.
    pub rate_limited: IntCounterVec,
    /// `switchyard_open_connections`: client connections open now.
    pub open_connections: prometheus::IntGauge,
    /// `switchyard_rejected_connections_total`: connections over `limits.max_connections`.
    pub rejected_connections: prometheus::IntCounter,
    /// `switchyard_client_timeouts_total{phase}`: clients too slow to send headers or body.
    pub client_timeouts: IntCounterVec,
}

/// Metrics of the request classifier.
#[derive(Clone)]
pub struct ClassifierMetrics {
    /// `switchyard_classifier_duration_seconds`: time a request waited for its classification
    /// (batching included).
    pub duration: Histogram,
    /// `switchyard_classifier_strong_score`: the strong scores given.
    pub strong_score: Histogram,
    /// `switchyard_classifier_truncated_total`: inputs longer than the token budget.
    pub truncated: prometheus::IntCounter,
    /// `switchyard_classifier_errors_total`: classifications that failed (the request is routed
    /// as if no classifier condition matched).
    pub errors: prometheus::IntCounter,
}

/// Metrics of the on-box engines (handed to each engine).
#[derive(Clone)]
pub struct LocalMetrics {
    /// `switchyard_local_queue_depth{model}`: requests waiting for a decode worker.
    pub queue_depth: IntGaugeVec,
    /// `switchyard_local_tokens_per_second{model,phase}`: prefill and decode speed per generation.
    pub tokens_per_second: HistogramVec,
    /// `switchyard_local_generation_seconds{model}`: time a worker spent on a generation.
    pub generation_seconds: HistogramVec,
    /// `switchyard_local_generations_total{model,finish}`: generations by how they ended
    /// (stop, length, cancelled by a client that went away, error).
    pub generations: IntCounterVec,
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
                "Tokens processed, by model and direction (input or output).",
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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_retries.clone()),
            Box::new(circuit_state.clone()),
            Box::new(rate_limited.clone()),
            Box::new(open_connections.clone()),
            Box::new(rejected_connections.clone()),
            Box::new(client_timeouts.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(budget_remaining.clone()),
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
            budget_exhausted,
            policy_reloads,
            upstream_retries,
            circuit_state,
            rate_limited,
            open_connections,
            rejected_connections,
            client_timeouts,
        }
    }

    /// The Prometheus text exposition of all metrics.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
