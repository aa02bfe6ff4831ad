//! Spending budgets over HTTP: concurrent cloud requests never spend past a budget (their
//! reservations cover their cost), a used-up budget rejects with 429 or answers on the box, and
//! the metrics say how much is left.

mod common;

use common::*;
use serde_json::json;

/// The standard policy, whose default route is the cloud (price: $1 per input token, $2 per
/// output token; the fake upstream reports 21 + 4 tokens, i.e. $29 a request), with a rule
/// `solo` for the tag `solo` that goes to the cloud without a fallback. Budgets are added by
/// each test.
fn budget_policy(base: &str) -> PolicyBuilder {
    PolicyBuilder::standard(base).rule("solo", "{ tags: [solo] }", "cloud", &[])
}

/// A cloud request whose reservation (8 prompt tokens + 20 max tokens: $48) covers its cost ($29).
fn ask_small() -> serde_json::Value {
    json!({"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
}

/// Asserts a refusal by the gateway's day budget, whose message says what was spent and
/// reserved.
fn assert_budget_refusal(r: &Reply, spent_and_reserved: &str) {
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "budget_exceeded");
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("day budget of the gateway") && message.contains(spent_and_reserved),
        "{message}"
    );
    assert!(
        r.header("retry-after")
            .parse::<u64>()
            .is_ok_and(|s| s > 0 && s <= 86_400),
        "{:?}",
        r.headers
    );
}

