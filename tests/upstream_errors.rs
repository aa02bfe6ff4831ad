//! What a client gets when the cloud fails and no retry or fallback helps: the row of
//! docs/security.md's upstream error table for each kind of failure.

mod common;

use common::*;

/// `cloud` at `base` with no retries (so each row shows one upstream answer) and, unless
/// `breaker` says otherwise, no circuit breaker; nothing to fall back to.
fn only_cloud(base: &str, breaker: &str) -> PolicyBuilder {
    PolicyBuilder::new()
        .cloud("cloud", base)
        .model_field(
            "cloud",
            "timeouts",
            "{ connect_ms: 1000, first_byte_ms: 800, total_ms: 2000 }",
        )
        .model_field("cloud", "retries", "{ max_retries: 0 }")
        .model_field("cloud", "circuit_breaker", breaker)
        .default_route("cloud", &[])
}

const NO_BREAKER: &str = "{ enabled: false }";

struct Row {
    upstream: &'static str,
    status: u16,
    upstream_status: &'static str,
    retry_after: &'static str,
    code: &'static str,
    /// A part of the message the client reads.
    message: &'static str,
}

#[tokio::test]
async fn each_upstream_failure_reaches_the_client_as_the_table_says() {
    let up = FakeUpstream::start().await;
    let rows = [
        // The upstream's client errors pass through: status, body (redacted), Retry-After.
        Row {
            upstream: "status-400",
            status: 400,
            upstream_status: "400",
            retry_after: "",
            code: "upstream_code",
            message: "upstream says no (400); you sent Bearer ***",
        },
        Row {
            upstream: "status-404",
            status: 404,
            upstream_status: "404",
            retry_after: "",
            code: "upstream_code",
            message: "upstream says no (404)",
        },
        Row {
            upstream: "status-429",
            status: 429,
            upstream_status: "429",
            retry_after: "7",
            code: "upstream_code",
            message: "upstream says no (429)",
        },
        // The gateway's own provider key was refused: not the client's fault.
        Row {
            upstream: "status-401",
            status: 502,
            upstream_status: "401",
            retry_after: "",
            code: "upstream_error",
            message: "rejected this gateway's provider credentials (status 401",
        },
        Row {
            upstream: "status-403",
            status: 502,
            upstream_status: "403",
            retry_after: "",
            code: "upstream_error",
            message: "rejected this gateway's provider credentials (status 403",
        },
        // Server errors keep their class and the upstream's message.
        Row {
            upstream: "status-500",
            status: 502,
            upstream_status: "500",
            retry_after: "",
            code: "upstream_code",
            message: "upstream says no (500)",
        },
        Row {
            upstream: "status-501",
            status: 502,
            upstream_status: "501",
            retry_after: "",
            code: "upstream_code",
            message: "upstream says no (501)",
        },
        Row {
            upstream: "status-502",
            status: 502,
            upstream_status: "502",
            retry_after: "",
            code: "upstream_code",
            message: "upstream says no (502)",
        },
        Row {
            upstream: "status-503-after-30",
            status: 503,
            upstream_status: "503",
            retry_after: "30",
            code: "upstream_code",
            message: "upstream says no (503)",
        },
        Row {
            upstream: "status-504",
            status: 504,
            upstream_status: "504",
            retry_after: "",
            code: "upstream_code",
            message: "upstream says no (504)",
        },
        // An error body that is not an OpenAI error: the gateway says what happened.
        Row {
            upstream: "html-500",
            status: 502,
            upstream_status: "500",
            retry_after: "",
            code: "upstream_error",
            message: "model `cloud`: the upstream answered with status 500",
        },
        // No answer in time, and answers the gateway cannot use.
        Row {
            upstream: "hang",
            status: 504,
            upstream_status: "",
            retry_after: "",
            code: "upstream_timeout",
            message: "the upstream sent no response within",
        },
        Row {
            upstream: "huge",
            status: 502,
            upstream_status: "",
            retry_after: "",
            code: "upstream_error",
            message: "model `cloud`",
        },
    ];
    for row in rows {
        let gw = start_gateway(
            &only_cloud(&up.base(row.upstream), NO_BREAKER).render(),
            KEY,
        )
        .await;
        let r = chat(&gw, ask("auto", "hi"), &[]).await;
        let what = row.upstream;
        assert_eq!(r.status.as_u16(), row.status, "{what}");
        assert_eq!(
            r.header("x-switchyard-upstream-status"),
            row.upstream_status,
            "{what}"
        );
        assert_eq!(r.header("retry-after"), row.retry_after, "{what}");
        assert_eq!(r.error_code(), row.code, "{what}");
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(message.contains(row.message), "{what}: {message}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("sk-upstream-secret"),
            "{what}"
        );
    }

    // Nothing listening: the upstream cannot be reached.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/v1", closed.local_addr().expect("addr"));
    drop(closed);
    let gw = start_gateway(&only_cloud(&dead, NO_BREAKER).render(), KEY).await;
    let r = chat(&gw, ask("auto", "hi"), &[]).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (502, "upstream_error")
    );
    assert_eq!(r.header("x-switchyard-upstream-status"), "");
}

#[tokio::test]
async fn the_breakers_retry_after_wins_when_it_is_longer() {
    let up = FakeUpstream::start().await;
    // Opens on the first failure, for two minutes.
    let breaker = "{ failure_ratio: 0.5, min_calls: 1, window_ms: 60000, cooldown_ms: 120000 }";
    let gw = start_gateway(
        &only_cloud(&up.base("status-503-after-30"), breaker).render(),
        KEY,
    )
    .await;
    let r = chat(&gw, ask("auto", "hi"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-switchyard-upstream-status"), "503");
    let secs: u64 = r.header("retry-after").parse().expect("seconds");
    assert!((119..=120).contains(&secs), "Retry-After: {secs}");
}

#[tokio::test]
async fn a_client_that_retries_by_itself_is_not_retried_for_as_well() {
    let up = FakeUpstream::start().await;
    let retrying = only_cloud(&up.base("limited-100"), NO_BREAKER)
        .model_field(
            "cloud",
            "retries",
            "{ max_retries: 2, initial_backoff_ms: 10, max_backoff_ms: 2000 }",
        )
        .model_field(
            "cloud",
            "timeouts",
            "{ connect_ms: 1000, first_byte_ms: 800, total_ms: 10000 }",
        )
        .render();
    let gw = start_gateway(&retrying, KEY).await;
    // A client without retries of its own gets the gateway's (Retry-After: 1 each time).
    let r = chat(&gw, ask("auto", "plain"), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(up.recorded().len(), 3, "one call and two retries");
    // An OpenAI SDK says it retries (`x-stainless-retry-count`): one try per call.
    let r = chat(&gw, ask("auto", "sdk"), &[("x-stainless-retry-count", "0")]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(up.recorded().len(), 4);
}
