//! The OpenAI Responses dialect (`/v1/responses`): the official `openai` Python SDK's
//! `responses.create` and `responses.stream` against a cloud route (a fake OpenAI upstream,
//! function tools included) and against the real on-box model.

mod common;

use common::*;
use serde_json::json;

async fn sdk(gw: &TestGateway, mode: &str) {
    let args = vec![format!("{}/v1", gw.url), mode.to_string()];
    sdk_script("check_openai_responses.py", args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_speaks_responses_to_a_cloud_route_tools_included() {
    let up = FakeUpstream::start().await;
    let policy = PolicyBuilder::standard(&up.base("ok"))
        .cloud("tooler", &up.base("tool"))
        .rule("tool", "{ tags: [tool] }", "tooler", &[])
        .render();
    let gw = start_gateway(&policy, &[("CLOUD_KEY", "sk-upstream")]).await;
    sdk(&gw, "cloud").await;
    // The function call and its output went upstream as a chat turn and a tool message.
    let last = up.recorded().last().cloned().expect("a request").body;
    assert_eq!(
        last["messages"][1]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        last["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_fake_1", "content": "18 C, sunny"})
    );
    let requests =
        r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="200"}"#;
    assert!(metric(&gw, requests).await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_speaks_responses_to_the_on_box_model() {
    let gw = start_gateway(&smollm2_policy(), &[]).await;
    sdk(&gw, "local").await;
}
