//! `switchyard policy check`: the shipped policies pass, and each kind of mistake is reported
//! with file, line and column, and exit code 1.

use std::process::Command;

fn check(path: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["policy", "check", path])
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_text(yaml: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, out, err) = check(path.to_str().unwrap());
    (code, out, err.replace(path.to_str().unwrap(), "p.yaml"))
}

#[test]
fn shipped_policies_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    for p in [
        "policies/default.yaml",
        "policies/cost-saver.yaml",
        "policies/quality-first.yaml",
        "benches/overhead-policy.yaml",
        "benches/dialects-policy.yaml",
    ] {
        let (code, out, err) = check(&format!("{root}/{p}"));
        assert_eq!(code, 0, "{p}: {out}{err}");
        assert!(out.contains(": ok ("), "{out}");
    }
}

const HEAD: &str = "version: 1\nmodels:\n  small: { kind: local }\n  big: { kind: openai, base_url: 'http://127.0.0.1:9/v1' }\n";

#[test]
fn each_mistake_is_located_and_explained() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "rules:\n  - name: r\n    route: huge\ndefault: { route: small }\n",
            "p.yaml:7:12: unknown model `huge`",
            "unknown model `huge` (models: small, big)",
        ),
        (
            "rules:\n  - name: r\n    when: { has_tool: true }\n    route: big\ndefault: { route: small }\n",
            "p.yaml:7:",
            "unknown field `has_tool`",
        ),
        (
            "rules:\n  - name: r\n    when: { messages: { above: many } }\n    route: big\ndefault: { route: small }\n",
            "p.yaml:7:",
            "invalid type: string \"many\", expected u64",
        ),
        (
            "rules:\n  - { name: r, when: { has_tools: true }, route: big }\n  - { name: r, when: { has_images: true }, route: big }\ndefault: { route: small }\n",
            "p.yaml:7:13: duplicate rule name `r`",
            "duplicate rule name `r`",
        ),
        ("rules: []\n", "p.yaml:1:1: no default route", "add `default: { route: MODEL }`"),
        (
            "classifier:\n  strip: ['<ok>.*?</ok>', '<open(']\ndefault: { route: small }\n",
            "p.yaml:6:27: not a regular expression",
            "unclosed group",
        ),
        (
            "classifier:\n  tool_feedback: ['(?P<keep>x)', 'no group']\ndefault: { route: small }\n",
            "p.yaml:6:34: needs a group named `keep`",
            "(?P<keep>...)",
        ),
        (
            "rules:\n  - { name: any-tools, when: { has_tools: true }, route: big }\n  - { name: tools-long, when: { has_tools: true, prompt_tokens: { above: 10 } }, route: small }\ndefault: { route: small }\n",
            "p.yaml:7:13: rule `tools-long` is unreachable: rule `any-tools` (line 6)",
            "matches every request it matches",
        ),
    ];
    for (tail, located, what) in cases {
        let (code, _, err) = check_text(&format!("{HEAD}{tail}"));
        assert_eq!(code, 1, "{located}: {err}");
        assert!(
            err.contains(located),
            "{what}: expected `{located}` in:\n{err}"
        );
        assert!(err.contains(what), "expected `{what}` in:\n{err}");
    }
}

