//! Fault injection against the fake upstream. For each fault: what the client sees, that
//! nothing hangs (every wait is bounded by `TEST_TIMEOUT`), and that the metrics count it.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `cloud` at `base` (retries fast, no breaker unless `breaker` says so) and `local-echo`.
/// Requests tagged `fallback` may fall back to the box; others may not.
fn faulty_builder(base: &str, breaker: &str) -> PolicyBuilder {
    PolicyBuilder::new()
        .local("local-echo")
        .cloud("cloud", base)
        .model_field(
            "cloud",
            "timeouts",
            "{ connect_ms: 2000, first_byte_ms: 1500, total_ms: 4000 }",
        )
        .model_field(
            "cloud",
            "retries",
            "{ max_retries: 2, initial_backoff_ms: 20, max_backoff_ms: 2000 }",
        )
        .model_field("cloud", "circuit_breaker", breaker)
        .rule(
            "may-fall-back",
            "{ tags: [fallback] }",
            "cloud",
            &["local-echo"],
        )
        .default_route("cloud", &[])
        .limit("stream_idle_timeout_ms", "500")
}

fn faulty(base: &str, breaker: &str) -> String {
    faulty_builder(base, breaker).render()
}

/// As `faulty`, with retries off.
fn no_retries(base: &str, breaker: &str) -> PolicyBuilder {
    faulty_builder(base, breaker).model_field(
        "cloud",
        "retries",
        "{ max_retries: 0, initial_backoff_ms: 20, max_backoff_ms: 2000 }",
    )
}

const NO_BREAKER: &str = "{ enabled: false }";
const FALLBACK: (&str, &str) = ("x-switchyard-tags", "fallback");

fn streamed(text: &str) -> Value {
    let mut b = ask("auto", text);
    b["stream"] = json!(true);
    b
}

/// The last SSE event as JSON (asserting there is no `[DONE]`).
fn error_event(r: &Reply) -> Value {
    let events = r.events();
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    serde_json::from_str(events.last().expect("an event")).expect("JSON event")
}

