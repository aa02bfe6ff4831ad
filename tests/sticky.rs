//! Sticky conversations: the model that answered a conversation's first turn answers the next
//! ones, whatever the rules would now say, unless a rule above the pinning one and not sticky
//! itself matches (images here), a rule above it keeps private data on the box, or the pinned
//! route cannot serve the turn at all. Conversations are told apart by their first messages or by
//! `x-switchyard-session` (or Claude Code's and Codex CLI's session headers); pins live in the
//! state store, in memory or in a real `redis-server` shared by two gateways.

mod common;

use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};

const KEY: &[(&str, &str)] = &[("CLOUD_KEY", "sk-upstream-test")];

/// The box (`local-echo`) and a cloud model, every route sticky; `first` is the rule before
/// `cheap` (tagged requests to the box) and `long` (long prompts to the cloud), `default` the
/// default route's model, `state` is appended as it is.
fn sticky_policy(up: &FakeUpstream, first: &str, default: &str, state: &str) -> String {
    format!(
        r#"version: 1
models:
  local-echo: {{ kind: local }}
  cloud:
    kind: openai
    base_url: "{base}"
    api_key: "${{CLOUD_KEY}}"
    price: {{ input_per_million: 2, output_per_million: 8 }}
sticky: {{ ttl_s: 600 }}
rules:
{first}
  - name: cheap
    when: {{ tags: [cheap] }}
    route: local-echo
  - name: long
    when: {{ prompt_tokens: {{ above: 60 }} }}
    route: cloud
default: {{ route: {default} }}
{state}"#,
        base = up.base("ok")
    )
}

/// Long prompts go to the cloud, the rest (and anything tagged `cheap`) stays on the box; images
/// always go to the cloud and are not sticky.
fn policy(up: &FakeUpstream, state: &str) -> String {
    let images = "  - { name: images, when: { has_images: true }, route: cloud, sticky: false }";
    sticky_policy(up, images, "local-echo", state)
}

const LONG: &str = "Please compare these two designs in detail, with their trade-offs, failure modes, costs, operational burden, and what you would measure before choosing one over the other for a team of five engineers running it in production.";

/// A conversation: the turns so far (user texts, with the assistant's answers between).
fn conversation(turns: &[&str]) -> Value {
    let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    for (i, t) in turns.iter().enumerate() {
        if i > 0 {
            messages.push(json!({"role": "assistant", "content": "noted"}));
        }
        messages.push(json!({"role": "user", "content": t}));
    }
    json!({"model": "auto", "messages": messages})
}

