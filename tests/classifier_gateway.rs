//! The request classifier in the gateway, with the real encoder and the built-in heads: policy
//! conditions on category and strong score, the `x-switchyard-classifier` header, metrics, and
//! requests that must not pay for the classifier.

mod common;

use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use switchyard::classifier::batcher::{BatchSettings, Batcher};
use switchyard::classifier::{Classification, Classifier, ClassifierError, RouterModel};

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

const HARD_QUESTION: &str = "Which of the following is a consequence of the Heisenberg uncertainty principle for the ground-state energy of a harmonic oscillator?\nA. zero\nB. nonzero\nC. negative\nD. undefined\nAnswer:";

/// Prompts whose category is clear-cut for the heads built into the binary (top probability
/// 0.93 or more, strong score at least 0.2 from 0.5), with the rule that must decide each:
/// (prompt, category, strong score above 0.5, rule, route).
const PINNED: &[(&str, &str, bool, &str, &str)] = &[
    (
        "Write a Rust function that parses a CSV line into fields, handling quoted commas.",
        "code",
        false,
        "code-to-cloud",
        "cloud",
    ),
    ("Calculate 15% of 240.", "math", false, "default", "local"),
    ("hey, how is it going?", "chat", false, "default", "local"),
    (
        "Write a short poem about the sea.",
        "writing",
        false,
        "default",
        "local",
    ),
    (HARD_QUESTION, "knowledge", true, "hard-to-cloud", "cloud"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_route_on_category_and_strong_score() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&classifier_policy(&up.base("ok")), KEY).await;
    for &(text, category, hard, rule, route) in PINNED {
        let r = chat(&gw, ask("auto", text), &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let header = r.header("x-switchyard-classifier");
        let (cat, p, strong) = parse_header(header);
        assert_eq!(cat, category, "{text}: {header}");
        assert!((0.9..=1.0).contains(&p), "{text}: {header}");
        assert_eq!(strong > 0.5, hard, "{text}: {header}");
        assert_eq!(
            (
                r.header("x-switchyard-rule"),
                r.header("x-switchyard-route")
            ),
            (rule, route),
            "{text}: {header}"
        );
    }
    let n = PINNED.len() as f64;
    assert_eq!(
        metric(&gw, "switchyard_classifier_duration_seconds_count").await,
        n
    );
    assert_eq!(
        metric(&gw, "switchyard_classifier_strong_score_count").await,
        n
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

/// The real classifier, recording the size of each batch it is given.
struct CountingBatches {
    inner: Classifier,
    sizes: Mutex<Vec<usize>>,
}

impl RouterModel for CountingBatches {
    fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>, ClassifierError> {
        self.sizes.lock().expect("lock").push(texts.len());
        self.inner.classify(texts)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    let up = FakeUpstream::start().await;
    let text = classifier_policy(&up.base("ok"));
    let settings = switchyard::policy::parse(&text, "p.yaml", &|_| Some("k".into()))
        .unwrap_or_else(|e| panic!("{e}"))
        .classifier;
    let inner = Classifier::load(
        &settings.encoder,
        settings.heads.as_deref(),
        settings.max_tokens,
    )
    .unwrap_or_else(|e| panic!("classifier: {e}"));
    // One of each category, so that an answer given to the wrong request shows.
    let texts = [
        ("hi!", "chat"),
        (
            "Write a Python function that reverses a linked list.",
            "code",
        ),
        ("Translate 'good night' into Spanish.", "transform"),
        ("Write a short poem about the sea.", "writing"),
    ];
    // Each text alone first, straight from the classifier.
    let alone: Vec<String> = texts
        .iter()
        .map(|(t, _)| inner.classify(&[t]).expect("classified")[0].header())
        .collect();
    let model = Arc::new(CountingBatches {
        inner,
        sizes: Mutex::default(),
    });
    // A batch is classified once it holds 4 texts, and its window is longer than the test may
    // take (far wider than a policy may set): 8 requests at once must make two batches of 4,
    // however they arrive.
    let batcher = Batcher::start(
        model.clone(),
        BatchSettings {
            window: 3 * TEST_TIMEOUT,
            max_batch: 4,
        },
    );
    let gw = start_gateway_with(&text, KEY, Some(batcher)).await;
    // Then 8 at once, each text twice.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let url = gw.url.clone();
            let text = texts[i % texts.len()].0;
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
        assert_eq!(c1, texts[k].1, "{}: {header}", texts[k].0);
        assert_eq!(c1, c2, "{}", texts[k].0);
        assert!(
            (p1 - p2).abs() <= 0.011 && (s1 - s2).abs() <= 0.011,
            "{header} vs {}",
            alone[k]
        );
    }
    assert_eq!(*model.sizes.lock().expect("lock"), vec![4, 4]);
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

/// A coding agent's request: its reminders and the files it pasted are not what the human
/// asked. The classifier scores the request as if they were not there (built-in rules and the
/// policy's own), so the decision is the one the bare question gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_harness_text_is_not_what_the_classifier_reads() {
    let up = FakeUpstream::start().await;
    let policy = classifier_builder(&up.base("ok"))
        .classifier(&[
            ("batch_window_us", "300"),
            ("strip", "['<agent-state>.*?</agent-state>']"),
        ])
        .render();
    let gw = start_gateway(&policy, KEY).await;
    let (question, _, _, rule, route) = PINNED[0];
    let bare = chat(&gw, ask("auto", question), &[]).await;
    let noise = "Ignore this. The weather in Paris is mild; the Louvre opens at nine. ".repeat(12);
    let wrapped = format!(
        "<system-reminder>\n{noise}\n</system-reminder>\n<agent-state>{noise}</agent-state>\n\
         <file path=\"notes.txt\">\n{noise}\n</file>\n{question}"
    );
    // Claude Code sends the reminder as a text part of its own.
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": format!("<system-reminder>{noise}</system-reminder>")},
        {"type": "text", "text": &wrapped}]}]});
    let agent = chat(&gw, body, &[]).await;
    assert_eq!(
        agent.header("x-switchyard-classifier"),
        bare.header("x-switchyard-classifier")
    );
    assert_eq!(
        (
            agent.header("x-switchyard-rule"),
            agent.header("x-switchyard-route")
        ),
        (rule, route)
    );
    // Through the Anthropic dialect, as Claude Code sends a turn that only carries a tool's
    // result and a reminder: the classifier reads the human's request of the turn before.
    let claude_code = json!({"model": "auto", "max_tokens": 64, "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": format!("<system-reminder>{noise}</system-reminder>")},
            {"type": "text", "text": question}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "notes.txt"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": noise},
            {"type": "text", "text": format!("<system-reminder>{noise}</system-reminder>")}]}]});
    let r = post_messages(&gw, &claude_code, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("x-switchyard-classifier"),
        bare.header("x-switchyard-classifier")
    );
    // The person rejects the next tool call and says what to do instead: Claude Code puts
    // those words in the call's `tool_result`, and the classifier reads them, not the request
    // of the turn before.
    let (instead, ..) = PINNED[1];
    let bare_instead = chat(&gw, ask("auto", instead), &[]).await;
    assert_ne!(
        bare_instead.header("x-switchyard-classifier"),
        bare.header("x-switchyard-classifier")
    );
    let rejection = format!(
        "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if \
         it was a file edit, the new_string was NOT written to the file). To tell you how to \
         proceed, the user said:\n{instead}"
    );
    let rejected = json!({"model": "auto", "max_tokens": 64, "messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_2", "name": "Write", "input": {"file_path": "csv.rs"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true, "content": rejection},
            {"type": "text", "text": "[Request interrupted by user for tool use]"}]}]});
    let r = post_messages(&gw, &rejected, &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("x-switchyard-classifier"),
        bare_instead.header("x-switchyard-classifier")
    );
    // Without the rules the same text reads as something else.
    let unstripped = format!("{noise}\n{question}");
    let r = chat(&gw, ask("auto", &unstripped), &[]).await;
    assert_ne!(
        r.header("x-switchyard-classifier"),
        bare.header("x-switchyard-classifier")
    );
    // A policy that switches the built-in rules off keeps only its own: the reminder and the
    // file are read as sent.
    let own_only = classifier_builder(&up.base("ok"))
        .classifier(&[
            ("batch_window_us", "300"),
            ("strip", "['<agent-state>.*?</agent-state>']"),
            ("strip_builtin", "false"),
        ])
        .render();
    let gw = start_gateway(&own_only, KEY).await;
    let r = chat(&gw, ask("auto", &wrapped), &[]).await;
    assert_ne!(
        r.header("x-switchyard-classifier"),
        bare.header("x-switchyard-classifier")
    );
}
