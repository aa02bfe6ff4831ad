//! Request ids: every response carries `x-request-id` (the client's when sane, else a new one),
//! the upstream gets the same id, and the gateway's log lines and request log name it.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Mutex};
use switchyard::classifier::batcher::{BatchSettings, Batcher};
use switchyard::classifier::{Classification, ClassifierError, RouterModel};
use switchyard::server::{self, Gateway};

fn is_generated(id: &str) -> bool {
    id.len() == 36 && id.starts_with("req_") && id[4..].bytes().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test]
async fn every_response_carries_a_request_id_that_the_upstream_gets_too() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&PolicyBuilder::standard(&up.base("ok")).render(), KEY).await;

    let own = chat(&gw, ask("cloud", "hi"), &[("x-request-id", "trace-42")]).await;
    assert_eq!(own.status, 200);
    assert_eq!(own.header("x-request-id"), "trace-42");
    let made = chat(&gw, ask("cloud", "hi"), &[]).await;
    let id = made.header("x-request-id").to_string();
    assert!(is_generated(&id), "{id}");
    let long = "x".repeat(129);
    for insane in [long.as_str(), "has space", ""] {
        let r = chat(&gw, ask("cloud", "hi"), &[("x-request-id", insane)]).await;
        let got = r.header("x-request-id");
        assert!(is_generated(got), "{insane:?} -> {got}");
    }
    let seen: Vec<String> = up
        .recorded()
        .iter()
        .map(|r| r.headers["x-request-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(seen[..2], ["trace-42".to_string(), id]);
    assert!(seen[2..].iter().all(|s| is_generated(s)), "{seen:?}");

    // Errors carry one too: bad input, an unknown route, a method not allowed, a probe.
    let bad = chat(&gw, serde_json::json!({"model": "auto"}), &[]).await;
    assert_eq!(bad.status, 400);
    assert!(is_generated(bad.header("x-request-id")));
    for (method, path, status) in [
        ("GET", "/v1/nothing", 404),
        ("DELETE", "/v1/models", 405),
        ("GET", "/healthz", 200),
    ] {
        let r = request(
            method,
            &format!("{}{path}", gw.url),
            "",
            &[("x-request-id", "e-1")],
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.header("x-request-id")),
            (status, "e-1")
        );
    }
}

#[tokio::test]
async fn a_refused_gateway_key_gets_a_request_id() {
    let policy = PolicyBuilder::new()
        .local("local-echo")
        .tenant("a", "sk-gateway-a")
        .default_route("local-echo", &[])
        .render();
    let gw = start_gateway(&policy, &[]).await;
    let r = chat(&gw, ask("auto", "hi"), &[("x-request-id", "who-1")]).await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-request-id")),
        (401, "who-1")
    );
}

#[tokio::test]
async fn the_request_log_names_each_request_by_its_id() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let policy = PolicyBuilder::standard(&up.base("ok"))
        .recording(&log, None)
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let a = chat(&gw, ask("cloud", "one"), &[("x-request-id", "log-1")]).await;
    let b = chat(&gw, ask("cloud", "two"), &[]).await;
    let ids = [a.header("x-request-id"), b.header("x-request-id")];
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    let rows: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let rows: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if rows.len() == 2 {
            break rows;
        }
        assert!(std::time::Instant::now() < deadline, "log rows: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let logged: Vec<&str> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(logged, ids);
}

/// A router model that always fails: the gateway logs a warning inside the request.
struct Failing;

impl RouterModel for Failing {
    fn classify(&self, _: &[&str]) -> Result<Vec<Classification>, ClassifierError> {
        Err(ClassifierError::Format("no scores today".into()))
    }
}