async fn route_of(gw: &TestGateway, body: Value, headers: &[(&str, &str)]) -> (String, String) {
    let r = chat(gw, body, headers).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    (
        r.header("x-switchyard-model").to_string(),
        r.header("x-switchyard-rule").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_stays_on_the_model_of_its_first_turn() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&policy(&up, ""), KEY).await;

    // Starts short (on the box); its long second turn stays on the box.
    let first = "hi, quick question";
    assert_eq!(
        route_of(&gw, conversation(&[first]), &[]).await.0,
        "local-echo"
    );
    let (model, rule) = route_of(&gw, conversation(&[first, LONG]), &[]).await;
    assert_eq!((model.as_str(), rule.as_str()), ("local-echo", "default"));

    // Starts long (cloud); a turn that the sticky rule `cheap`, above `long`, would send to
    // the box stays in the cloud.
    let cheap = [("x-switchyard-tags", "cheap")];
    assert_eq!(route_of(&gw, conversation(&[LONG]), &[]).await.0, "cloud");
    let (model, rule) = route_of(&gw, conversation(&[LONG, "thanks, and?"]), &cheap).await;
    assert_eq!((model.as_str(), rule.as_str()), ("cloud", "long"));

    // A new conversation tagged `cheap` goes to the box.
    let (model, rule) = route_of(&gw, conversation(&["thanks, and?"]), &cheap).await;
    assert_eq!((model.as_str(), rule.as_str()), ("local-echo", "cheap"));

    assert_eq!(
        metric(&gw, "switchyard_sticky_total{outcome=\"hit\"}").await,
        2.0
    );
    assert_eq!(
        metric(&gw, "switchyard_sticky_total{outcome=\"new\"}").await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_rule_that_is_not_sticky_forces_a_change_for_one_turn() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&policy(&up, ""), KEY).await;
    let first = "what is in this picture?";
    assert_eq!(
        route_of(&gw, conversation(&[first]), &[]).await.0,
        "local-echo"
    );
    let mut with_image = conversation(&[first, "and now?"]);
    with_image["messages"][3]["content"] = json!([
        {"type": "text", "text": "and now?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]);
    assert_eq!(
        route_of(&gw, with_image, &[]).await,
        ("cloud".to_string(), "images".to_string())
    );
    assert_eq!(
        metric(&gw, "switchyard_sticky_total{outcome=\"overridden\"}").await,
        1.0
    );
    // The image turn did not move the pin: the next text turn is back on the box.
    let next = conversation(&[first, "and now?", LONG]);
    assert_eq!(route_of(&gw, next, &[]).await.0, "local-echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_header_names_the_conversation() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&policy(&up, ""), KEY).await;
    let s1 = [("x-switchyard-session", "thread-1")];
    assert_eq!(route_of(&gw, conversation(&[LONG]), &s1).await.0, "cloud");
    // Different messages, same session: still pinned.
    assert_eq!(
        route_of(&gw, conversation(&["short"]), &s1).await.0,
        "cloud"
    );
    // Another session with the same messages is another conversation.
    let s2 = [("x-switchyard-session", "thread-2")];
    assert_eq!(
        route_of(&gw, conversation(&["short"]), &s2).await.0,
        "local-echo"
    );
    // A named model is never pinned nor moved by a pin.
    let mut named = conversation(&["short"]);
    named["model"] = json!("local-echo");
    assert_eq!(route_of(&gw, named, &s1).await.0, "local-echo");
}

/// The model that answered a request of another dialect (`path`) with `headers`.
async fn dialect_route(
    gw: &TestGateway,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> String {
    let mut h = vec![
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
    ];
    h.extend_from_slice(headers);
    let r = request("POST", &format!("{}{path}", gw.url), body.to_string(), &h).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("x-switchyard-model").to_string()
}

/// Claude Code and Codex CLI name their sessions in headers of their own: a session stays
/// pinned when its opening changes (a compaction replaces it with a summary), a Claude Code
/// subagent's conversation is its own, and Codex's `session_id` names nothing outside the
/// Responses API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coding_agents_name_their_sessions_in_their_own_headers() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&policy(&up, ""), KEY).await;
    let messages = |text: &str| {
        json!({"model": "auto", "max_tokens": 64,
               "messages": [{"role": "user", "content": text}]})
    };
    let claude = [("x-claude-code-session-id", "5f1c0d2e-claude")];
    let at = "/v1/messages";
    assert_eq!(
        dialect_route(&gw, at, messages(LONG), &claude).await,
        "cloud"
    );
    let compacted = "This session is being continued from a previous conversation.";
    assert_eq!(
        dialect_route(&gw, at, messages(compacted), &claude).await,
        "cloud"
    );
    assert_eq!(
        dialect_route(&gw, at, messages(compacted), &[]).await,
        "local-echo"
    );
    let subagent = [claude[0], ("x-claude-code-agent-id", "agent-7")];
    assert_eq!(
        dialect_route(&gw, at, messages(compacted), &subagent).await,
        "local-echo"
    );

    let input = |text: &str| json!({"model": "auto", "input": text});
    let codex = [("session_id", "0199a0b2-codex")];
    let at = "/v1/responses";
    assert_eq!(dialect_route(&gw, at, input(LONG), &codex).await, "cloud");
    assert_eq!(
        dialect_route(&gw, at, input("Summary of the work so far."), &codex).await,
        "cloud"
    );
    // On chat completions `session_id` is no conversation name.
    assert_eq!(
        route_of(&gw, conversation(&["Summary of the work so far."]), &codex)
            .await
            .0,
        "local-echo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_their_pins() {
    let up = FakeUpstream::start().await;
    let redis = RedisServer::start();
    let state = format!(
        "state: {{ backend: redis, url: \"{}\", key_prefix: \"sticky-test:\" }}\n",
        redis.url()
    );
    let a = start_gateway(&policy(&up, &state), KEY).await;
    let b = start_gateway(&policy(&up, &state), KEY).await;
    assert_eq!(route_of(&a, conversation(&[LONG]), &[]).await.0, "cloud");
    // The second turn reaches the other replica, which finds the pin.
    let cheap = [("x-switchyard-tags", "cheap")];
    let (model, _) = route_of(&b, conversation(&[LONG, "short"]), &cheap).await;
    assert_eq!(model, "cloud");
    assert_eq!(
        metric(&b, "switchyard_sticky_total{outcome=\"hit\"}").await,
        1.0
    );
    // The pin is a hashed key with the conversation's TTL; no text is stored.
    let keys = redis.cli(&["KEYS", "sticky-test:sticky:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    let ttl: u64 = redis.cli(&["TTL", keys.trim()]).parse().expect("ttl");
    assert!((590..=600).contains(&ttl), "{ttl}");
    assert_eq!(redis.cli(&["GET", keys.trim()]), "cloud\nlong");
}

/// A pinned cloud model that fails is passed over for that turn by the rest of its route, and
/// the conversation stays its own: the next turn tries it first again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_does_not_move_its_conversation() {
    let up = FakeUpstream::start().await;
    let policy = format!(
        r#"version: 1
models:
  local-echo: {{ kind: local }}
  cloud:
    kind: openai
    base_url: "{base}"
    api_key: "${{CLOUD_KEY}}"
    retries: {{ max_retries: 0 }}
    price: {{ input_per_million: 2, output_per_million: 8 }}
sticky: {{ ttl_s: 600 }}
rules:
  - name: long
    when: {{ prompt_tokens: {{ above: 60 }} }}
    route: cloud
    fallbacks: [local-echo]
default: {{ route: local-echo }}
"#,
        base = up.base("failing-after-1")
    );
    let gw = start_gateway(&policy, KEY).await;
    assert_eq!(route_of(&gw, conversation(&[LONG]), &[]).await.0, "cloud");
    // The cloud model is down from now on: the box answers each turn for it, and each turn
    // still tries the cloud model first (the pin did not move to the box).
    for turn in [&[LONG, "short"][..], &[LONG, "short", "more"]] {
        let r = chat(&gw, conversation(turn), &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-switchyard-model"), "local-echo");
        assert!(
            r.header("x-switchyard-fallback")
                .starts_with("cloud; reason="),
            "{:?}",
            r.header("x-switchyard-fallback")
        );
        assert_eq!(r.header("x-switchyard-rule"), "long");
    }
    assert_eq!(
        up.recorded().len(),
        3,
        "every turn went to the cloud model first"
    );
    assert_eq!(
        metric(&gw, "switchyard_sticky_total{outcome=\"hit\"}").await,
        2.0
    );
}

/// The pin gives way, under a policy-wide `sticky`, where holding it would send private data to
/// the cloud or refuse a turn its route cannot serve (docs/policies.md, "Sticky conversations").
/// Card numbers stay on the box; the default route is the cloud.
fn private_policy(up: &FakeUpstream) -> String {
    let cards = "  - { name: cards, when: { pii: [credit_card] }, route: local-echo }";
    sticky_policy(up, cards, "cloud", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_number_in_a_conversation_pinned_to_the_cloud_stays_on_the_box() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&private_policy(&up), KEY).await;
    assert_eq!(route_of(&gw, conversation(&[LONG]), &[]).await.0, "cloud");
    let card = "my card is 4111 1111 1111 1111, can you check the charge?";
    let (model, rule) = route_of(&gw, conversation(&[LONG, card]), &[]).await;
    assert_eq!((model.as_str(), rule.as_str()), ("local-echo", "cards"));
    assert_eq!(
        metric(&gw, "switchyard_sticky_total{outcome=\"overridden\"}").await,
        1.0
    );
    // The sticky `cards` rule pinned the conversation to the box from then on.
    let (model, rule) = route_of(&gw, conversation(&[LONG, card, "thanks"]), &[]).await;
    assert_eq!((model.as_str(), rule.as_str()), ("local-echo", "cards"));
    assert_eq!(
        up.recorded().len(),
        1,
        "only the first turn reached the cloud"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_in_a_conversation_pinned_to_a_box_only_route_is_routed_afresh() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&private_policy(&up), KEY).await;
    let cheap = [("x-switchyard-tags", "cheap")];
    let first = "hi, what can you see?";
    let (model, rule) = route_of(&gw, conversation(&[first]), &cheap).await;
    assert_eq!((model.as_str(), rule.as_str()), ("local-echo", "cheap"));
    // No model of the pinning route takes images: the turn is routed without the pin instead
    // of being refused (an image's tokens make the prompt `long`).
    let mut with_image = conversation(&[first, "this one"]);
    with_image["messages"][3]["content"] = json!([
        {"type": "text", "text": "this one"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]);
    let (model, rule) = route_of(&gw, with_image, &[]).await;
    assert_eq!((model.as_str(), rule.as_str()), ("cloud", "long"));
    assert_eq!(
        metric(&gw, "switchyard_sticky_total{outcome=\"overridden\"}").await,
        1.0
    );
    assert_eq!(up.recorded().len(), 1);
}

/// A budget that refuses the pinned cloud model sends the turn to the box, and the pin with it:
/// later turns stay on the box rather than each asking the spent budget again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_moves_the_conversation_to_the_box() {
    let up = FakeUpstream::start().await;
    let budget = "budgets: { on_exhausted: local, global: { daily_usd: 0.0005 } }\n";
    let gw = start_gateway(&policy(&up, budget), KEY).await;
    let with_max = |turns: &[&str], max_tokens: u32| {
        let mut body = conversation(turns);
        body["max_tokens"] = json!(max_tokens);
        body
    };
    // Its reservation (about 50 prompt tokens and 16 output tokens, at $2 and $8 per million)
    // fits the budget.
    let (model, rule) = route_of(&gw, with_max(&[LONG], 16), &[]).await;
    assert_eq!((model.as_str(), rule.as_str()), ("cloud", "long"));
    // 100 output tokens at $8 per million do not fit what is left.
    let r = chat(&gw, with_max(&[LONG, "go on"], 100), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-switchyard-model"), "local-echo");
    assert_eq!(
        metric(&gw, "switchyard_budget_exhausted_total{tenant=\"*\"}").await,
        1.0
    );
    // The next turn stays where the pin moved, without asking the budget.
    let (model, _) = route_of(&gw, with_max(&[LONG, "go on", "and?"], 16), &[]).await;
    assert_eq!(model, "local-echo");
    assert_eq!(
        up.recorded().len(),
        1,
        "only the first turn reached the cloud"
    );
    assert_eq!(
        metric(&gw, "switchyard_sticky_total{outcome=\"hit\"}").await,
        2.0
    );
}

/// Codex CLI opens every conversation in a folder with the same user messages of its own (the
/// folder's AGENTS.md, its `<environment_context>`): the person's first request names the
/// conversation, so a second conversation in the same folder is routed afresh, and not by the
/// first one's pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_an_agent_opens_alike_keep_pins_of_their_own() {
    let up = FakeUpstream::start().await;
    let gw = start_gateway(&policy(&up, ""), KEY).await;
    let text = |t: &str| json!({"type": "input_text", "text": t});
    let codex = |turns: &[&str]| {
        let mut input = vec![
            json!({"type": "message", "role": "user", "content": [text("# AGENTS.md instructions for /r\n\n<INSTRUCTIONS>\nBe brief.\n</INSTRUCTIONS>")]}),
            json!({"type": "message", "role": "user", "content": [text("<environment_context><cwd>/r</cwd></environment_context>")]}),
        ];
        for (i, t) in turns.iter().enumerate() {
            if i > 0 {
                input.push(json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]}));
            }
            input.push(json!({"type": "message", "role": "user", "content": [text(t)]}));
        }
        json!({"model": "auto", "input": input, "store": false})
    };
    let model = |body: Value| {
        let gw = &gw;
        async move {
            let r = post_responses(gw, &body, &[]).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            format!(
                "{} {}",
                r.header("x-switchyard-model"),
                r.header("x-switchyard-rule")
            )
        }
    };
    // The first conversation opens long (cloud) and stays there.
    assert_eq!(model(codex(&[LONG])).await, "cloud long");
    assert_eq!(model(codex(&[LONG, "and the tests?"])).await, "cloud long");
    // A second conversation in the same folder opens short: the box, by the default route.
    assert_eq!(model(codex(&["rename it"])).await, "local-echo default");
    assert_eq!(
        model(codex(&["rename it", LONG])).await,
        "local-echo default"
    );
    assert_eq!(
        metric(&gw, "switchyard_sticky_total{outcome=\"hit\"}").await,
        2.0
    );
}
