//! The Anthropic Messages dialect (`/v1/messages`): the official `anthropic` Python SDK against
//! a cloud route (a fake OpenAI upstream, tools included) and against the real on-box model; a
//! Claude Code-shaped request; and the same question asked in both dialects costing, counting
//! and logging the same.

mod common;

use common::*;
use serde_json::{json, Value};

/// Runs tests/sdk/check_anthropic_sdk.py against the gateway.
async fn sdk(gw: &TestGateway, key: &str, mode: &str) {
    let args = vec![gw.url.clone(), key.to_string(), mode.to_string()];
    sdk_script("check_anthropic_sdk.py", args).await;
}

const KEY: &str = "sk-gateway-anthropic";

/// The standard policy (cloud on the fake upstream, falling back to the echo engine), a tenant
/// whose key is [`KEY`], and a rule for the tag `tool` to a model that calls a tool.
async fn cloud_gateway(
    up: &FakeUpstream,
    extra: impl Fn(PolicyBuilder) -> PolicyBuilder,
) -> TestGateway {
    let policy = extra(
        PolicyBuilder::standard(&up.base("ok"))
            .cloud("tooler", &up.base("tool"))
            .model_field(
                "tooler",
                "price",
                "{ input_per_million: 1000000, output_per_million: 2000000 }",
            )
            .rule("tool", "{ tags: [tool] }", "tooler", &[])
            .tenant("team", KEY),
    )
    .render();
    start_gateway(&policy, &[("CLOUD_KEY", "sk-upstream")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_speaks_to_a_cloud_route_tools_included() {
    let up = FakeUpstream::start().await;
    let gw = cloud_gateway(&up, |p| p).await;
    sdk(&gw, KEY, "cloud").await;
    // The tool result went upstream as an OpenAI tool message answering the call.
    let last = up.recorded().last().cloned().expect("a request");
    let msgs = last.body["messages"].as_array().expect("messages").clone();
    assert_eq!(msgs[1]["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(
        msgs[2],
        json!({"role": "tool", "tool_call_id": "call_fake_1", "content": "18 C, sunny"})
    );
    assert_eq!(
        last.body["tools"][0]["function"]["parameters"]["required"],
        json!(["city"])
    );
    assert!(
        last.headers.get("x-api-key").is_none(),
        "the gateway key stays here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_speaks_to_the_on_box_model() {
    let gw = start_gateway(&smollm2_policy(), &[]).await;
    sdk(&gw, "unused-on-an-open-gateway", "local").await;
    // count_tokens is exact on the box: the prompt the model then reads, template included.
    let ask = json!({"model": "local", "system": "Be brief.", "messages": [{"role": "user", "content": "Name a river."}]});
    let post = |path: &str, body: Value| {
        let url = format!("{}{path}", gw.url);
        async move {
            request(
                "POST",
                &url,
                body.to_string(),
                &[("content-type", "application/json")],
            )
            .await
        }
    };
    let counted =
        post("/v1/messages/count_tokens", ask.clone()).await.json()["input_tokens"].as_u64();
    let mut answer = ask;
    answer["max_tokens"] = json!(2);
    let used = post("/v1/messages", answer).await.json()["usage"]["input_tokens"].as_u64();
    assert!(counted.is_some_and(|n| n > 5), "{counted:?}");
    assert_eq!(counted, used);
}

/// Sends `body` to `/v1/messages` with the gateway key in `x-api-key` and `headers`.
async fn messages(gw: &TestGateway, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut h = vec![("x-api-key", KEY)];
    h.extend_from_slice(headers);
    post_json(gw, "/v1/messages", body, &h).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_shaped_request_is_translated_and_streamed_back() {
    let up = FakeUpstream::start().await;
    let gw = cloud_gateway(&up, |p| p).await;
    // A coding agent's turn: system blocks with cache_control, tools, and a long conversation
    // of tool calls and their results.
    let mut turns = vec![json!({"role": "user", "content": "Find and fix the failing test."})];
    for i in 0..12 {
        turns.push(json!({"role": "assistant", "content": [
            {"type": "text", "text": format!("Step {i}: reading a file.")},
            {"type": "tool_use", "id": format!("toolu_{i}"), "name": "Read", "input": {"file_path": format!("src/f{i}.rs")}}]}));
        turns.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": format!("toolu_{i}"), "content": [{"type": "text", "text": format!("fn f{i}() {{}}")}]}]}));
    }
    let body = json!({
        "model": "auto", "max_tokens": 4096, "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Work in /repo.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}},
                  {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}],
        "metadata": {"user_id": "user_abc"},
        "messages": turns,
    });
    let r = messages(
        &gw,
        &body,
        &[
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "claude-code-20250219"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), "text/event-stream");
    let text = String::from_utf8_lossy(&r.body).to_string();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(&kinds[kinds.len() - 2..], ["message_delta", "message_stop"]);
    assert!(
        kinds.contains(&"content_block_delta") && kinds.contains(&"ping"),
        "{kinds:?}"
    );
    assert!(
        text.contains(r#""text_delta""#) && text.contains(r#""output_tokens":4"#),
        "{text}"
    );
    // Upstream: one system message, the 12 calls each answered by a tool message, the tools.
    let sent = up.recorded().last().cloned().expect("a request").body;
    let msgs = sent["messages"].as_array().expect("messages");
    assert_eq!(
        msgs[0],
        json!({"role": "system", "content": "You are Claude Code.\n\nWork in /repo."})
    );
    assert_eq!(msgs.len(), 2 + 2 * 12);
    assert_eq!(msgs.iter().filter(|m| m["role"] == "tool").count(), 12);
    assert_eq!(msgs[3]["tool_call_id"], "toolu_0");
    assert_eq!(sent["tools"].as_array().map(Vec::len), Some(2));
    assert_eq!(sent["user"], "user_abc");
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_dialects_cost_count_and_log_the_same() {
    let up = FakeUpstream::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = tmp.path().join("requests.jsonl");
    let gw = cloud_gateway(&up, |p| {
        p.global_budget("{ daily_usd: 1000 }")
            .on_exhausted("reject")
            .recording(&log, Some("keep"))
    })
    .await;
    let auth = format!("Bearer {KEY}");
    let openai = chat(
        &gw,
        json!({"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
        &[("authorization", &auth)],
    )
    .await;
    let anthropic = messages(
        &gw,
        &json!({"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    )
    .await;
    assert_eq!(
        (openai.status.as_u16(), anthropic.status.as_u16()),
        (200, 200)
    );
    for h in [
        "x-switchyard-cost-usd",
        "x-switchyard-model",
        "x-switchyard-rule",
        "x-switchyard-route",
    ] {
        assert_eq!(openai.header(h), anthropic.header(h), "{h}");
    }
    let a = anthropic.json();
    assert_eq!(a["usage"]["input_tokens"], 21);
    assert_eq!(a["usage"]["output_tokens"], 4);
    assert_eq!(a["content"][0]["text"], "Hello from the cloud");
    // $29 each: 21 prompt tokens at $1 and 4 answer tokens at $2.
    let cost = r#"switchyard_cost_usd_total{model="cloud",tenant="team"}"#;
    assert_eq!(metric(&gw, cost).await, 58.0);
    let ok =
        r#"switchyard_requests_total{model="cloud",route="cloud",rule="default",status="200"}"#;
    assert_eq!(metric(&gw, ok).await, 2.0);
    let left = r#"switchyard_budget_remaining_usd{period="day",tenant="*"}"#;
    assert_eq!(metric(&gw, left).await, 1000.0 - 58.0);
    // The log's writer is a background thread: wait for both rows.
    let rows = log_rows_when_ready(&log, 2);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["cost_usd"], rows[1]["cost_usd"]);
    assert_eq!(rows[0]["usage"], rows[1]["usage"]);
    assert_eq!(rows[0]["body"]["messages"], rows[1]["body"]["messages"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_back_in_anthropics_shape_and_status() {
    let up = FakeUpstream::start().await;
    let gw = cloud_gateway(&up, |p| {
        p.cloud("busy", &up.base("status-503"))
            .model_field("busy", "retries", "{ max_retries: 0 }")
            .rule("busy", "{ tags: [busy] }", "busy", &[])
            .tenant_rate_limit("team", "{ requests_per_minute: 2 }")
    })
    .await;
    let ask =
        json!({"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let shape = |r: &Reply, status: u16, kind: &str| {
        assert_eq!(
            r.status.as_u16(),
            status,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    };
    // An upstream that is unavailable: Anthropic's overloaded, which its SDKs retry.
    let r = messages(&gw, &ask, &[("x-switchyard-tags", "busy")]).await;
    shape(&r, 529, "overloaded_error");
    // No key, a bad key: before the body is read.
    let r = request(
        "POST",
        &format!("{}/v1/messages", gw.url),
        ask.to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    shape(&r, 401, "authentication_error");
    let r = messages(&gw, &json!({"model": "auto", "messages": []}), &[]).await;
    shape(&r, 400, "invalid_request_error");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("max_tokens"));
    // Over the tenant's rate (2 a minute; the refused translation took none): 429, Retry-After.
    let _ = messages(&gw, &ask, &[]).await;
    let r = messages(&gw, &ask, &[]).await;
    shape(&r, 429, "rate_limit_error");
    assert!(
        r.header("retry-after").parse::<u64>().is_ok(),
        "{:?}",
        r.headers
    );
    // The method and an unknown path under /v1/messages.
    let r = request(
        "GET",
        &format!("{}/v1/messages", gw.url),
        "",
        &[("x-api-key", KEY)],
    )
    .await;
    shape(&r, 405, "invalid_request_error");
}

/// `GET /v1/models` is shared by both SDKs: with `anthropic-version` (every Anthropic SDK sends
/// it) the list is Anthropic's Models API, paged by `limit`, `after_id` and `before_id`, and its
/// errors (a bad page, an unknown model, a wrong key) are in Anthropic's shape; without, it is
/// OpenAI's, as before.
#[tokio::test]
async fn the_models_list_speaks_anthropic_to_an_anthropic_client() {
    let up = FakeUpstream::start().await;
    let gw = cloud_gateway(&up, |p| p).await;
    let get = |path: &str, key: &str, anthropic: bool| {
        let url = format!("{}{path}", gw.url);
        let key = key.to_string();
        async move {
            let mut h = vec![("x-api-key", key.as_str())];
            if anthropic {
                h.push(("anthropic-version", "2023-06-01"));
            }
            request("GET", &url, "", &h).await
        }
    };
    let openai = get("/v1/models", KEY, false).await;
    assert_eq!(openai.status, 200);
    let openai = openai.json();
    assert_eq!(openai["object"], "list");
    let ids: Vec<Value> = openai["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(
        ids,
        json!(["auto", "local", "local-echo", "cloud", "tooler"])
            .as_array()
            .unwrap()
            .clone()
    );

    let all = get("/v1/models", KEY, true).await;
    assert_eq!(all.status, 200);
    let all = all.json();
    assert_eq!(all["has_more"], false);
    assert_eq!(all["first_id"], "auto");
    assert_eq!(all["last_id"], "tooler");
    assert_eq!(
        all["data"][3],
        json!({"type": "model", "id": "cloud", "display_name": "cloud", "created_at": "1970-01-01T00:00:00Z"})
    );
    // Paged forwards two at a time, the pages are the whole list in order.
    let mut paged = vec![];
    let mut query = "limit=2".to_string();
    loop {
        let page = get(&format!("/v1/models?{query}"), KEY, true).await.json();
        let data = page["data"].as_array().expect("data").clone();
        assert!(data.len() <= 2, "{page}");
        paged.extend(data.iter().map(|m| m["id"].clone()));
        if page["has_more"] != true {
            break;
        }
        query = format!(
            "limit=2&after_id={}",
            page["last_id"].as_str().expect("last_id")
        );
    }
    assert_eq!(paged, ids);
    let before = get("/v1/models?limit=2&before_id=cloud", KEY, true)
        .await
        .json();
    assert_eq!(before["data"][0]["id"], "local");
    assert_eq!(before["last_id"], "local-echo");
    assert_eq!(before["has_more"], true);

    let one = get("/v1/models/tooler", KEY, true).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["type"], "model");
    assert_eq!(
        get("/v1/models/tooler", KEY, false).await.json()["object"],
        "model"
    );

    for (path, key, status, kind) in [
        ("/v1/models?limit=0", KEY, 400, "invalid_request_error"),
        (
            "/v1/models?after_id=nope",
            KEY,
            400,
            "invalid_request_error",
        ),
        ("/v1/models/nope", KEY, 404, "not_found_error"),
        ("/v1/models", "sk-wrong", 401, "authentication_error"),
    ] {
        let r = get(path, key, true).await;
        assert_eq!(r.status, status, "{path}");
        let v = r.json();
        assert_eq!(v["type"], "error", "{path}: {v}");
        assert_eq!(v["error"]["type"], kind, "{path}: {v}");
        // Without the header, the same refusal is OpenAI's.
        let r = get(path, key, false).await;
        if status != 400 {
            assert_eq!(r.status, status, "{path}");
            assert!(r.json()["error"]["message"].is_string(), "{path}");
        }
    }
}