async fn errors(gw: &TestGateway, kind: &str) -> f64 {
    metric(
        gw,
        &format!(r#"switchyard_upstream_errors_total{{kind="{kind}",model="cloud"}}"#),
    )
    .await
}

async fn retries(gw: &TestGateway, reason: &str) -> f64 {
    metric(
        gw,
        &format!(r#"switchyard_upstream_retries_total{{model="cloud",reason="{reason}"}}"#),
    )
    .await
}

/// A base URL whose port refuses connections (it was just closed).
async fn refused_base() -> String {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    format!("http://{closed}/v1")
}

#[tokio::test]
async fn refused_connection_is_retried_then_502_or_falls_back() {
    let gw = start_gateway(&faulty(&refused_base().await, NO_BREAKER), KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "upstream_error");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("connect"));
    assert_eq!(errors(&gw, "connect").await, 1.0);
    assert_eq!(
        retries(&gw, "connect").await,
        2.0,
        "two retries after the first try"
    );

    let r = chat(&gw, ask("auto", "x"), &[FALLBACK]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert_eq!(r.header("x-switchyard-fallback"), "cloud; reason=connect");
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_fallbacks_total{from="cloud",to="local-echo"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn slow_first_byte_is_504_without_retries() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&faulty(&up.base("hang"), NO_BREAKER), KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.error_code(), "upstream_timeout");
    let r = chat(&gw, streamed("x"), &[]).await;
    assert_eq!(
        r.status, 504,
        "a stream that never starts fails before its head"
    );
    assert_eq!(errors(&gw, "first_byte_timeout").await, 2.0);
    assert_eq!(up.recorded().len(), 2, "a timed-out call is not sent again");
    assert_metric_absent(
        &gw,
        r#"switchyard_upstream_retries_total{model="cloud",reason="first_byte_timeout"}"#,
    )
    .await;
}

#[tokio::test]
async fn server_errors_are_retried_and_then_passed_on_as_502() {
    let up = FakeUpstream::start().await;
    // Two 503s, then an answer: the client never sees the failures.
    let gw = start_gateway(&faulty(&up.base("flaky-2"), NO_BREAKER), KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-switchyard-route"), "cloud");
    assert_eq!(up.recorded().len(), 3);
    assert_eq!(retries(&gw, "status_5xx").await, 2.0);

    // Always 500: three tries, then a 502.
    let gw = start_gateway(&faulty(&up.base("status-500"), NO_BREAKER), KEY).await;
    let before = up.recorded().len();
    let r = chat(&gw, streamed("x"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-switchyard-upstream-status"), "500");
    assert_eq!(r.error_code(), "upstream_code", "the upstream's own error");
    assert_eq!(up.recorded().len() - before, 3);
    assert_eq!(errors(&gw, "status_5xx").await, 1.0);
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="502"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn rate_limited_upstream_is_retried_after_its_retry_after() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&faulty(&up.base("limited-1"), NO_BREAKER), KEY).await;
    let started = Instant::now();
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited for Retry-After: 1"
    );
    assert_eq!(retries(&gw, "status_429").await, 1.0);

    // Retry-After: 7 is longer than max_backoff: not retried; the 429 and its Retry-After pass.
    let gw = start_gateway(&faulty(&up.base("status-429"), NO_BREAKER), KEY).await;
    let before = up.recorded().len();
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "7");
    assert_eq!(up.recorded().len() - before, 1);
    assert_eq!(errors(&gw, "status_429").await, 1.0);
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_error_event() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&faulty(&up.base("cut"), NO_BREAKER), KEY).await;
    let resp = open_chat(&gw, &streamed("x")).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !seen.contains("Hello") {
        let frame = tokio::time::timeout(TEST_TIMEOUT, body.frame())
            .await
            .expect("first chunks")
            .expect("open")
            .expect("frame");
        seen.push_str(&String::from_utf8_lossy(
            &frame.into_data().unwrap_or_default(),
        ));
    }
    // Now the upstream drops its connection mid-stream: bytes reached the client, so no retry.
    up.gate.notify_one();
    let rest = tokio::time::timeout(TEST_TIMEOUT, body.collect())
        .await
        .expect("no hang")
        .expect("clean close")
        .to_bytes();
    seen.push_str(&String::from_utf8_lossy(&rest));
    let last = seen
        .trim_end()
        .rsplit("\n\n")
        .next()
        .unwrap()
        .trim_start_matches("data: ");
    let last: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {seen}"));
    assert_eq!(last["error"]["type"], "server_error", "{seen}");
    assert!(!seen.contains("[DONE]"));
    assert_eq!(up.recorded().len(), 1);
    assert_eq!(errors(&gw, "transport").await, 1.0);
    assert_eq!(metric(&gw, r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="stream_error"}"#).await, 1.0);
}

#[tokio::test]
async fn a_stalled_stream_ends_at_the_idle_limit() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&faulty(&up.base("stall"), NO_BREAKER), KEY).await;
    let r = chat(&gw, streamed("x"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.events()[0].contains("assistant"),
        "the chunks before the stall arrived"
    );
    let last = error_event(&r);
    assert_eq!(last["error"]["code"], "upstream_timeout");
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sent nothing"));
    assert_eq!(errors(&gw, "stream_idle").await, 1.0);
}

#[tokio::test]
async fn malformed_sse_is_an_error_event_and_json_for_a_stream_falls_back() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&faulty(&up.base("badsse"), NO_BREAKER), KEY).await;
    let r = chat(&gw, streamed("x"), &[]).await;
    assert_eq!(error_event(&r)["error"]["code"], "upstream_error");
    assert_eq!(errors(&gw, "protocol").await, 1.0);

    // JSON where a stream was asked for fails before the first byte, so it falls back.
    let gw = start_gateway(&faulty(&up.base("json-for-stream"), NO_BREAKER), KEY).await;
    let r = chat(&gw, streamed("x"), &[FALLBACK]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert_eq!(r.header("x-switchyard-fallback"), "cloud; reason=protocol");
    assert_eq!(r.events().last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn huge_responses_are_refused_not_buffered() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&faulty(&up.base("huge"), NO_BREAKER), KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 502);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than"));
    let r = chat(&gw, streamed("x"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(error_event(&r)["error"]["code"], "upstream_error");
    assert_eq!(errors(&gw, "protocol").await, 2.0);
}

#[tokio::test]
async fn the_circuit_opens_sends_traffic_to_the_fallback_and_closes_again() {
    let up = FakeUpstream::start().await;
    let breaker = "{ failure_ratio: 0.5, min_calls: 2, window_ms: 60000, cooldown_ms: 1000 }";
    // Three failing calls (one try each, retries off), then the upstream answers.
    let gw = start_gateway(&no_retries(&up.base("flaky-2"), breaker).render(), KEY).await;
    let state = r#"switchyard_circuit_state{model="cloud"}"#;
    for _ in 0..2 {
        let r = chat(&gw, ask("auto", "x"), &[FALLBACK]).await;
        assert_eq!(
            r.header("x-switchyard-fallback"),
            "cloud; reason=status_5xx"
        );
    }
    assert_eq!(
        metric(&gw, state).await,
        2.0,
        "open after 2 of 2 calls failed"
    );
    // Open: the upstream is not called; the fallback answers and says why.
    let r = chat(&gw, ask("auto", "x"), &[FALLBACK]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert_eq!(
        r.header("x-switchyard-fallback"),
        "cloud; reason=circuit_open"
    );
    assert_eq!(up.recorded().len(), 2);
    // The refusal counts as the model's error, with its kind.
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_upstream_errors_total{kind="circuit_open",model="cloud"}"#
        )
        .await,
        1.0
    );
    // Without a fallback, the client gets a 503 that says the circuit is open.
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "model_unavailable");
    assert_eq!(
        r.header("retry-after"),
        "1",
        "until the trial call (cool-down 1 s)"
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("circuit breaker is open"));
    let ready = request("GET", &format!("{}/readyz", gw.url), "", &[]).await;
    assert_eq!(
        ready.status, 200,
        "an open circuit is the upstream's state, not this instance's"
    );
    // After the cool-down the circuit half-opens; one trial call succeeds and closes it.
    let deadline = Instant::now() + TEST_TIMEOUT;
    while metric(&gw, state).await != 1.0 {
        assert!(Instant::now() < deadline, "the circuit never half-opened");
        tokio::task::yield_now().await;
    }
    let r = chat(&gw, ask("auto", "x"), &[FALLBACK]).await;
    assert_eq!(r.header("x-switchyard-route"), "cloud");
    assert_eq!(r.header("x-switchyard-fallback"), "");
    assert_eq!(metric(&gw, state).await, 0.0);
}

