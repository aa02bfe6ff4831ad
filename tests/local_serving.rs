//! The on-box route with the real SmolLM2 weights, through the HTTP API: answers streamed and
//! not, determinism, seeds, stop strings, max_tokens, usage, cancellation, a full queue, batching,
//! and long prompts run in pieces beside running streams.

mod common;

use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use switchyard::api::Role;
use switchyard::local::LocalModel;

/// A policy with the real SmolLM2 as `smol` (`workers` decoded together, `queue` waiting) and
/// the fake cloud as `cloud`; `auto` goes to `smol`, spilling to `cloud`.
fn local_policy_with(cloud_base: &str, workers: usize, queue: usize) -> String {
    PolicyBuilder::new()
        .model(
            "smol",
            &[
                ("kind", "local"),
                ("path", &quoted(&smollm2_path().display().to_string())),
                ("workers", &workers.to_string()),
                ("queue", &queue.to_string()),
                ("limits", "{ max_output_tokens: 4000 }"),
            ],
        )
        .cloud("cloud", cloud_base)
        .model_field(
            "cloud",
            "price",
            "{ input_per_million: 1, output_per_million: 2 }",
        )
        .default_route("smol", &["cloud"])
        .render()
}

/// One worker, one waiting request.
fn local_policy(cloud_base: &str) -> String {
    local_policy_with(cloud_base, 1, 1)
}

fn greedy(model: &str, text: &str, max_tokens: u64) -> Value {
    json!({"model": model, "temperature": 0, "max_tokens": max_tokens,
           "messages": [{"role": "system", "content": "You are a concise assistant."},
                        {"role": "user", "content": text}]})
}

