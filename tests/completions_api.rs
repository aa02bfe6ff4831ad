//! Legacy completions (`/v1/completions`): the official `openai` Python SDK's
//! `completions.create`, JSON and stream, against the real on-box model (which continues the
//! prompt as it is, without its chat template); a cloud model that does not declare
//! `completions: true` is passed over (tests/native_dialects.rs has the ones that do).

mod common;

use common::*;

async fn sdk(gw: &TestGateway, model: &str, route: &str) {
    let args = vec![
        format!("{}/v1", gw.url),
        model.to_string(),
        route.to_string(),
    ];
    sdk_script("check_openai_completions.py", args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_on_box_model_continues_a_raw_prompt() {
    let gw = start_gateway(&smollm2_policy(), &[]).await;
    sdk(&gw, "local", "local").await;
    // The prompt's own tokens only: no chat template around them (which adds 20 and more).
    let r = request(
        "POST",
        &format!("{}/v1/completions", gw.url),
        serde_json::json!({"model": "local", "prompt": "The capital of France is", "max_tokens": 2}).to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    let prompt_tokens = r.json()["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    assert!((1..=8).contains(&prompt_tokens), "{prompt_tokens}");
    // An empty prompt leaves nothing to continue: the client's error, named, not the box's.
    let r = request(
        "POST",
        &format!("{}/v1/completions", gw.url),
        serde_json::json!({"model": "local", "prompt": "", "max_tokens": 2}).to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["param"], "prompt");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("empty"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_model_that_does_not_serve_completions_is_passed_over() {
    // The standard route: `cloud` (chat only), falling back to the box, which takes it.
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::standard(&up.base("ok")).render();
    let gw = start_gateway(&policy, &[("CLOUD_KEY", "sk-upstream")]).await;
    let r = request(
        "POST",
        &format!("{}/v1/completions", gw.url),
        serde_json::json!({"model": "auto", "prompt": "The capital of France is", "max_tokens": 8})
            .to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert_eq!(
        r.header("x-switchyard-fallback"),
        "cloud; reason=lacks_completions"
    );
    assert_eq!(r.json()["object"], "text_completion");
    assert!(up.recorded().is_empty(), "nothing went upstream");
}
