//! Secrets never leave the gateway: after traffic that makes a fake upstream echo the provider
//! key everywhere it can (error bodies, answers, stream events, headers), neither the provider
//! key nor a gateway key appears in any response, in /metrics, in the logs (at debug level) or
//! in the request log. Runs the real binary, and ends it with SIGTERM.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const PROVIDER_KEY: &str = "sk-canary-PROVIDER-7f3a91";
const GATEWAY_KEY: &str = "gw-canary-GATEWAY-91c2d4";

/// Collects a child's output lines; says when one contains `needle`.
fn collect(
    pipe: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<String>>,
    tx: std::sync::mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            into.lock().expect("lock").push_str(&line);
            into.lock().expect("lock").push('\n');
            let _ = tx.send(line);
        }
    });
}

#[tokio::test]
async fn no_key_appears_in_responses_metrics_logs_or_the_request_log() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let behaviours = [
        "ok",
        "leaky",
        "status-400",
        "status-401",
        "status-429",
        "status-500",
    ];
    let mut policy = PolicyBuilder::new();
    for b in behaviours {
        policy = policy.model(
            &format!("cloud-{b}"),
            &[
                ("kind", "openai"),
                ("base_url", &quoted(&up.base(b))),
                ("api_key", &quoted("${SECRET_KEY}")),
                ("retries", "{ max_retries: 1, initial_backoff_ms: 1 }"),
            ],
        );
    }
    let policy = policy
        .default_route("cloud-ok", &[])
        .tenant("team", GATEWAY_KEY)
        .recording(&log, None)
        .render();
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, policy).expect("write policy");

    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--drain-delay-secs",
            "0.1",
            "--policy",
        ])
        .arg(&policy_path)
        .env("SECRET_KEY", PROVIDER_KEY)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, lines) = std::sync::mpsc::channel();
    collect(
        child.stdout.take().expect("stdout"),
        output.clone(),
        tx.clone(),
    );
    collect(child.stderr.take().expect("stderr"), output.clone(), tx);
    let started = Instant::now();
    let url = loop {
        let line = lines
            .recv_timeout(TEST_TIMEOUT.saturating_sub(started.elapsed()))
            .expect("the server says where it listens");
        if let Some(at) = line.split("listening on ").nth(1) {
            break at.trim().to_string();
        }
    };

    let mut seen = String::new();
    let auth = format!("Bearer {GATEWAY_KEY}");
    for b in behaviours {
        for stream in [false, true] {
            let mut body = ask(&format!("cloud-{b}"), "hello");
            body["stream"] = json!(stream);
            let r = request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                body.to_string(),
                &[
                    ("content-type", "application/json"),
                    ("authorization", &auth),
                ],
            )
            .await;
            seen.push_str(&format!(
                "{:?}\n{}\n",
                r.headers,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    // A wrong key, and the public endpoints.
    let wrong = format!("Bearer {PROVIDER_KEY}");
    let r = request(
        "GET",
        &format!("{url}/v1/models"),
        "",
        &[("authorization", &wrong)],
    )
    .await;
    assert_eq!(r.status, 401);
    seen.push_str(&String::from_utf8_lossy(&r.body));
    for path in ["/metrics", "/readyz", "/healthz"] {
        let r = request("GET", &format!("{url}{path}"), "", &[]).await;
        seen.push_str(&format!(
            "{:?}\n{}\n",
            r.headers,
            String::from_utf8_lossy(&r.body)
        ));
    }

    // The upstream did get the key, and echoed it: so the checks below can fail.
    assert!(up
        .recorded()
        .iter()
        .all(|r| r.headers["authorization"] == format!("Bearer {PROVIDER_KEY}")));
    assert!(
        seen.contains("***"),
        "the echoed key was redacted where it would have shown"
    );
    assert!(seen.contains("switchyard_requests_total"));

    // SIGTERM: the server drains and exits cleanly.
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + TEST_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    let logs = output.lock().expect("lock").clone();
    assert!(logs.contains("draining"), "{logs}");
    assert!(logs.contains("DEBUG"), "debug logging was on");
    let recorded = std::fs::read_to_string(&log).expect("request log");
    assert_eq!(recorded.lines().count(), 2 * behaviours.len());

    for (what, text) in [
        ("responses", &seen),
        ("logs", &logs),
        ("request log", &recorded),
    ] {
        for secret in [PROVIDER_KEY, GATEWAY_KEY] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into the {what}:\n{text}"
            );
        }
    }
}