fn content(reply: &Reply) -> String {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answer_greedy_is_deterministic_with_exact_usage() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_policy(&up.base("ok")), KEY).await;
    let body = greedy("local", "Name three primary colors.", 24);
    let a = chat(&gw, body.clone(), &[]).await;
    let b = chat(&gw, body, &[]).await;
    assert_eq!(a.header("x-switchyard-route"), "local");
    assert_eq!(a.header("x-switchyard-model"), "smol");
    let (ca, cb) = (content(&a), content(&b));
    assert!(!ca.trim().is_empty(), "an answer: {}", a.json());
    assert_eq!(ca, cb, "greedy decoding gives the same answer twice");
    let v = a.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "smol");

    // Usage counts are the tokenizer's: the rendered prompt, and the generated tokens.
    let model = LocalModel::load(&smollm2_path(), None).unwrap();
    let prompt = model
        .prompt(&[
            (Role::System, "You are a concise assistant.".into()),
            (Role::User, "Name three primary colors.".into()),
        ])
        .unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len() as u64);
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion > 0 && completion <= 24);
    assert_eq!(
        v["usage"]["total_tokens"].as_u64().unwrap(),
        prompt.len() as u64 + completion
    );
    if v["choices"][0]["finish_reason"] == "length" {
        assert_eq!(completion, 24);
    }
    // Re-encoding the answer gives (about) the generated token count.
    let reencoded = switchyard::local::tokenizer::encode(&model.tokenizer, &ca)
        .unwrap()
        .len() as u64;
    assert!(
        reencoded.abs_diff(completion) <= 2,
        "{reencoded} vs {completion}"
    );
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_tokens_total{direction="input",model="smol"}"#
        )
        .await,
        2.0 * prompt.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_seed_and_stop_strings() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_policy(&up.base("ok")), KEY).await;

    // max_tokens: exactly that many tokens, finish_reason length.
    let mut body = greedy("local", "Write a long story about a dragon.", 5);
    body["ignore_eos"] = json!(true);
    let r = chat(&gw, body, &[]).await;
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 5);

    // The same seed gives the same sample; temperature 1 samples.
    let cats = |temperature: f64, seed: Option<u64>| {
        let mut body = json!({"model": "local", "temperature": temperature, "top_p": 0.95, "max_tokens": 20,
               "messages": [{"role": "user", "content": "Tell me something about cats."}]});
        if let Some(seed) = seed {
            body["seed"] = json!(seed);
        }
        body
    };
    let s1 = content(&chat(&gw, cats(1.0, Some(7)), &[]).await);
    let s2 = content(&chat(&gw, cats(1.0, Some(7)), &[]).await);
    assert_eq!(s1, s2, "same seed, same output");
    // Other seeds draw other samples (a sampler that ignored the seed, or was always greedy,
    // would give one answer for all four).
    let mut samples = std::collections::BTreeSet::from([s1]);
    for seed in [8, 9, 10] {
        samples.insert(content(&chat(&gw, cats(1.0, Some(seed)), &[]).await));
    }
    assert!(samples.len() >= 2, "four seeds, one answer: {samples:?}");
    // Temperature 0 is greedy: the seed makes no difference.
    let greedy_answer = content(&chat(&gw, cats(0.0, None), &[]).await);
    for seed in [7, 8] {
        assert_eq!(
            content(&chat(&gw, cats(0.0, Some(seed)), &[]).await),
            greedy_answer,
            "temperature 0 with seed {seed}"
        );
    }
    assert!(
        samples.iter().any(|s| *s != greedy_answer),
        "temperature 1 samples, it does not decode greedily: {samples:?}"
    );

    // Stop strings: the answer ends right before the first occurrence and never contains it.
    let full = content(&chat(&gw, greedy("local", "List the days of the week.", 40), &[]).await);
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 3, "a few words to stop on: {full:?}");
    let stop = words[2];
    let cut = full.find(stop).unwrap();
    let mut body = greedy("local", "List the days of the week.", 40);
    body["stop"] = json!([stop, "\u{1F600}never"]);
    let r = chat(&gw, body, &[]).await;
    let stopped = content(&r);
    assert_eq!(stopped, full[..cut], "cut before the stop string {stop:?}");
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_local_answer_matches_the_whole_one() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_policy(&up.base("ok")), KEY).await;
    let whole = content(&chat(&gw, greedy("local", "What is 2 + 2?", 30), &[]).await);
    let mut body = greedy("local", "What is 2 + 2?", 30);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = chat(&gw, body, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/event-stream");
    assert_eq!(r.header("x-switchyard-route"), "local");
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, whole, "the stream carries the same greedy answer");
    assert!(chunks.len() > 3, "token by token, not one piece");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_local_requests_get_clear_errors() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_policy(&up.base("ok")), KEY).await;
    // More choices than the on-box engine decodes at once.
    let mut body = greedy("local", "hi", 5);
    body["n"] = json!(9);
    let r = chat(&gw, body, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "n");

    // Content the on-box engine cannot read is refused, never dropped.
    let nope = json!({"model": "local", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "nope", "nope": 1}]}]});
    let r = chat(&gw, nope, &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("`messages[0].content[1]` is a content part of type `nope`"),
        "{message}"
    );

    // Longer than the 8192-token context: 400 on `local`, the cloud on `auto`.
    let long = "lorem ipsum ".repeat(5000);
    let r = chat(&gw, ask("local", &long), &[]).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "context_length_exceeded");
    let r = chat(&gw, ask("auto", &long), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-route"), "cloud");
}

