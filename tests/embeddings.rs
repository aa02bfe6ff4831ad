//! Embeddings on the box: a `kind: encoder` model answers `POST /v1/embeddings` in-process with
//! the sentence encoder (all-MiniLM-L6-v2, its real weights), in OpenAI's shape, without a call
//! upstream; driven over HTTP on loopback and by the official `openai` SDK.

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard::classifier::encoder::Encoder;

/// The standard policy (a cloud model on the fake upstream) with the encoder as `minilm`, and
/// again as `minilm-16`, whose inputs may be 16 tokens long at most.
async fn gateway(up: &FakeUpstream) -> TestGateway {
    let path = quoted(&encoder_path().display().to_string());
    let policy = PolicyBuilder::standard(&up.base("ok"))
        .model("minilm", &[("kind", "encoder"), ("path", &path)])
        .model(
            "minilm-16",
            &[
                ("kind", "encoder"),
                ("path", &path),
                ("limits", "{ context_tokens: 16 }"),
            ],
        )
        .render();
    start_gateway(&policy, KEY).await
}

async fn embed(gw: &TestGateway, body: Value) -> Reply {
    request(
        "POST",
        &format!("{}/v1/embeddings", gw.url),
        body.to_string(),
        &[("content-type", "application/json")],
    )
    .await
}

fn vectors(answer: &Value) -> Vec<Vec<f32>> {
    answer["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| serde_json::from_value(e["embedding"].clone()).expect("floats"))
                .collect()
        })
        .unwrap_or_default()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_embeds_on_the_box_as_the_sentence_encoder_does() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    // Of different lengths, so that batching by length reorders them.
    let texts = [
        "The cat sits on the mat by the open kitchen window",
        "A cat is sitting on a rug",
        "Quarterly revenue grew",
    ];
    let r = embed(&gw, json!({"model": "minilm", "input": texts})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-route"), "local");
    assert_eq!(r.header("x-switchyard-model"), "minilm");
    let answer = r.json();
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "minilm");
    let got = vectors(&answer);

    // Each input's own embedding, in input order, and its tokens counted.
    let encoder = Encoder::load(&encoder_path()).expect("encoder");
    let mut tokens = 0;
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(answer["data"][i]["index"], i);
        let ids = encoder.tokenize(text, 512).expect("tokens").ids;
        tokens += ids.len();
        let alone = &encoder.embed(&[&ids]).expect("embedding")[0];
        assert_eq!(got[i].len(), 384);
        let off = got[i]
            .iter()
            .zip(alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(off < 1e-5, "input {i} is {off} off its own embedding");
        assert!((dot(&got[i], &got[i]) - 1.0).abs() < 1e-4, "a unit vector");
    }
    assert_eq!(answer["usage"]["prompt_tokens"], tokens);
    assert_eq!(answer["usage"]["total_tokens"], tokens);
    // The two sentences about a cat are nearer each other than either is to revenue.
    assert!(dot(&got[0], &got[1]) > dot(&got[0], &got[2]) + 0.3);

    // base64: the same vectors' little-endian f32 bytes.
    let r = embed(
        &gw,
        json!({"model": "minilm", "input": texts, "encoding_format": "base64", "dimensions": 384}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    use base64::Engine as _;
    for (i, item) in r.json()["data"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(item["embedding"].as_str().expect("base64"))
            .expect("decodes");
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(floats, got[i], "input {i}");
    }

    // Settled on the box: its tokens, no cost, nothing upstream.
    assert_eq!(r.header("x-switchyard-cost-usd"), "0.00000000");
    let input = r#"switchyard_tokens_total{direction="input",model="minilm"}"#;
    assert_eq!(metric(&gw, input).await, 2.0 * tokens as f64);
    assert!(up.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_encoder_cannot_embed_is_refused_naming_the_field() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    let long = "word ".repeat(20);
    for (body, param, says) in [
        (
            json!({"model": "minilm", "input": [[1, 2, 3]]}),
            "input",
            "token ids",
        ),
        (
            json!({"model": "minilm", "input": "x", "dimensions": 256}),
            "dimensions",
            "384",
        ),
        (
            json!({"model": "minilm-16", "input": ["short", long]}),
            "input",
            "`input[1]` is 22 tokens long",
        ),
    ] {
        let r = embed(&gw, body.clone()).await;
        assert_eq!(
            r.status,
            400,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.json();
        assert_eq!(e["error"]["param"], param, "{body}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    // A chat sent to the encoder by name.
    let r = chat(&gw, ask("minilm", "hello"), &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["param"], "model");
    assert!(up.recorded().is_empty());
    // And it goes on serving.
    let r = embed(&gw, json!({"model": "minilm-16", "input": "short"})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_embeds_on_the_box() {
    let up = FakeUpstream::start().await;
    let gw = gateway(&up).await;
    sdk_script(
        "check_openai_embeddings.py",
        vec![format!("{}/v1", gw.url), "minilm".into(), "local".into()],
    )
    .await;
    assert!(up.recorded().is_empty());
}