/// The next reply to come back, waiting at most `TEST_TIMEOUT` for it.
async fn next_reply(
    replies: &mut tokio::sync::mpsc::UnboundedReceiver<Reply>,
    what: &str,
) -> Reply {
    tokio::time::timeout(TEST_TIMEOUT, replies.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} in {TEST_TIMEOUT:?}"))
        .expect("a reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_cannot_overspend_and_the_rest_get_429() {
    let up = FakeUpstream::start().await;
    // The upstream holds each request until the test releases it, so all of them overlap; the
    // cloud's timeouts outlast the test's.
    let policy = budget_policy(&up.base("held"))
        .model_field(
            "cloud",
            "timeouts",
            "{ connect_ms: 2000, first_byte_ms: 60000, total_ms: 60000 }",
        )
        .on_exhausted("reject")
        .global_budget("{ daily_usd: 100 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;
    const N: usize = 12;
    let (tx, mut replies) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..N {
        let (url, tx) = (gw.url.clone(), tx.clone());
        tokio::spawn(async move {
            let r = request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                ask_small().to_string(),
                &[("content-type", "application/json")],
            )
            .await;
            let _ = tx.send(r);
        });
    }
    // Each request reserves $48 of the $100: two are admitted and held at the upstream, and
    // the ten others are refused while those two are in flight.
    for _ in 0..N - 2 {
        assert_budget_refusal(
            &next_reply(&mut replies, "refusal (were more than two admitted?)").await,
            "$0.0000 spent, $96.0000 reserved",
        );
    }
    assert_eq!(up.wait_for_requests(2).await, 2);
    assert!(
        replies.try_recv().is_err(),
        "the admitted requests are still held"
    );
    assert_eq!(
        metric(&gw, r#"switchyard_budget_exhausted_total{tenant="*"}"#).await,
        (N - 2) as f64
    );
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_budget_remaining_usd{period="day",tenant="*"}"#
        )
        .await,
        4.0,
        "$96 is reserved"
    );
    assert_metric_absent(
        &gw,
        r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#,
    )
    .await;

    // Released, both are answered and settle at their real cost.
    up.release_held();
    for _ in 0..2 {
        let r = next_reply(&mut replies, "answer once released").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-switchyard-route"), "cloud");
        assert_eq!(
            r.header("x-switchyard-cost-usd").parse::<f64>().ok(),
            Some(29.0)
        );
    }
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#
        )
        .await,
        58.0
    );
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_budget_remaining_usd{period="day",tenant="*"}"#
        )
        .await,
        42.0
    );
    // $42 left cannot take another $48 reservation.
    let r = chat(&gw, ask_small(), &[]).await;
    assert_budget_refusal(&r, "$58.0000 spent, $0.0000 reserved");
    assert_eq!(
        metric(&gw, r#"switchyard_budget_exhausted_total{tenant="*"}"#).await,
        (N - 1) as f64
    );
    assert_eq!(
        up.recorded().len(),
        2,
        "refused requests never reach the cloud"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_budget_sends_cloud_requests_to_the_box() {
    let up = FakeUpstream::start().await;
    let policy = budget_policy(&up.base("ok"))
        .on_exhausted("local")
        .global_budget("{ daily_usd: 0 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;
    // The default route lists the box as a fallback; the `solo` rule does not.
    for tags in ["", "solo"] {
        let r = chat(&gw, ask_small(), &[("x-switchyard-tags", tags)]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-switchyard-route"), "local");
        assert_eq!(r.header("x-switchyard-model"), "local-echo");
    }
    assert!(up.recorded().is_empty(), "nothing reached the cloud");
    assert_eq!(
        metric(&gw, "switchyard_budget_exhausted_total{tenant=\"*\"}").await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_nothing_can_serve_the_error_names_the_budget() {
    let up = FakeUpstream::start().await;
    // `box` is an on-box model without an engine: unavailable.
    let policy = PolicyBuilder::new()
        .local("box")
        .cloud("cloud", &up.base("ok"))
        .model_field("cloud", "api_key", "sk-x")
        .model_field("cloud", "price", "{ input_per_million: 1 }")
        .global_budget("{ daily_usd: 0 }")
        .default_route("cloud", &[])
        .render();
    let gw = start_gateway(&policy, &[]).await;
    let r = chat(&gw, ask_small(), &[]).await;
    assert_eq!(r.status, 503);
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("cloud: the day budget of the gateway") && message.contains("box: "),
        "{message}"
    );
}

#[tokio::test]
async fn tenants_see_only_their_own_budgets() {
    let up = FakeUpstream::start().await;
    let policy = budget_policy(&up.base("ok"))
        .tenant("team-a", "key-a")
        .tenant("team-b", "key-b")
        .on_exhausted("reject")
        .global_budget("{ daily_usd: 1000 }")
        .tenant_budget("team-a", "{ daily_usd: 100 }")
        .tenant_budget("team-b", "{ monthly_usd: 500 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let r = chat(&gw, ask_small(), &[("authorization", "Bearer key-a")]).await;
    assert_eq!(r.status, 200);
    let url = format!("{}/v1/switchyard/budget", gw.url);
    let a = request("GET", &url, "", &[("authorization", "Bearer key-a")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json(),
        json!({"object": "budget", "tenant": "team-a", "budgets": [{"period": "day", "remaining_usd": 71.0}]})
    );
    let b = request("GET", &url, "", &[("authorization", "Bearer key-b")]).await;
    assert_eq!(
        b.json()["budgets"],
        json!([{"period": "month", "remaining_usd": 500.0}]),
        "team-b sees neither team-a's spend nor the gateway's"
    );
    let anonymous = request("GET", &url, "", &[]).await;
    assert_eq!(anonymous.status, 401);
}

/// LangChain's embeddings client sends token ids, not text: they are reserved at their size
/// (one token each, and no answer tokens, since an embedding writes none), so a request that
/// could spend past the budget is refused before it goes, and one that fits is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_id_embeddings_are_reserved_at_their_size() {
    let up = FakeUpstream::start().await;
    let policy = budget_policy(&up.base("ok"))
        .model_field("cloud", "embeddings", "true")
        .on_exhausted("reject")
        .global_budget("{ daily_usd: 100 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let url = format!("{}/v1/embeddings", gw.url);
    let embed = |ids: u64| {
        let tokens: Vec<u64> = (0..ids).collect();
        let body = json!({"model": "auto", "input": [tokens]});
        request(
            "POST",
            &url,
            body.to_string(),
            &[("content-type", "application/json")],
        )
    };
    // 30 ids: $37 reserved (the ids and one message's framing), $30 spent (the upstream's count).
    let r = embed(30).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["usage"]["prompt_tokens"], 30);
    assert_eq!(
        r.header("x-switchyard-cost-usd").parse::<f64>().ok(),
        Some(30.0)
    );
    // 80 ids would take the day's spend to $110: refused, and nothing goes upstream.
    let r = embed(80).await;
    assert_budget_refusal(&r, "$30.0000 spent, $0.0000 reserved");
    assert_eq!(up.recorded().len(), 1);
    // 60 fit in the $70 left.
    let r = embed(60).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_budget_remaining_usd{period="day",tenant="*"}"#
        )
        .await,
        10.0
    );
}
