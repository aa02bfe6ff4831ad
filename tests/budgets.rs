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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_cannot_overspend_and_the_rest_get_429() {
    let up = FakeUpstream::start().await;
    let policy = budget_policy(&up.base("ok"))
        .on_exhausted("reject")
        .global_budget("{ daily_usd: 100 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let url = gw.url.clone();
            tokio::spawn(async move {
                request(
                    "POST",
                    &format!("{url}/v1/chat/completions"),
                    ask_small().to_string(),
                    &[("content-type", "application/json")],
                )
                .await
            })
        })
        .collect();
    let (mut ok, mut rejected) = (0, 0);
    for t in tasks {
        let r = t.await.expect("task");
        match r.status.as_u16() {
            200 => ok += 1,
            429 => {
                rejected += 1;
                assert_eq!(r.error_code(), "budget_exceeded");
                assert!(r.json()["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("day budget of the gateway")));
                assert!(r
                    .header("retry-after")
                    .parse::<u64>()
                    .is_ok_and(|s| s > 0 && s <= 86_400));
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(ok >= 1 && rejected >= 1, "{ok} ok, {rejected} rejected");
    let spent = metric(
        &gw,
        "switchyard_cost_usd_total{model=\"cloud\",tenant=\"anonymous\"}",
    )
    .await;
    assert!(spent <= 100.0, "spent ${spent} of a $100 budget");
    assert_eq!(spent, 29.0 * f64::from(ok));
    let left = metric(
        &gw,
        "switchyard_budget_remaining_usd{period=\"day\",tenant=\"*\"}",
    )
    .await;
    assert_eq!(left, 100.0 - spent);
    assert_eq!(
        metric(&gw, "switchyard_budget_exhausted_total{tenant=\"*\"}").await,
        f64::from(rejected)
    );
    // Once used up, every further cloud request is refused.
    let r = chat(&gw, ask_small(), &[]).await;
    assert!(spent + 48.0 > 100.0);
    assert_eq!(r.status, 429);
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
