//! Metrics after real traffic: values that follow from the requests, and the exposition
//! checked by `promtool check metrics`.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

/// promtool from `SWITCHYARD_PROMTOOL` or the PATH (scripts/test.sh installs it).
fn promtool() -> String {
    std::env::var("SWITCHYARD_PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

#[tokio::test]
async fn metrics_after_traffic_are_right_and_valid() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(
        &PolicyBuilder::standard(&up.base("ok"))
            .rule("local-tag", "{ tags: [local] }", "local-echo", &[])
            .render(),
        KEY,
    )
    .await;
    // cloud, JSON: 21 in, 4 out.
    assert_eq!(chat(&gw, ask("auto", "one"), &[]).await.status, 200);
    // cloud, stream: 21 in, 4 out (from the upstream's usage chunk).
    let mut s = ask("auto", "two");
    s["stream"] = json!(true);
    assert_eq!(chat(&gw, s, &[]).await.status, 200);
    // local: "a b c" is 3 prompt tokens, "echo: a b c" 4 output tokens.
    let r = chat(&gw, ask("auto", "a b c"), &[("x-switchyard-tags", "local")]).await;
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert_eq!(
        r.header("x-switchyard-cost-usd").parse::<f64>().unwrap(),
        0.0
    );
    // a client error.
    assert_eq!(chat(&gw, ask("nope", "x"), &[]).await.status, 404);
    // What the process runs: its version and the kernels it chose for this CPU.
    let path = switchyard::cpu::chosen();
    let info = format!(
        r#"switchyard_build_info{{block_kernel="{}",kernels="{path}",version="{}"}}"#,
        switchyard::local::block_kernel_name(path),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&gw, &info).await, 1.0);

    let m = |s: &'static str| metric(&gw, s);
    assert_eq!(
        m(r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="200"}"#)
            .await,
        2.0
    );
    assert_eq!(m(r#"switchyard_requests_total{model="local-echo",route="local",rule="local-tag",status="200"}"#).await, 1.0);
    assert_eq!(
        m(r#"switchyard_requests_total{model="none",route="none",rule="none",status="404"}"#).await,
        1.0
    );
    assert_eq!(
        m(r#"switchyard_tokens_total{direction="input",model="cloud"}"#).await,
        42.0
    );
    assert_eq!(
        m(r#"switchyard_tokens_total{direction="output",model="local-echo"}"#).await,
        4.0
    );
    assert_eq!(
        m(r#"switchyard_cost_usd_total{model="cloud",tenant="anonymous"}"#).await,
        58.0
    );
    // The local answer would have cost 3 * $1 + 4 * $2 on the reference (cloud) model.
    assert_eq!(
        m(r#"switchyard_savings_usd_total{tenant="anonymous"}"#).await,
        11.0
    );
    assert_eq!(
        m(r#"switchyard_request_duration_seconds_count{route="cloud"}"#).await,
        2.0
    );
    assert_eq!(
        m(r#"switchyard_time_to_first_token_seconds_count{route="cloud"}"#).await,
        2.0
    );
    assert!(m("switchyard_gateway_overhead_seconds_count").await >= 3.0);

    let text = request("GET", &format!("{}/metrics", gw.url), "", &[]).await;
    assert_eq!(
        text.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: run scripts/test.sh, which installs it (Debian package prometheus)");
    child.stdin.take().unwrap().write_all(&text.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
