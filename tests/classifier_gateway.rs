//! The request classifier in the gateway, with the real encoder and the built-in heads: policy
//! conditions on category and strong score, the `x-switchyard-classifier` header, metrics, and
//! requests that must not pay for the classifier.

mod common;

use common::*;
use serde_json::json;

/// Category rule first, then strong score; everything else stays on the box.
fn classifier_builder(base_url: &str) -> PolicyBuilder {
    PolicyBuilder::standard(base_url)
        .classifier(&[("batch_window_us", "300")])
        .rule("tools-first", "{ has_tools: true }", "cloud", &[])
        .rule(
            "code-to-cloud",
            "{ category: { in: [code], min_probability: 0.5 } }",
            "cloud",
            &["local-echo"],
        )
        .rule(
            "hard-to-cloud",
            "{ strong_score: { above: 0.5 } }",
            "cloud",
            &["local-echo"],
        )
        .default_route("local-echo", &[])
}

fn classifier_policy(base_url: &str) -> String {
    classifier_builder(base_url).render()
}

/// (category, probability, strong score) from the header.
fn parse_header(h: &str) -> (String, f64, f64) {
    let parts: Vec<&str> = h.split(';').collect();
    assert_eq!(parts.len(), 3, "header {h:?}");
    let num = |p: &str, key: &str| -> f64 {
        p.strip_prefix(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {h:?}"))
    };
    (
        parts[0].to_string(),
        num(parts[1], "p="),
        num(parts[2], "strong="),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_route_on_category_and_strong_score() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&classifier_policy(&up.base("ok")), KEY).await;

    let code = chat(
        &gw,
        ask(
            "auto",
            "Write a Rust function that parses a CSV line into fields, handling quoted commas.",
        ),
        &[],
    )
    .await;
    assert_eq!(code.status, 200);
    let (cat, p, strong) = parse_header(code.header("x-switchyard-classifier"));
    assert_eq!(cat, "code", "{}", code.header("x-switchyard-classifier"));
    assert!((0.5..=1.0).contains(&p));
    assert!((0.0..=1.0).contains(&strong));
    assert_eq!(code.header("x-switchyard-rule"), "code-to-cloud");
    assert_eq!(code.header("x-switchyard-route"), "cloud");

    let hello = chat(&gw, ask("auto", "hey, how is it going?"), &[]).await;
    assert_eq!(hello.status, 200);
    let (cat, _, strong) = parse_header(hello.header("x-switchyard-classifier"));
    assert_eq!(cat, "chat");
    assert!(strong <= 0.5, "small talk is easy: {strong}");
    assert_eq!(hello.header("x-switchyard-rule"), "default");
    assert_eq!(hello.header("x-switchyard-route"), "local");

    // Whatever the scores, the decision follows them.
    for text in [
        "Prove that there are infinitely many primes p such that p + 2 is also prime, or explain why this is open.",
        "A store sells pencils at 3 for $1. Tom buys 4 boxes of 12 pencils and pays with a $20 bill. How much change does he get, and how many more pencils could he have bought?",
        "What is the capital of France?",
    ] {
        let r = chat(&gw, ask("auto", text), &[]).await;
        assert_eq!(r.status, 200);
        let (cat, p, strong) = parse_header(r.header("x-switchyard-classifier"));
        let want = if cat == "code" && p >= 0.5 {
            "code-to-cloud"
        } else if strong > 0.5 {
            "hard-to-cloud"
        } else {
            "default"
        };
        assert_eq!(r.header("x-switchyard-rule"), want, "{text}: {cat} {p} {strong}");
    }
    assert_eq!(
        metric(&gw, "switchyard_classifier_duration_seconds_count").await,
        5.0
    );
    assert_eq!(
        metric(&gw, "switchyard_classifier_strong_score_count").await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_decided_without_the_classifier_do_not_pay_for_it() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&classifier_policy(&up.base("ok")), KEY).await;
    // An earlier rule (tools) decides: no classification.
    let mut body = ask("auto", "Write a Rust function.");
    body["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let r = chat(&gw, body, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-rule"), "tools-first");
    assert_eq!(r.header("x-switchyard-classifier"), "");
    // Naming a model skips the rules that apply to `auto`.
    let r = chat(&gw, ask("cloud", "Write a Rust function."), &[]).await;
    assert_eq!(r.header("x-switchyard-classifier"), "");
    assert_eq!(
        metric(&gw, "switchyard_classifier_duration_seconds_count").await,
        0.0
    );

    // A policy with no classifier condition never loads it.
    let plain = start_gateway(&PolicyBuilder::standard(&up.base("ok")).render(), KEY).await;
    assert!(plain.gateway.classifier.is_none());
    let r = chat(&plain, ask("auto", "Write a Rust function."), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-classifier"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&classifier_policy(&up.base("ok")), KEY).await;
    let texts = [
        "hi!",
        "Write a Python function that reverses a linked list.",
        "Translate 'good night' into Spanish.",
        "Write a short poem about the sea.",
    ];
    // Each text alone first.
    let mut alone = vec![];
    for t in texts {
        alone.push(
            chat(&gw, ask("auto", t), &[])
                .await
                .header("x-switchyard-classifier")
                .to_string(),
        );
    }
    // Then 16 at once, each text four times.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let url = gw.url.clone();
            let text = texts[i % texts.len()];
            tokio::spawn(async move {
                let r = send_chat(&url, ask("auto", text)).await;
                (i % texts.len(), r)
            })
        })
        .collect();
    for t in tasks {
        let (k, header) = t.await.expect("task");
        let (c1, p1, s1) = parse_header(&header);
        let (c2, p2, s2) = parse_header(&alone[k]);
        assert_eq!(c1, c2, "{}", texts[k]);
        assert!(
            (p1 - p2).abs() <= 0.011 && (s1 - s2).abs() <= 0.011,
            "{header} vs {}",
            alone[k]
        );
    }
}

/// Sends one chat request and returns its classifier header.
async fn send_chat(url: &str, body: serde_json::Value) -> String {
    let r = request(
        "POST",
        &format!("{url}/v1/chat/completions"),
        body.to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 200);
    r.header("x-switchyard-classifier").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_prompts_are_truncated_and_counted() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&classifier_policy(&up.base("ok")), KEY).await;
    let long = "Summarise the following report. ".to_string()
        + &"The quarterly numbers went up. ".repeat(200);
    let r = chat(&gw, ask("auto", &long), &[]).await;
    assert_eq!(r.status, 200);
    assert!(!r.header("x-switchyard-classifier").is_empty());
    assert_eq!(
        metric(&gw, "switchyard_classifier_truncated_total").await,
        1.0
    );
    let r = chat(&gw, ask("auto", "short one"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        metric(&gw, "switchyard_classifier_truncated_total").await,
        1.0
    );
}
