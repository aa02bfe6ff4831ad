//! Routing by every policy condition, over HTTP, plus the model list and virtual models.

mod common;

use common::*;
use serde_json::json;

/// One rule per condition, each routing to the cloud; plain `auto` chat stays on the box.
fn routing_policy(base_url: &str) -> String {
    PolicyBuilder::standard(base_url)
        .tenant("team-a", "key-a")
        .tenant("team-b", "key-b")
        .rule("by-tools", "{ has_tools: true }", "cloud", &[])
        .rule("by-images", "{ has_images: true }", "cloud", &[])
        .rule(
            "by-length",
            "{ prompt_tokens: { above: 200 } }",
            "cloud",
            &[],
        )
        .rule("by-messages", "{ messages: { above: 3 } }", "cloud", &[])
        .rule("by-tag", "{ tags: [premium] }", "cloud", &[])
        .rule("by-tenant", "{ tenant: [team-b] }", "cloud", &[])
        .rule("chat-stays-local", "{ model: [auto] }", "local-echo", &[])
        .render()
}

async fn gateway() -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&routing_policy(&up.base("ok")), KEY).await;
    (up, gw)
}

async fn rule(
    gw: &TestGateway,
    body: serde_json::Value,
    headers: &[(&str, &str)],
) -> (String, String) {
    let mut h = vec![("authorization", "Bearer key-a")];
    h.extend_from_slice(headers);
    let r = chat(gw, body, &h).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    (
        r.header("x-switchyard-rule").to_string(),
        r.header("x-switchyard-route").to_string(),
    )
}

#[tokio::test]
async fn each_condition_routes() {
    let (_up, gw) = gateway().await;
    assert_eq!(
        rule(&gw, ask("auto", "hi"), &[]).await,
        ("chat-stays-local".into(), "local".into())
    );

    let mut tools = ask("auto", "hi");
    tools["tools"] =
        json!([{"type": "function", "function": {"name": "lookup", "parameters": {}}}]);
    assert_eq!(rule(&gw, tools, &[]).await.0, "by-tools");

    let image = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
    assert_eq!(rule(&gw, image, &[]).await.0, "by-images");

    assert_eq!(
        rule(&gw, ask("auto", &"long text ".repeat(100)), &[])
            .await
            .0,
        "by-length"
    );

    let many = json!({"model": "auto", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]});
    assert_eq!(rule(&gw, many, &[]).await.0, "by-messages");

    assert_eq!(
        rule(
            &gw,
            ask("auto", "hi"),
            &[("x-switchyard-tags", "x, premium")]
        )
        .await
        .0,
        "by-tag"
    );

    let r = chat(&gw, ask("auto", "hi"), &[("authorization", "Bearer key-b")]).await;
    assert_eq!(r.header("x-switchyard-rule"), "by-tenant");
}

#[tokio::test]
async fn requested_models_virtual_and_unknown() {
    let (_up, gw) = gateway().await;
    // `cloud` by name: its own rule.
    assert_eq!(
        rule(&gw, ask("cloud", "hi"), &[]).await,
        ("cloud-on-request".into(), "cloud".into())
    );
    // `local` forces the on-box model whatever the conditions.
    let r = chat(
        &gw,
        ask("local", &"long text ".repeat(100)),
        &[("authorization", "Bearer key-a")],
    )
    .await;
    assert_eq!(
        (
            r.header("x-switchyard-route"),
            r.header("x-switchyard-rule")
        ),
        ("local", "requested")
    );
    // A model by name that no rule lists goes to itself.
    let r = chat(
        &gw,
        ask("local-echo", "hi"),
        &[("authorization", "Bearer key-a")],
    )
    .await;
    assert_eq!(
        (
            r.header("x-switchyard-model"),
            r.header("x-switchyard-rule")
        ),
        ("local-echo", "requested")
    );
    // Anything else is a 404.
    let r = chat(
        &gw,
        ask("gpt-9", "hi"),
        &[("authorization", "Bearer key-a")],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "model_not_found");
    assert_eq!(r.json()["error"]["param"], "model");
}

#[tokio::test]
async fn gateway_keys_are_required_and_never_forwarded() {
    let (up, gw) = gateway().await;
    for auth in [None, Some("Bearer wrong"), Some("key-a"), Some("Bearer ")] {
        let h: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        let r = chat(&gw, ask("cloud", "hi"), &h).await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.error_code(), "invalid_api_key");
        for path in ["/v1/models", "/v1/models/auto", "/v1/unknown", "/anything"] {
            let r = request("GET", &format!("{}{path}", gw.url), "", &h).await;
            assert_eq!(r.status, 401, "{path} {auth:?}");
        }
    }
    assert!(up.recorded().is_empty());
    // Health, readiness and metrics stay open for probes and scrapers.
    assert_eq!(
        request("GET", &format!("{}/healthz", gw.url), "", &[])
            .await
            .status,
        200
    );
    // Tenants label the cost metrics, never keys.
    chat(
        &gw,
        ask("cloud", "hi"),
        &[("authorization", "Bearer key-b")],
    )
    .await;
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_cost_usd_total{model="cloud",tenant="team-b"}"#
        )
        .await,
        29.0
    );
    let text = request("GET", &format!("{}/metrics", gw.url), "", &[]).await;
    let text = String::from_utf8_lossy(&text.body);
    assert!(!text.contains("key-b") && !text.contains("sk-upstream-secret"));
}

#[tokio::test]
async fn models_lists_virtual_and_policy_models() {
    let (_up, gw) = gateway().await;
    let r = request(
        "GET",
        &format!("{}/v1/models", gw.url),
        "",
        &[("authorization", "Bearer key-a")],
    )
    .await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["auto", "local", "local-echo", "cloud"]);
    assert_eq!(r.json()["object"], "list");
}
