//! Limits on what clients control (connections, slow headers and bodies), per-tenant rate
//! limits, the header allow-list towards the upstream, and draining on shutdown.

mod common;

use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use switchyard::server::{self, Gateway, GatewayHandle, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The echo engine alone, with these `limits:`.
fn local_policy(limits: &[(&str, &str)]) -> String {
    limits
        .iter()
        .fold(
            PolicyBuilder::new()
                .local("local-echo")
                .default_route("local-echo", &[]),
            |p, (k, v)| p.limit(k, v),
        )
        .render()
}

fn addr(gw: &TestGateway) -> String {
    gw.url.trim_start_matches("http://").to_string()
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) or what came before EOF.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(TEST_TIMEOUT, s.read(&mut chunk))
            .await
            .expect("the server answers or closes in time")
            .unwrap_or(0);
        if n == 0 {
            return String::from_utf8_lossy(&buf).to_string();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn connections_over_the_limit_get_503_and_are_closed() {
    let gw = start_gateway(&local_policy(&[("max_connections", "2")]), &[]).await;
    let mut held = vec![];
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr(&gw)).await.expect("connect");
        s.write_all(HEALTH).await.expect("write");
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        held.push(s); // kept open (keep-alive)
    }
    let mut third = TcpStream::connect(addr(&gw)).await.expect("connect");
    third.write_all(HEALTH).await.expect("write");
    let resp = read_response(&mut third).await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains("too_many_connections"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: 1"),
        "{resp}"
    );
    let mut rest = vec![];
    let closed = tokio::time::timeout(TEST_TIMEOUT, third.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the refused connection is closed");
    // An Anthropic client is refused in its own dialect (Anthropic's 529 `overloaded_error`).
    let mut fourth = TcpStream::connect(addr(&gw)).await.expect("connect");
    fourth
        .write_all(
            b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 2\r\n\r\n{}",
        )
        .await
        .expect("write");
    let resp = read_response(&mut fourth).await;
    assert!(resp.starts_with("HTTP/1.1 529"), "{resp}");
    assert!(
        resp.contains(r#"{"type":"error","error":{"type":"overloaded_error""#),
        "{resp}"
    );
    // Closing one held connection makes room again.
    drop(held.pop());
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let mut s = TcpStream::connect(addr(&gw)).await.expect("connect");
        s.write_all(HEALTH).await.expect("write");
        if read_response(&mut s).await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after a connection closed"
        );
        tokio::task::yield_now().await;
    }
    assert!(metric(&gw, "switchyard_rejected_connections_total").await >= 1.0);
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_slow_bodies_get_408() {
    let gw = start_gateway(
        &local_policy(&[("header_timeout_ms", "300"), ("body_timeout_ms", "300")]),
        &[],
    )
    .await;
    // Half a request head, then silence: the server closes the connection.
    let mut s = TcpStream::connect(addr(&gw)).await.expect("connect");
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let resp = read_response(&mut s).await;
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 408"),
        "{resp}"
    );

    // A whole head, a tenth of the promised body, then silence: 408 in the OpenAI shape.
    let mut s = TcpStream::connect(addr(&gw)).await.expect("connect");
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .expect("write");
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("\"code\":\"request_timeout\""), "{resp}");
    assert_eq!(
        metric(&gw, r#"switchyard_client_timeouts_total{phase="body"}"#).await,
        1.0
    );
    let r = chat(&gw, ask("auto", "still serving"), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn rate_limits_are_per_tenant_on_requests_and_tokens() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::new()
        .cloud("cloud", &up.base("ok"))
        .default_route("cloud", &[])
        .tenant("team-a", "key-a")
        .tenant("team-b", "key-b")
        .default_rate_limit("{ tokens_per_minute: 40 }")
        .tenant_rate_limit("team-a", "{ requests_per_minute: 2 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let a = ("authorization", "Bearer key-a");
    let b = ("authorization", "Bearer key-b");
    for _ in 0..2 {
        assert_eq!(chat(&gw, ask("auto", "hi"), &[a]).await.status, 200);
    }
    let r = chat(&gw, ask("auto", "hi"), &[a]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.error_code(), "rate_limit_exceeded");
    let wait: u64 = r
        .header("retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 requests per minute"));

    // team-b: 40 tokens a minute; each answer uses 25 (the upstream's usage): the first two
    // pass (the second takes the bucket into debt), the third waits.
    for _ in 0..2 {
        assert_eq!(chat(&gw, ask("auto", "hi"), &[b]).await.status, 200);
    }
    let r = chat(&gw, ask("auto", "hi"), &[b]).await;
    assert_eq!(r.status, 429);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("40 tokens per minute"));
    for (tenant, limit) in [("team-a", "requests"), ("team-b", "tokens")] {
        assert_eq!(
            metric(
                &gw,
                &format!(r#"switchyard_rate_limited_total{{limit="{limit}",tenant="{tenant}"}}"#)
            )
            .await,
            1.0
        );
    }
    assert_eq!(
        up.recorded().len(),
        4,
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn only_allow_listed_client_headers_reach_the_upstream() {
    let up = FakeUpstream::start().await;
    let with_custom = |forward: &str| {
        PolicyBuilder::new()
            .cloud("cloud", &up.base("ok"))
            .cloud("custom", &up.base("ok"))
            .model_field("custom", "forward_headers", forward)
            .default_route("cloud", &[])
            .render()
    };
    let policy = with_custom("[x-custom]");
    let gw = start_gateway(&policy, KEY).await;
    let client_headers = [
        ("authorization", "Bearer client-gateway-key"),
        ("cookie", "session=1"),
        ("x-request-id", "req-7"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        ("x-custom", "c"),
        ("x-switchyard-tags", "t"),
        ("connection", "keep-alive, x-custom"),
    ];
    for model in ["cloud", "custom"] {
        assert_eq!(
            chat(&gw, ask(model, "hi"), &client_headers).await.status,
            200
        );
    }
    let sent = up.recorded();
    let (default, custom) = (&sent[0].headers, &sent[1].headers);
    assert_eq!(default["x-request-id"], "req-7");
    assert!(default.contains_key("traceparent"));
    for h in [&default, &custom] {
        assert_eq!(h["authorization"], "Bearer sk-upstream-secret");
        assert!(!h.contains_key("cookie"));
        assert!(!h.contains_key("x-switchyard-tags"));
    }
    assert!(!default.contains_key("x-custom"));
    assert_eq!(custom["x-custom"], "c");
    assert!(
        !custom.contains_key("x-request-id"),
        "a model's own list replaces the default"
    );

    // A policy cannot allow-list credentials or hop-by-hop headers.
    let bad = with_custom("[authorization, connection]");
    let err = switchyard::policy::parse(&bad, "p.yaml", &|_| Some("k".into()))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("`authorization` is never forwarded"), "{err}");
    assert!(err.contains("`connection` is never forwarded"), "{err}");
}

#[tokio::test]
async fn shutdown_reports_not_ready_first_then_drains_streams_in_flight() {
    let up = FakeUpstream::start().await;
    let policy = switchyard::policy::parse(
        &PolicyBuilder::standard(&up.base("gated")).render(),
        "p.yaml",
        &|_| Some("sk-upstream-secret".into()),
    )
    .expect("policy");
    let gateway = Gateway::build(policy, Default::default(), None)
        .expect("gateway")
        .with_engine("local-echo", Arc::new(EchoEngine::default()));
    let handle = GatewayHandle::new(Arc::new(gateway));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let url = format!("http://{address}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve_handle(
        listener,
        handle,
        async move {
            let _ = stopped.await;
        },
        ServeOptions {
            drain_delay: std::time::Duration::from_secs(2),
            drain_timeout: TEST_TIMEOUT,
        },
    ));
    let mut body = ask("auto", "stream");
    body["stream"] = json!(true);
    let stream = send(
        "POST",
        &format!("{url}/v1/chat/completions"),
        body.to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(stream.status(), 200);

    stop.send(()).expect("signal");
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let r = request("GET", &format!("{url}/readyz"), "", &[]).await;
        if r.status == 503 {
            assert_eq!(r.json()["status"], "draining");
            break;
        }
        assert!(Instant::now() < deadline, "readiness never went false");
        tokio::task::yield_now().await;
    }
    // Still served during the drain delay.
    let r = request("GET", &format!("{url}/healthz"), "", &[]).await;
    assert_eq!(r.status, 200);
    // Then the listener closes.
    loop {
        if TcpStream::connect(&address).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the listener never closed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The stream in flight finishes whole.
    up.gate.notify_one();
    let text = tokio::time::timeout(
        TEST_TIMEOUT,
        http_body_util::BodyExt::collect(stream.into_body()),
    )
    .await
    .expect("stream ends")
    .expect("stream body")
    .to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(" cloud") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    tokio::time::timeout(TEST_TIMEOUT, server)
        .await
        .expect("the server stops once drained")
        .expect("server task");
}
