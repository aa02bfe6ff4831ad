//! The official `openai` Python SDK against the gateway, with only the base URL changed.

mod common;

use common::*;
use std::process::Command;

/// The Python with the `openai` package: `SWITCHYARD_PYTHON`, else the venv scripts/test.sh makes.
fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/switchyard/venv/bin/python")
    })
}

/// Runs one SDK script (under tests/sdk/) against the gateway's `/v1` and checks it printed ok.
async fn run_sdk_script(script: &str, gw: &TestGateway) {
    let script = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let base = format!("{}/v1", gw.url);
    let interpreter = python();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&interpreter).arg(script).arg(base).output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!(
            "cannot run {}: {e}; scripts/test.sh sets up the venv with the openai SDK",
            python()
        )
    });
    assert!(
        out.status.success(),
        "SDK check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_works_unchanged() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&PolicyBuilder::standard(&up.base("ok")).render(), KEY).await;
    run_sdk_script("check_openai_sdk.py", &gw).await;
}

/// The same SDK against the real on-box model (SmolLM2) as `model: "local"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_works_with_the_on_box_model() {
    let policy = PolicyBuilder::new()
        .model(
            "smol",
            &[
                ("kind", "local"),
                ("path", &quoted(&smollm2_path().display().to_string())),
            ],
        )
        .default_route("smol", &[])
        .render();
    let gw = start_gateway(&policy, &[]).await;
    run_sdk_script("check_openai_sdk_local.py", &gw).await;
}

/// The SDK retries a 429 twice by itself; the gateway then tries each call once, so the
/// upstream sees three calls, not nine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_retries_are_not_multiplied_by_the_gateways() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::new()
        .cloud("cloud", &up.base("limited-100"))
        .model_field(
            "cloud",
            "retries",
            "{ max_retries: 2, initial_backoff_ms: 10, max_backoff_ms: 2000 }",
        )
        .model_field("cloud", "circuit_breaker", "{ enabled: false }")
        .default_route("cloud", &[])
        .render();
    let gw = start_gateway(&policy, KEY).await;
    run_sdk_script("check_openai_sdk_retries.py", &gw).await;
    assert_eq!(up.recorded().len(), 3);
}