/// Log output of this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_gateways_log_lines_for_a_request_name_its_id() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let text = PolicyBuilder::new()
        .local("local-echo")
        .classifier(&[])
        .rule(
            "hard",
            "{ strong_score: { above: 0.5 } }",
            "local-echo",
            &[],
        )
        .default_route("local-echo", &[])
        .render();
    let policy = switchyard::policy::parse(&text, "p.yaml", &|_| None).expect("policy");
    let gateway = Gateway::build(policy, Default::default(), None)
        .expect("gateway")
        .with_engine("local-echo", Arc::new(EchoEngine::default()))
        .with_classifier(Batcher::start(Arc::new(Failing), BatchSettings::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server::serve(listener, Arc::new(gateway), async move {
        let _ = stopped.await;
    }));
    let r = request(
        "POST",
        &format!("{url}/v1/chat/completions"),
        ask("auto", "hi").to_string(),
        &[
            ("content-type", "application/json"),
            ("x-request-id", "logged-7"),
        ],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "a classifier failure routes as if it had no score"
    );
    let _ = stop.send(());
    let _ = served.await;
    let out = String::from_utf8_lossy(&logs.0.lock().expect("lock")).to_string();
    let line = out
        .lines()
        .find(|l| l.contains("request classifier failed"))
        .unwrap_or_else(|| panic!("no warning logged:\n{out}"));
    assert!(line.contains("request_id=\"logged-7\""), "{line}");
    assert!(
        line.contains("request classifier failed: invalid classifier files: no scores today"),
        "the model's error, said once: {line}"
    );
}

#[tokio::test]
async fn the_providers_request_id_and_allowed_headers_come_back_on_answers_streams_and_errors() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::standard(&up.base("ok"))
        .cloud("limited", &up.base("status-429"))
        .model_field("limited", "retries", "{ max_retries: 0 }")
        .render();
    let gw = start_gateway(&policy, KEY).await;

    let json = chat(&gw, ask("cloud", "hi"), &[("x-request-id", "mine-1")]).await;
    let mut stream_req = ask("cloud", "hi");
    stream_req["stream"] = serde_json::json!(true);
    let stream = chat(&gw, stream_req, &[("x-request-id", "mine-2")]).await;
    let error = chat(&gw, ask("limited", "hi"), &[("x-request-id", "mine-3")]).await;
    let statuses = [json.status, stream.status, error.status].map(|s| s.as_u16());
    assert_eq!(statuses, [200, 200, 429]);
    assert!(stream.events().iter().any(|e| e == "[DONE]"));
    for (n, r) in [(1, &json), (2, &stream), (3, &error)] {
        // The client's id stays the gateway's; the provider's comes back beside it.
        assert_eq!(r.header("x-request-id"), format!("mine-{n}"));
        assert_eq!(
            r.header("x-switchyard-upstream-request-id"),
            format!("req_fake_{n}")
        );
        assert_eq!(r.header("x-ratelimit-limit-requests"), "500");
        assert_eq!(
            r.header("x-ratelimit-remaining-requests"),
            format!("{}", 500 - n)
        );
        assert_eq!(r.header("x-ratelimit-reset-tokens"), "6m0s");
        assert_eq!(r.header("openai-processing-ms"), "42");
        // Not on the default list: cookies never, the organization only when listed.
        assert_eq!(r.header("set-cookie"), "");
        assert_eq!(r.header("openai-organization"), "");
    }

    // A policy's own list replaces the default one.
    let listed = PolicyBuilder::standard(&up.base("ok"))
        .model_field("cloud", "response_headers", "[openai-organization]")
        .render();
    let gw = start_gateway(&listed, KEY).await;
    let r = chat(&gw, ask("cloud", "hi"), &[]).await;
    assert_eq!(r.header("openai-organization"), "org-fake");
    assert_eq!(r.header("x-ratelimit-limit-requests"), "");
    assert!(r
        .header("x-switchyard-upstream-request-id")
        .starts_with("req_fake_"));
    // The on-box model has no provider: no provider headers.
    let local = chat(&gw, ask("local-echo", "hi"), &[]).await;
    assert_eq!(local.status, 200);
    assert_eq!(local.header("x-switchyard-upstream-request-id"), "");
}