/// Opens a stream that generates up to 4000 tokens and waits for its first text.
async fn long_stream(gw: &TestGateway) -> http::Response<hyper::body::Incoming> {
    let body = json!({"model": "local", "stream": true, "max_tokens": 4000, "ignore_eos": true,
        "temperature": 0, "messages": [{"role": "user", "content": "Count to ten thousand."}]});
    let mut resp = open_chat(gw, &body).await;
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 3 {
        let frame = tokio::time::timeout(TEST_TIMEOUT, resp.body_mut().frame())
            .await
            .expect("a chunk in time")
            .expect("stream open")
            .expect("frame");
        if let Ok(d) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
        }
    }
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_stops_its_generation() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_policy(&up.base("ok")), KEY).await;
    let stream = long_stream(&gw).await;
    drop(stream);
    // The worker notices within a token and ends the generation as cancelled, not at 4000 tokens.
    wait_metric(
        &gw,
        r#"switchyard_local_generations_total{finish="cancelled",model="smol"}"#,
        1.0,
    )
    .await;
    // The worker is free again: a new request is answered on the box.
    let r = chat(&gw, greedy("local", "Say hi.", 3), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-route"), "local");
    let generations = |finish: &str| {
        format!(r#"switchyard_local_generations_total{{finish="{finish}",model="smol"}}"#)
    };
    assert_eq!(metric(&gw, &generations("cancelled")).await, 1.0);
    let finish = r.json()["choices"][0]["finish_reason"]
        .as_str()
        .expect("finish_reason")
        .to_string();
    let other = match finish.as_str() {
        "length" => "stop",
        "stop" => "length",
        f => panic!("finish_reason {f}"),
    };
    assert_eq!(metric(&gw, &generations(&finish)).await, 1.0);
    assert_metric_absent(&gw, &generations(other)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_spills_to_the_cloud_or_answers_503() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&local_policy(&up.base("ok")), KEY).await;
    // One generation on the worker, one waiting: the queue (1) is full.
    let running = long_stream(&gw).await;
    let waiting = tokio::spawn({
        let url = gw.url.clone();
        async move {
            let body = json!({"model": "local", "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}]});
            request(
                "POST",
                &format!("{url}/v1/chat/completions"),
                body.to_string(),
                &[("content-type", "application/json")],
            )
            .await
        }
    });
    wait_metric(&gw, r#"switchyard_local_queue_depth{model="smol"}"#, 1.0).await;

    // `auto` has a fallback: the request spills to the cloud.
    let r = chat(&gw, ask("auto", "hello"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-route"), "cloud");
    assert_eq!(r.header("x-switchyard-fallback"), "smol; reason=overloaded");
    assert_eq!(
        metric(
            &gw,
            r#"switchyard_upstream_errors_total{kind="overloaded",model="smol"}"#
        )
        .await,
        1.0
    );
    // `local` has none: 503 with Retry-After.
    let r = chat(&gw, ask("local", "hello"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "model_overloaded");
    assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);

    // Once the running stream goes away, the waiting request is answered.
    drop(running);
    let r = waiting.await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-route"), "local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_generations_answer_as_they_would_alone() {
    let up = FakeUpstream::start().await;
    // Two generations decoded together in one batch.
    let policy = local_policy_with(&up.base("ok"), 2, 4);
    let gw = start_gateway(&policy, KEY).await;
    let prompts = ["Name a fruit.", "Write one sentence about the sea."];
    let mut alone = vec![];
    for p in prompts {
        alone.push(content(&chat(&gw, greedy("local", p, 24), &[]).await));
    }
    let together = futures_util::future::join_all(
        prompts
            .iter()
            .map(|p| chat(&gw, greedy("local", p, 24), &[])),
    )
    .await;
    for (reply, expected) in together.iter().zip(&alone) {
        assert_eq!(&content(reply), expected);
    }
}

/// A long prompt that arrives while another generation streams runs in pieces between that
/// generation's steps: the stream goes on before the newcomer's answer, instead of pausing for
/// the whole prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_runs_between_a_streams_steps() {
    let up = FakeUpstream::start().await;
    let policy = local_policy_with(&up.base("ok"), 2, 4);
    let gw = start_gateway(&policy, KEY).await;
    let mut running = long_stream(&gw).await;
    let events = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = events.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(frame)) = running.body_mut().frame().await {
            if let Ok(d) = frame.into_data() {
                let n = String::from_utf8_lossy(&d).matches("data: ").count();
                counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    // About 800 tokens: some 25 pieces of 32.
    let long = "The river runs past old stone bridges. ".repeat(100);
    let before = events.load(std::sync::atomic::Ordering::SeqCst);
    // An upper bound only, wider than the usual one: on a busy two-core machine the other tests
    // of this file decode at the same time, and 800 prompt tokens between a stream's steps take
    // a while there.
    let r = request_within(
        TEST_TIMEOUT * 4,
        "POST",
        &format!("{}/v1/chat/completions", gw.url),
        greedy("local", &long, 1).to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    let after = events.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["usage"]["prompt_tokens"].as_u64().unwrap() > 500,
        "a long prompt"
    );
    // Without pieces the stream would get at most a token or two while the prompt runs.
    assert!(
        after - before >= 10,
        "the running stream got {} events while the long prompt ran",
        after - before
    );
    reader.abort();
}
