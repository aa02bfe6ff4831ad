//! A request is settled once, however it ends: here, a client that goes away while the cloud
//! holds its answer (its budget reservation must not stay counted), and a cloud call that
//! breaks after the upstream took it (the provider bills it, so the budget counts it).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Instant;
use tokio::io::AsyncWriteExt;

/// The gateway-wide daily budget left, from `GET /v1/switchyard/budget`.
async fn day_left(gw: &TestGateway) -> f64 {
    let r = request("GET", &format!("{}/v1/switchyard/budget", gw.url), "", &[]).await;
    let v: Value = r.json();
    v["budgets"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["period"] == "day"))
        .and_then(|b| b["remaining_usd"].as_f64())
        .unwrap_or_else(|| panic!("no daily budget in {v}"))
}

/// Waits, at most [`TEST_TIMEOUT`], until `check` holds on the daily budget left.
async fn until_left(gw: &TestGateway, what: &str, check: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let left = day_left(gw).await;
        if check(left) {
            return left;
        }
        assert!(Instant::now() < deadline, "{what}: ${left} left");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_mid_request_leaves_only_its_prompt_spent() {
    let up = FakeUpstream::start().await;
    // The upstream never answers; the gateway would give up on it after a minute.
    let policy = PolicyBuilder::standard(&up.base("hang"))
        .model_field(
            "cloud",
            "timeouts",
            "{ connect_ms: 2000, first_byte_ms: 60000, total_ms: 60000 }",
        )
        .global_budget("{ daily_usd: 1000 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;
    assert_eq!(day_left(&gw).await, 1000.0);

    // 8 prompt tokens ($1 each) and at most 20 answer tokens ($2 each): $48 reserved.
    let body = json!({"model": "cloud", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let address = gw.url.trim_start_matches("http://");
    let mut client = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    client
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("send");
    until_left(&gw, "the reservation is taken", |left| left == 952.0).await;
    let deadline = Instant::now() + TEST_TIMEOUT;
    while up.recorded().is_empty() {
        assert!(Instant::now() < deadline, "the upstream got no request");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // The client gives up while the upstream still holds the answer.
    drop(client);
    let left = until_left(&gw, "the reservation is settled", |left| left != 952.0).await;
    assert_eq!(left, 1000.0 - 8.0, "only the prompt counts as spent");
    let closed = r#"switchyard_requests_total{model="cloud",route="cloud",rule="cloud-on-request",status="client_closed"}"#;
    assert_eq!(metric(&gw, closed).await, 1.0);
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#
        )
        .await,
        8.0
    );
    // Estimated, but not counted against the model: it had no chance to report its usage.
    assert_eq!(
        metric_opt(&gw, r#"switchyard_usage_estimated_total{model="cloud"}"#).await,
        None
    );
}

#[tokio::test]
async fn a_cloud_call_that_breaks_after_its_head_is_billed_though_the_box_answers() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::standard(&up.base("cutbody"))
        .global_budget("{ daily_usd: 1000 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let body = json!({"model": "cloud", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let r = chat(&gw, body, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "local-echo");
    assert_eq!(up.recorded().len(), 1);
    // The cloud read the 8-token prompt ($1 a token) before its answer broke: $8 spent, though
    // the box answered.
    let left = until_left(&gw, "the failed call is settled", |left| left != 1000.0).await;
    assert_eq!(left, 1000.0 - 8.0);
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#
        )
        .await,
        8.0
    );
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_upstream_errors_total{kind="transport",model="cloud"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_failed_request_reports_what_its_billed_call_cost() {
    // `model: broken`, a cloud model with no fallback: the broken answer ends the request.
    for behaviour in ["cutbody", "json-for-stream"] {
        let up = FakeUpstream::start().await;
        let policy = PolicyBuilder::standard(&up.base("ok"))
            .cloud("broken", &up.base(behaviour))
            .model_field(
                "broken",
                "price",
                "{ input_per_million: 1000000, output_per_million: 2000000 }",
            )
            .rule("broken-only", "{ model: [broken] }", "broken", &[])
            .render();
        let gw = start_gateway(&policy, KEY).await;
        // `json-for-stream` answers a stream request with plain JSON: answered, so billed too.
        let stream = behaviour == "json-for-stream";
        let body = json!({"model": "broken", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let r = chat(&gw, body, &[]).await;
        assert_eq!(
            r.status,
            502,
            "{behaviour}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("x-switchyard-cost-usd"),
            "8.00000000",
            "{behaviour}"
        );
    }
}
