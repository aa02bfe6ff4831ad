//! Malformed requests get the matching 4xx with an OpenAI error body, and the server keeps serving.

mod common;

use common::*;
use switchyard::server::Limits;

async fn gateway() -> TestGateway {
    let up = FakeUpstream::start().await;
    start_gateway_with(
        &policy(&up.base("ok"), ""),
        KEY,
        Limits {
            max_body_bytes: 64 * 1024,
        },
    )
    .await
}

async fn post(
    gw: &TestGateway,
    content_type: Option<&str>,
    body: impl Into<bytes::Bytes>,
) -> Reply {
    let h: Vec<(&str, &str)> = content_type
        .map(|c| vec![("content-type", c)])
        .unwrap_or_default();
    request("POST", &format!("{}/v1/chat/completions", gw.url), body, &h).await
}

async fn still_serving(gw: &TestGateway) {
    let r = chat(gw, ask("auto", "still there?"), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let gw = gateway().await;
    let json = Some("application/json");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed JSON", b"{\"model\": \"auto\", ".to_vec(), "not valid JSON"),
        ("not an object", b"[1, 2]".to_vec(), "JSON object"),
        ("non-UTF-8", b"{\"model\": \"\xff\xfe\"}".to_vec(), "UTF-8"),
        ("missing messages", br#"{"model": "auto"}"#.to_vec(), "messages"),
        ("empty messages", br#"{"model": "auto", "messages": []}"#.to_vec(), "at least one"),
        ("messages wrong type", br#"{"model": "auto", "messages": "hi"}"#.to_vec(), "must be an array"),
        ("unknown role", br#"{"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}"#.to_vec(), "wizard"),
        ("model wrong type", br#"{"model": 7, "messages": [{"role": "user", "content": "x"}]}"#.to_vec(), "must be a string"),
        ("missing model", br#"{"messages": [{"role": "user", "content": "x"}]}"#.to_vec(), "model"),
        ("content wrong type", br#"{"model": "auto", "messages": [{"role": "user", "content": {"a": 1}}]}"#.to_vec(), "content"),
        ("negative max_tokens", br#"{"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}"#.to_vec(), "max_tokens"),
        ("stream wrong type", br#"{"model": "auto", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#.to_vec(), "stream"),
        ("temperature out of range", br#"{"model": "auto", "messages": [{"role": "user", "content": "x"}], "temperature": 9}"#.to_vec(), "temperature"),
        ("empty body", Vec::new(), "not valid JSON"),
    ];
    for (name, body, needle) in cases {
        let r = post(&gw, json, body).await;
        assert_eq!(r.status, 400, "{name}");
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{name}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{name}: {msg}");
    }
    still_serving(&gw).await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let gw = gateway().await;
    let big = format!(
        r#"{{"model": "auto", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(70 * 1024)
    );
    let r = post(&gw, Some("application/json"), big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "request_too_large");
    still_serving(&gw).await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let gw = gateway().await;
    let body = ask("auto", "x").to_string();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = post(&gw, ct, body.clone()).await;
        assert_eq!(r.status, 415, "{ct:?}");
        assert_eq!(r.error_code(), "unsupported_media_type");
    }
    let r = post(&gw, Some("application/json; charset=utf-8"), body).await;
    assert_eq!(r.status, 200, "parameters of the JSON type are fine");
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let gw = gateway().await;
    let r = request("GET", &format!("{}/v1/chat/completions", gw.url), "", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "POST");
    assert_eq!(r.error_code(), "method_not_allowed");
    let r = request("DELETE", &format!("{}/v1/models", gw.url), "", &[]).await;
    assert_eq!(r.status, 405);
    let r = request(
        "POST",
        &format!("{}/v1/embeddings", gw.url),
        "{}",
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    still_serving(&gw).await;
}