#[tokio::test]
async fn streams_report_their_end_to_the_circuit_breaker() {
    let up = FakeUpstream::start().await;
    let breaker = "{ failure_ratio: 0.5, min_calls: 2, window_ms: 60000, cooldown_ms: 60000 }";
    let state = r#"switchyard_circuit_state{model="cloud"}"#;
    // Streams that finish count as successes: the circuit stays closed.
    let gw = start_gateway(&faulty(&up.base("ok"), breaker), KEY).await;
    for _ in 0..3 {
        let r = chat(&gw, streamed("x"), &[]).await;
        assert_eq!(r.events().last().map(String::as_str), Some("[DONE]"));
    }
    assert_eq!(metric(&gw, state).await, 0.0);
    // Streams that break after their head count as failures: two of two open it.
    let gw = start_gateway(&faulty(&up.base("badsse"), breaker), KEY).await;
    for _ in 0..2 {
        let r = chat(&gw, streamed("x"), &[]).await;
        assert_eq!(r.status, 200, "the head went out before the break");
        assert_eq!(error_event(&r)["error"]["code"], "upstream_error");
    }
    assert_eq!(metric(&gw, state).await, 2.0, "open after 2 broken streams");
    let r = chat(&gw, streamed("x"), &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("circuit breaker is open"));
}

#[tokio::test]
async fn a_failing_local_engine_falls_back_to_the_cloud() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::new()
        .local("local-broken")
        .cloud("cloud", &up.base("ok"))
        .default_route("local-broken", &["cloud"])
        .render();
    let gw = start_gateway(&policy, KEY).await;
    for body in [ask("auto", "x"), streamed("x")] {
        let r = chat(&gw, body, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-switchyard-route"), "cloud");
        assert_eq!(
            r.header("x-switchyard-fallback"),
            "local-broken; reason=failed"
        );
    }
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_upstream_errors_total{kind="failed",model="local-broken"}"#
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn a_connect_that_never_completes_hits_the_connect_timeout() {
    // A listener that never accepts, with its accept queue filled: further SYNs are dropped, so
    // connecting hangs until the client gives up.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(0).expect("listen");
    let mut fillers = vec![];
    while let Ok(Ok(s)) = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        fillers.push(s);
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    let policy = no_retries(&format!("http://{addr}/v1"), NO_BREAKER)
        .model_field(
            "cloud",
            "timeouts",
            "{ connect_ms: 200, first_byte_ms: 1500, total_ms: 4000 }",
        )
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let r = chat(&gw, ask("auto", "x"), &[]).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("cannot connect") && message.contains("within 200ms"),
        "{message}"
    );
    assert_eq!(errors(&gw, "connect").await, 1.0);
    let r = chat(&gw, ask("auto", "x"), &[FALLBACK]).await;
    assert_eq!(r.header("x-switchyard-fallback"), "cloud; reason=connect");
}
