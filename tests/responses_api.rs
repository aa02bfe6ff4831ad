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

/// The gateway stores no responses: every path of a stored response (retrieve, delete, cancel,
/// its input items) is a 404 in OpenAI's shape that says so, whatever the method, and names
/// the id it was asked for; the gateway's own Responses paths are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_are_a_404_that_says_the_gateway_keeps_none() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(
        &PolicyBuilder::standard(&up.base("ok")).render(),
        &[("CLOUD_KEY", "sk-upstream")],
    )
    .await;
    for (method, path) in [
        ("GET", "/v1/responses/resp_123"),
        ("DELETE", "/v1/responses/resp_123"),
        ("POST", "/v1/responses/resp_123/cancel"),
        ("GET", "/v1/responses/resp_123/input_items"),
    ] {
        let r = request(method, &format!("{}{path}", gw.url), "", &[]).await;
        assert_eq!(r.status, 404, "{method} {path}");
        let e = r.json();
        assert_eq!(e["error"]["code"], "not_found", "{method} {path}: {e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("no response `resp_123` here")
                && message.contains("keeps no responses"),
            "{method} {path}: {message}"
        );
    }
    // A path that names no response is still the plain 404.
    for path in ["/v1/responsesx", "/v1/responses/", "/v1/responses//cancel"] {
        let r = request("GET", &format!("{}{path}", gw.url), "", &[]).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains("keeps no responses"),
            "{path}"
        );
    }
    // The compaction path is still served (here refused for its body, not its path).
    let r = request(
        "POST",
        &format!("{}/v1/responses/compact", gw.url),
        "{}",
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(up.recorded().is_empty(), "nothing went upstream");
}