#[test]
fn several_mistakes_are_all_reported() {
    let (code, _, err) = check_text(&format!(
        "{HEAD}rules:\n  - {{ name: a, when: {{ tags: [x] }}, route: nope }}\n  - {{ name: b, when: {{ tenant: [ghost] }}, route: big, fallbacks: [big] }}\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains("unknown model `nope`"), "{err}");
    assert!(err.contains("unknown tenant `ghost`"), "{err}");
    assert!(err.contains("appears twice"), "{err}");
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[test]
fn tuning_sections_are_checked() {
    let (code, _, err) = check_text(&format!(
        "{HEAD}budgets:\n  on_exhausted: later\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains("unknown variant `later`"), "{err}");
    let (code, _, err) = check_text(&format!(
        "{HEAD}budgets:\n  global: {{ daily_usd: -1 }}\n  tenants:\n    ghost: {{ monthly_usd: 5 }}\nclassifier:\n  max_tokens: 4\nrecording:\n  path: /tmp/x.jsonl\n  prompts: blur\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains("unknown variant `blur`"), "{err}");
    let (code, _, err) = check_text(&format!(
        "{HEAD}budgets:\n  global: {{ daily_usd: -1 }}\n  tenants:\n    ghost: {{ monthly_usd: 5 }}\nclassifier:\n  max_tokens: 4\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 1);
    for what in [
        "`daily_usd` must be a non-negative number of USD",
        "unknown tenant `ghost`",
        "`max_tokens` must be between 8 and 512",
    ] {
        assert!(err.contains(what), "expected `{what}` in:\n{err}");
    }
}

#[test]
fn a_missing_file_is_an_error() {
    let (code, _, err) = check("/nonexistent/policy.yaml");
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the policy file"), "{err}");
}

#[test]
fn response_headers_that_frame_carry_cookies_or_belong_to_the_gateway_are_refused() {
    let (code, _, err) = check_text(
        "version: 1\nmodels:\n  big: { kind: openai, base_url: 'http://127.0.0.1:9/v1', response_headers: [x-ratelimit-*, set-cookie, 'x-switchyard-*', 'content-*', 'bad name'] }\ndefault: { route: big }\n",
    );
    assert_eq!(code, 1, "{err}");
    for refused in ["set-cookie", "x-switchyard-*", "content-*"] {
        assert!(
            err.contains(&format!("`{refused}` is never passed back")),
            "{refused}: {err}"
        );
    }
    assert!(err.contains("`bad name` is not a header name"), "{err}");
    assert!(!err.contains("x-ratelimit"), "{err}");
}

#[test]
fn the_state_section_is_checked_and_its_url_never_quoted() {
    let budgets = "budgets:\n  global: { daily_usd: 5 }\n";
    let cases: &[(&str, &str)] = &[
        (
            "state: { backend: redis }\n",
            "`backend: redis` needs `url`",
        ),
        (
            "state: { backend: memory, url: 'redis://127.0.0.1:6379' }\n",
            "`url` is for `backend: redis` only",
        ),
        (
            "state: { backend: redis, url: 'http://:hunter2@db:6379' }\n",
            "not a Redis URL",
        ),
        (
            "state: { backend: redis, url: '${SWITCHYARD_TEST_UNSET_REDIS}' }\n",
            "environment variable SWITCHYARD_TEST_UNSET_REDIS is not set",
        ),
        (
            "state: { backend: redis, url: 'redis://h:6379', timeout_ms: 0 }\n",
            "`timeout_ms` must be at least 1",
        ),
        (
            "state: { backend: redis, url: 'redis://h:6379', reservation_ttl_s: 0 }\n",
            "`reservation_ttl_s` must be at least 1",
        ),
        (
            "state: { backend: redis, url: 'redis://h:6379', on_unavailable: wait }\n",
            "unknown variant `wait`",
        ),
        ("state: { backend: etcd }\n", "unknown variant `etcd`"),
    ];
    for (state, expected) in cases {
        let (code, _, err) = check_text(&format!(
            "{HEAD}{budgets}{state}default: {{ route: small }}\n"
        ));
        assert_eq!(code, 1, "{state}");
        assert!(err.contains("p.yaml:7:"), "{state}: located: {err}");
        assert!(
            err.contains(expected),
            "{state}: expected `{expected}` in:\n{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    let (code, out, err) = check_text(&format!(
        "{HEAD}{budgets}state: {{ backend: redis, url: 'redis://gw:hunter2@db:6379/2', on_unavailable: allow }}\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("state: budgets and rate limits in Redis, shared by every replica with key prefix `switchyard:` (timeout 50 ms, on_unavailable allow, reservations lapse after 600 s)"),
        "{out}"
    );
    assert!(
        !out.contains("hunter2") && !out.contains("db:6379"),
        "{out}"
    );
    let (_, out, _) = check_text(&format!("{HEAD}{budgets}default: {{ route: small }}\n"));
    assert!(out.contains("replicas do not share them"), "{out}");
}

#[test]
fn azure_style_settings_are_checked() {
    let (code, _, err) = check_text(&format!(
        "{HEAD}  az: {{ kind: openai, base_url: 'http://h/v1', auth_header: host, query: {{ api-version: '${{SWITCHYARD_TEST_UNSET_AZ}}' }} }}\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 1);
    assert!(err.contains("`host` cannot carry the key"), "{err}");
    assert!(err.contains("SWITCHYARD_TEST_UNSET_AZ is not set"), "{err}");
    let (code, _, err) = check_text(&format!(
        "{HEAD}  az: {{ kind: local, auth_header: api-key }}\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "`auth_header` is only valid for cloud (`kind: openai` or `anthropic`) models"
        ),
        "{err}"
    );
}

#[test]
fn the_dialects_a_model_serves_are_checked() {
    // `responses`, `completions` and `embeddings` belong to OpenAI-compatible models only.
    for (model, says) in [
        (
            "{ kind: local, completions: true }",
            "`completions` is only valid for cloud",
        ),
        (
            "{ kind: local, embeddings: true }",
            "`embeddings` is only valid for cloud",
        ),
        (
            "{ kind: anthropic, embeddings: true }",
            "`embeddings` is only valid for `kind: openai` models",
        ),
        (
            "{ kind: openai, base_url: 'http://h/v1', capabilities: [embeddings] }",
            "when it says `embeddings: true`",
        ),
        (
            "{ kind: anthropic, responses: true }",
            "`responses` is only valid for `kind: openai` models",
        ),
        (
            "{ kind: openai, base_url: 'http://h/v1', capabilities: [tools, completions] }",
            "when it says `completions: true`",
        ),
        (
            "{ kind: openai, base_url: 'http://h/v1', capabilities: [responses] }",
            "when it says `responses: true`",
        ),
        (
            "{ kind: local, capabilities: [responses] }",
            "the on-box engine cannot do `responses`",
        ),
        (
            "{ kind: openai, base_url: 'http://h/v1', capabilities: [messages] }",
            "`kind: anthropic` models serve Anthropic's Messages API",
        ),
        (
            "{ kind: anthropic, capabilities: [tools, logprobs] }",
            "the translation to Anthropic's Messages API cannot carry `logprobs` (it carries: tools, json_schema, images, web_search)",
        ),
    ] {
        let (code, _, err) = check_text(&format!(
            "{HEAD}  m: {model}\ndefault: {{ route: small }}\n"
        ));
        assert_eq!(code, 1, "{model}");
        assert!(err.contains(says), "{model}: {err}");
    }
    let (code, _, err) = check_text(&format!(
        "{HEAD}  m: {{ kind: openai, base_url: 'http://h/v1', responses: true, completions: true, embeddings: true, capabilities: [tools] }}\ndefault: {{ route: m }}\n"
    ));
    assert_eq!(code, 0, "{err}");
    // Structured output is carried to Anthropic models (as `output_config.format`).
    let (code, _, err) = check_text(&format!(
        "{HEAD}  m: {{ kind: anthropic, capabilities: [tools, json_schema] }}\ndefault: {{ route: m }}\n"
    ));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn how_a_model_is_given_reasoning_effort_is_checked() {
    for (model, says) in [
        (
            "{ kind: local, reasoning: effort }",
            "`reasoning` is only valid for cloud",
        ),
        (
            "{ kind: openai, base_url: 'http://h/v1', reasoning: budget }",
            "`budget` is Anthropic's extended thinking",
        ),
        (
            "{ kind: anthropic, reasoning: adaptive }",
            "unknown variant `adaptive`, expected one of `effort`, `budget`, `none`",
        ),
    ] {
        let (code, _, err) = check_text(&format!(
            "{HEAD}  m: {model}\ndefault: {{ route: small }}\n"
        ));
        assert_eq!(code, 1, "{model}");
        assert!(err.contains(says), "{model}: {err}");
    }
    for model in [
        "{ kind: openai, base_url: 'http://h/v1', reasoning: none }",
        "{ kind: openai, base_url: 'http://h/v1', reasoning: effort }",
        "{ kind: anthropic, reasoning: budget }",
        "{ kind: anthropic, reasoning: none }",
    ] {
        let (code, _, err) = check_text(&format!("{HEAD}  m: {model}\ndefault: {{ route: m }}\n"));
        assert_eq!(code, 0, "{model}: {err}");
    }
}

#[test]
fn a_chat_template_is_for_local_models() {
    let (code, _, err) = check_text(&format!(
        "{HEAD}  m: {{ kind: openai, base_url: 'http://h/v1', template: gemma }}\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 1);
    assert!(
        err.contains("`template` is only valid for `kind: local` models"),
        "{err}"
    );
    let (code, _, err) = check_text(&format!(
        "{HEAD}  g: {{ kind: local, path: models/x.gguf, template: gemma }}\ndefault: {{ route: g }}\n"
    ));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn heads_calibrated_for_another_model_file_are_noted() {
    // The shipped heads of the default model record the file their labels came from; a policy
    // that gives them to a model loading another file is told so, and one loading that file is not.
    let heads = format!(
        "{}/policies/heads/qwen2.5-coder-1.5b-instruct-q4_k_m",
        env!("CARGO_MANIFEST_DIR")
    );
    let policy = |file: &str| {
        format!(
            "version: 1\nmodels:\n  on-box: {{ kind: local, path: /opt/models/{file}, heads: '{heads}' }}\n\
             classifier: {{}}\nrules:\n  - {{ name: hard, when: {{ strong_score: {{ above: 0.5 }} }}, route: on-box }}\n\
             default: {{ route: on-box }}\n"
        )
    };
    let (code, out, err) = check_text(&policy("smollm2-135m-instruct-q8_0.gguf"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("note: model `on-box` loads smollm2-135m-instruct-q8_0.gguf, but its heads")
            && out.contains("were calibrated for qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        "{out}"
    );
    let (code, out, err) = check_text(&policy("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("calibrated for"), "{out}");
}

#[test]
fn an_encoder_serves_embeddings_to_clients_that_name_it_and_is_no_route() {
    let enc = "{ kind: encoder, path: models/all-MiniLM-L6-v2 }";
    for (policy, says) in [
        (
            format!("{HEAD}  enc: {enc}\ndefault: {{ route: enc }}\n"),
            "p.yaml:6:19: `enc` is a sentence encoder (`kind: encoder`)",
        ),
        (
            format!("{HEAD}  enc: {enc}\ndefault: {{ route: small, fallbacks: [enc] }}\n"),
            "`enc` is a sentence encoder",
        ),
        (
            format!("{HEAD}  enc: {{ kind: encoder }}\ndefault: {{ route: small }}\n"),
            "an encoder needs `path`",
        ),
        (
            format!("{HEAD}  enc: {{ kind: encoder, path: m, workers: 2 }}\ndefault: {{ route: small }}\n"),
            "`workers` is only valid for chat models",
        ),
        (
            format!("{HEAD}  enc: {{ kind: encoder, path: m, embeddings: true }}\ndefault: {{ route: small }}\n"),
            "`embeddings` is only valid for cloud",
        ),
        (
            format!("{HEAD}  enc: {{ kind: encoder, path: m, capabilities: [tools] }}\ndefault: {{ route: small }}\n"),
            "cannot do `tools`",
        ),
    ] {
        let (code, _, err) = check_text(&policy);
        assert_eq!(code, 1, "{policy}");
        assert!(err.contains(says), "{policy}: {err}");
    }
    let (code, out, err) = check_text(&format!(
        "{HEAD}  enc: {enc}\nrules:\n  - {{ name: r, when: {{ model: [enc] }}, route: big }}\ndefault: {{ route: small }}\n"
    ));
    assert_eq!(code, 0, "{out}{err}");
}
