//! Token counts an upstream leaves out, sends as `null` or as floats never fail a finished
//! answer: what is missing is estimated, counted in `switchyard_usage_estimated_total`, and the
//! answer reaches the client as the upstream sent it.

mod common;

use common::*;
use serde_json::json;

/// `cloud` only, at $1 per input and $2 per output token.
fn cloud(base: &str) -> String {
    PolicyBuilder::standard(base)
        .default_route("cloud", &[])
        .render()
}

const ESTIMATED: &str = r#"switchyard_usage_estimated_total{model="cloud"}"#;
const COST: &str = r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#;

#[tokio::test]
async fn odd_counts_in_a_json_answer_are_estimated_not_failed() {
    let up = FakeUpstream::start().await;
    // "hi" is estimated at 8 prompt tokens; "Hello from the cloud" (20 bytes) at 5 answer tokens.
    for (behaviour, cost, estimated) in [
        ("usage-float", 21.0 + 2.0 * 4.0, false),
        ("usage-nocompletion", 21.0 + 2.0 * 5.0, true),
        ("usage-nullprompt", 8.0 + 2.0 * 4.0, true),
        ("usage-text", 8.0 + 2.0 * 5.0, true),
        ("nousage", 8.0 + 2.0 * 5.0, true),
    ] {
        let gw = start_gateway(&cloud(&up.base(behaviour)), KEY).await;
        let r = chat(&gw, ask("auto", "hi"), &[]).await;
        assert_eq!(
            r.status,
            200,
            "{behaviour}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            "Hello from the cloud"
        );
        let header: f64 = r.header("x-switchyard-cost-usd").parse().expect("cost");
        assert_eq!(header, cost, "{behaviour}");
        assert_eq!(metric(&gw, COST).await, cost, "{behaviour}");
        if estimated {
            assert_eq!(metric(&gw, ESTIMATED).await, 1.0, "{behaviour}");
        } else {
            assert_metric_absent(&gw, ESTIMATED).await;
        }
    }
}

#[tokio::test]
async fn a_stream_whose_usage_chunk_has_a_null_count_ends_well() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&cloud(&up.base("usage-nullprompt")), KEY).await;
    let mut body = ask("auto", "hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = chat(&gw, body, &[]).await;
    assert_eq!(r.status, 200);
    let events = r.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("\"error\"")),
        "{events:?}"
    );
    // The prompt is estimated (8 tokens), the answer's 4 tokens are the upstream's.
    let done =
        r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="200"}"#;
    assert_eq!(metric(&gw, done).await, 1.0);
    assert_eq!(metric(&gw, COST).await, 8.0 + 2.0 * 4.0);
    assert_eq!(metric(&gw, ESTIMATED).await, 1.0);
}

/// Input tokens a provider's prompt cache served are priced at `cached_input_per_million`: in
/// the cost header, the cost and savings metrics, the budget, for JSON answers and streams.
#[tokio::test]
async fn cached_input_tokens_are_priced_as_cached() {
    let up = FakeUpstream::start().await;
    // $1 per input token, $0.10 per cached one, $2 per output token; the reference model costs
    // twice as much.
    let price = "{ input_per_million: 1000000, cached_input_per_million: 100000, output_per_million: 2000000 }";
    let reference = "{ input_per_million: 2000000, cached_input_per_million: 200000, output_per_million: 4000000 }";
    let policy = PolicyBuilder::standard(&up.base("usage-cached"))
        .model_field("cloud", "price", price)
        .cloud("reference", &up.base("ok"))
        .model_field("reference", "price", reference)
        .reference_model("reference")
        .global_budget("{ daily_usd: 10000 }")
        .default_route("cloud", &[])
        .render();
    let gw = start_gateway(&policy, KEY).await;
    // 100 uncached ($100) + 900 cached ($90) + 10 output ($20).
    let cost = 210.0;
    let r = chat(&gw, ask("auto", "hi"), &[]).await;
    assert_eq!(r.status, 200);
    let header: f64 = r.header("x-switchyard-cost-usd").parse().expect("cost");
    assert_eq!(header, cost);
    let mut body = ask("auto", "hi");
    body["stream"] = json!(true);
    let r = chat(&gw, body, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(metric(&gw, COST).await, 2.0 * cost);
    let cached = r#"switchyard_tokens_total{direction="cached_input",model="cloud"}"#;
    assert_eq!(metric(&gw, cached).await, 1800.0);
    let input = r#"switchyard_tokens_total{direction="input",model="cloud"}"#;
    assert_eq!(metric(&gw, input).await, 2000.0);
    let saved = r#"switchyard_savings_usd_total{tenant="anonymous"}"#;
    assert_eq!(metric(&gw, saved).await, 2.0 * cost);
    let left = r#"switchyard_budget_remaining_usd{period="day",tenant="*"}"#;
    assert_eq!(metric(&gw, left).await, 10000.0 - 2.0 * cost);
    assert_metric_absent(&gw, ESTIMATED).await;
}
