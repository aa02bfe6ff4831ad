//! The Grafana dashboard and the Prometheus rules against real data: a `switchyard serve`
//! process (the on-box SmolLM2, the classifier, a cloud model on the fake upstream, budgets,
//! rate limits, state in a real `redis-server`) gets known traffic that touches every part the
//! dashboard shows (on-box and cloud answers, a stream, a retried call and a fallback, a model
//! pricier than the reference, private data kept on the box and redacted, a sticky
//! conversation, a used-up budget, a rate limit, a Redis pause); a real Prometheus (Debian
//! package `prometheus`) scrapes it and evaluates the recording rules; then
//! `deploy/check_queries.py` runs every panel's query and every recording rule there. A query
//! that returns nothing, or that names a metric the gateway does not export, fails the test.

mod common;

use common::*;
use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Polls `url` until it answers 200, within `TEST_TIMEOUT` (or the process exits).
async fn wait_ok(url: &str, child: &mut Running) {
    let deadline = Instant::now() + TEST_TIMEOUT * 3;
    loop {
        let req = http::Request::get(url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        if let Ok(r) = client().request(req).await {
            if r.status() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("{url}: the process exited ({status})");
        }
        assert!(Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(url: &str, key: &str, body: serde_json::Value, tags: Option<&str>) -> Reply {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    if let Some(t) = tags {
        headers.push(("x-switchyard-tags", t));
    }
    request_within(
        Duration::from_secs(60),
        "POST",
        &format!("{url}/v1/chat/completions"),
        body.to_string(),
        &headers,
    )
    .await
}

fn ask(text: &str, stream: bool) -> serde_json::Value {
    json!({"model": "auto", "max_tokens": 6, "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_recording_rule_returns_data_from_a_real_prometheus() {
    let up = FakeUpstream::start().await;
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let price = "{ input_per_million: 2.5, output_per_million: 10 }";
    let policy = PolicyBuilder::new()
        .model(
            "smollm2",
            &[
                ("kind", "local"),
                ("path", &quoted(&smollm2_path().display().to_string())),
            ],
        )
        .cloud("cloud", &up.base("ok"))
        .model_field("cloud", "price", price)
        .cloud("flaky", &up.base("status-500"))
        .model_field("flaky", "price", price)
        .model_field(
            "flaky",
            "retries",
            "{ max_retries: 1, initial_backoff_ms: 1 }",
        )
        .cloud("premium", &up.base("ok"))
        .model_field(
            "premium",
            "price",
            "{ input_per_million: 30, output_per_million: 60 }",
        )
        .reference_model("cloud")
        .classifier(&[])
        .tenant("team", "sk-team")
        .tenant("tiny", "sk-tiny")
        .global_budget("{ daily_usd: 1000, monthly_usd: 10000 }")
        .tenant_budget("tiny", "{ daily_usd: 0.000001 }")
        .on_exhausted("local")
        .tenant_rate_limit("tiny", "{ requests_per_minute: 2 }")
        .state(&[
            ("backend", "redis"),
            ("url", &quoted(&redis.url())),
            ("timeout_ms", "200"),
        ])
        .rule("private", "{ pii: [credit_card] }", "smollm2", &[])
        .rule(
            "code-on-box",
            "{ category: { in: [code], min_probability: 0.2 } }",
            "smollm2",
            &[],
        )
        .rule("redacted", "{ tags: [redact] }", "cloud", &[])
        .rule_field("redacted", "redact", "[email]")
        .rule("sticky", "{ tags: [sticky] }", "cloud", &[])
        .rule_field("sticky", "sticky", "true")
        .rule("box", "{ tags: [box] }", "smollm2", &[])
        .rule("broken", "{ tags: [broken] }", "flaky", &["smollm2"])
        .rule("solo", "{ tags: [solo] }", "cloud", &[])
        .rule("premium", "{ tags: [premium] }", "premium", &[])
        .default_route("cloud", &["smollm2"])
        .render();
    let policy_path = tmp.path().join("policy.yaml");
    std::fs::write(&policy_path, &policy).expect("write");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut gateway = Running(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--policy",
            ])
            .arg(&policy_path)
            .env("CLOUD_KEY", "sk-upstream")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    wait_ok(&format!("{url}/readyz"), &mut gateway).await;

    // Known traffic, each kind of answer at least once.
    let code = "Write a Python function that reverses a linked list, with type hints.";
    post(&url, "sk-team", ask(code, false), None).await;
    let r = post(&url, "sk-team", ask(code, false), Some("box")).await;
    assert_eq!(r.header("x-switchyard-route"), "local");
    let r = post(&url, "sk-team", ask("Say hi.", true), Some("broken")).await;
    assert_eq!(
        r.header("x-switchyard-model"),
        "smollm2",
        "the fallback answers"
    );
    for stream in [false, true] {
        let r = post(
            &url,
            "sk-team",
            ask("What is the capital of France?", stream),
            None,
        )
        .await;
        assert_eq!(r.header("x-switchyard-route"), "cloud");
    }
    // Private data: a card number kept on the box, an address redacted before the cloud.
    let r = post(
        &url,
        "sk-team",
        ask("Is 4111 1111 1111 1111 a valid card number?", false),
        None,
    )
    .await;
    assert_eq!(r.header("x-switchyard-rule"), "private");
    assert_eq!(r.header("x-switchyard-route"), "local");
    let r = post(
        &url,
        "sk-team",
        ask("Write to jane.doe@northwind-mail.com to thank her.", false),
        Some("redact"),
    )
    .await;
    assert_eq!(r.header("x-switchyard-route"), "cloud");
    assert_eq!(r.header("x-switchyard-redacted"), "email");
    // A sticky conversation: its second turn stays on the cloud model that answered the first,
    // although its tag names a rule (below the pinning one) that routes to the box.
    let turn = ask("Name three Roman emperors.", false);
    let r = post(&url, "sk-team", turn.clone(), Some("sticky")).await;
    assert_eq!(r.header("x-switchyard-model"), "cloud");
    let r = post(&url, "sk-team", turn, Some("box")).await;
    assert_eq!(r.header("x-switchyard-model"), "cloud", "the pin decides");
    // A model pricier than the reference (overspend).
    let r = post(
        &url,
        "sk-team",
        ask("Summarise Hamlet.", false),
        Some("premium"),
    )
    .await;
    assert_eq!(r.header("x-switchyard-model"), "premium");
    // Over its budget (answered on the box), then over its rate.
    let statuses: Vec<u16> = {
        let mut s = vec![];
        for _ in 0..3 {
            let r = post(&url, "sk-tiny", ask("Hello there.", false), None).await;
            s.push(r.status.as_u16());
        }
        s
    };
    assert_eq!(statuses, [200, 200, 429]);
    // Redis frozen: a cloud call is refused.
    redis.pause();
    let r = post(
        &url,
        "sk-team",
        ask("What is the capital of Spain?", false),
        Some("solo"),
    )
    .await;
    redis.resume();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));

    // A real Prometheus scraping the gateway every second, with the recording rules.
    let rules_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/rules");
    let rules: Vec<String> = std::fs::read_dir(&rules_dir)
        .expect("rules")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| p.display().to_string())
        .collect();
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [{}]\nscrape_configs:\n  - job_name: switchyard\n    static_configs: [{{ targets: ['127.0.0.1:{port}'] }}]\n",
        rules.iter().map(|r| quoted(r)).collect::<Vec<_>>().join(", ")
    );
    std::fs::write(tmp.path().join("prometheus.yml"), config).expect("write");
    let prom_port = free_port();
    let prom_url = format!("http://127.0.0.1:{prom_port}");
    let mut prometheus = Running(
        Command::new(std::env::var("SWITCHYARD_PROMETHEUS").unwrap_or("prometheus".into()))
            .arg(format!(
                "--config.file={}/prometheus.yml",
                tmp.path().display()
            ))
            .arg(format!("--storage.tsdb.path={}/data", tmp.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus: scripts/setup.sh --test installs it (Debian package prometheus)"),
    );
    wait_ok(&format!("{prom_url}/-/ready"), &mut prometheus).await;

    // Rates need two scrapes of each series; poll the checker until it passes or time is up.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut check = Command::new("python3");
    check
        .arg(repo.join("deploy/check_queries.py"))
        .args(["--prometheus", &prom_url])
        .args(["--gateway-metrics", &format!("{url}/metrics")])
        .arg("--dashboard")
        .arg(repo.join("deploy/grafana/dashboards/switchyard.json"));
    for r in rules.iter().filter(|r| !r.contains("alert")) {
        check.args(["--rules", r]);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut keep_up = 0;
    loop {
        // A request now and then keeps every rate window fresh.
        keep_up += 1;
        if keep_up % 5 == 0 {
            post(&url, "sk-team", ask("Hi.", false), None).await;
        }
        let out = tokio::task::spawn_blocking({
            let mut c = std::mem::replace(&mut check, Command::new("true"));
            move || {
                let out = c.output().expect("python3");
                (c, out)
            }
        })
        .await
        .expect("task");
        check = out.0;
        let text = String::from_utf8_lossy(&out.1.stdout).to_string()
            + &String::from_utf8_lossy(&out.1.stderr);
        if out.1.status.success() {
            println!("{text}");
            break;
        }
        assert!(
            !text.lines().any(|l| l.starts_with("UNKNOWN-METRIC")),
            "a query names a metric the gateway does not export:\n{text}"
        );
        assert!(Instant::now() < deadline, "queries without data:\n{text}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
