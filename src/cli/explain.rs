//! `switchyard policy explain`: one request through a policy, step by step.

use crate::api::Usage;
use crate::classifier::{input, Classifier, RouterModel};
use crate::policy::{self, Policy};

use crate::tuning::traffic;
use clap::Args;
use serde_json::{json, Value};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The policy.
    #[arg(long)]
    pub policy: PathBuf,
    /// A chat request (OpenAI JSON) to explain instead of TEXT.
    #[arg(long)]
    pub request: Option<PathBuf>,
    /// Answer length assumed for the cost estimate (default: the request's max_tokens, else 256).
    #[arg(long)]
    pub output_tokens: Option<u64>,
    /// The user message to explain, sent as `model: auto`.
    pub text: Option<String>,
}

/// The explanation as text.
pub fn explain(
    policy: &Policy,
    row: &traffic::Row,
    classified: Option<String>,
    output_tokens: u64,
) -> String {
    let f = &row.features;
    let mut s = String::new();
    let _ = writeln!(s, "request features:");
    let _ = writeln!(
        s,
        "  model {}, ~{} prompt tokens, {} messages, tools {}, images {}, needs {}, tenant {}, tags [{}]",
        f.requested_model,
        f.prompt_tokens,
        f.messages,
        f.has_tools,
        f.has_images,
        f.needs.names(),
        f.tenant.as_deref().unwrap_or("(none)"),
        f.tags.join(", ")
    );
    let found = crate::pii::request::scan_request(&row.request);
    if found.detections.is_empty() {
        let _ = writeln!(s, "private data: none found");
    } else {
        let places: Vec<String> = found
            .detections
            .iter()
            .map(|d| format!("{} in {}", d.kind, d.path))
            .collect();
        let used = if policy.uses_pii() {
            ""
        } else {
            " (this policy neither routes on it nor redacts it)"
        };
        let _ = writeln!(s, "private data: {}{used}", places.join(", "));
    }
    match (&f.classifier, classified) {
        (Some(c), Some(detail)) => {
            let _ = writeln!(
                s,
                "classifier: top {} ({:.3}), strong_score {:.3}",
                c.category, c.probability, c.strong_score
            );
            let _ = writeln!(s, "  {detail}");
        }
        _ if policy.uses_classifier() => {
            let _ = writeln!(
                s,
                "classifier: not run (no rule it could change decides this request)"
            );
        }
        _ => {
            let _ = writeln!(s, "classifier: not used by this policy");
        }
    }
    let _ = writeln!(s, "rules, in order:");
    let mut decided = false;
    for r in &policy.rules {
        let why = r.when.failures(f);
        let verdict = if decided {
            "not evaluated (an earlier rule decided)".to_string()
        } else if why.is_empty() {
            decided = true;
            format!("MATCHES -> {}", r.route.model)
        } else {
            format!("no: {}", why.join("; "))
        };
        let _ = writeln!(s, "  {} (line {}): {verdict}", r.name, r.line);
    }
    match policy::decide(policy, f) {
        Ok(d) => {
            let _ = writeln!(
                s,
                "decision: {} ({}) by rule `{}`",
                d.model,
                policy.route_of(d.model),
                d.rule
            );
            let redacted =
                crate::pii::Kinds::from_iter(f.pii.iter().filter(|k| d.redact.contains(*k)));
            if !redacted.is_empty() {
                let _ = writeln!(
                    s,
                    "  redacts {redacted} before a cloud model of the route gets the request"
                );
            }
            if d.sticky && f.requested_model == policy::AUTO {
                let _ = writeln!(
                    s,
                    "  sticky: the conversation stays on the model that answers it for {} s",
                    policy.sticky_ttl.as_secs()
                );
                let harness = input::HarnessFilter::of(&policy.classifier).unwrap_or_default();
                if let Some(Value::Array(messages)) = row.request.field("messages") {
                    if let Some(end) = crate::server::sticky::opening_end(&messages, &harness) {
                        let _ = writeln!(
                            s,
                            "  conversation: named by messages[0..={end}], its opening up to the person's first request (or by a session header: x-switchyard-session, Claude Code's, Codex CLI's)"
                        );
                    }
                }
            }
            if let Some((model, c)) = d.skipped {
                let _ = writeln!(
                    s,
                    "  passed over: {model} cannot do `{c}`, which this request needs"
                );
            }
            let mut chain = vec![d.model.to_string()];
            for m in d.fallbacks {
                match policy::lacking(policy, f.needs, m) {
                    None => chain.push(m.clone()),
                    Some(c) => chain.push(format!("({m}: skipped, cannot do `{c}`)")),
                }
            }
            let _ = writeln!(s, "fallback chain: {}", chain.join(" -> "));
        }
        Err(e) => {
            let _ = writeln!(s, "decision: none: {e}");
        }
    }
    let usage = Usage {
        prompt_tokens: f.prompt_tokens,
        completion_tokens: output_tokens,
        cached_prompt_tokens: 0,
        cache_write_prompt_tokens: 0,
        web_searches: 0,
    };
    let _ = writeln!(
        s,
        "estimated cost of this request ({} input + {} output tokens):",
        usage.prompt_tokens, usage.completion_tokens
    );
    for m in policy.models.values() {
        let b = crate::accounting::bill(policy, &m.name, usage);
        let _ = writeln!(s, "  {}: ${:.6}", m.name, b.cost_usd);
    }
    s
}

/// Runs the command.
pub fn run(args: ExplainArgs) -> i32 {
    let policy = match policy::load(&args.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let line = match (&args.request, &args.text) {
        (Some(path), None) => match std::fs::read_to_string(path) {
            Ok(t) => t.replace('\n', " "),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return 1;
            }
        },
        (None, Some(text)) => {
            if std::path::Path::new(text).is_file() {
                // A request file given as TEXT would be explained as the words of its path.
                eprintln!(
                    "note: TEXT is the user message itself; to explain the request in the file {text}, pass --request {text}"
                );
            }
            json!({"prompt": text}).to_string()
        }
        _ => {
            eprintln!("error: give either TEXT or --request FILE");
            return 2;
        }
    };
    let mut row = match traffic::parse_row(&line) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut detail = None;
    if policy::needs_classifier(&policy, &row.features) {
        let s = &policy.classifier;
        let classifier = match Classifier::from_settings(s) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "error: cannot load the classifier ({}): {e}",
                    s.encoder.display()
                );
                return 1;
            }
        };
        let harness = input::HarnessFilter::of(s).unwrap_or_default();
        let text = input::text_of(&row.request.messages(), &harness);
        match classifier.classify(&[text.as_str()]) {
            Ok(mut v) if !v.is_empty() => {
                let c = v.remove(0);
                row.features.classifier = Some(c.output());
                let cats: Vec<String> = c
                    .categories
                    .iter()
                    .take(4)
                    .map(|(k, p)| format!("{k} {p:.3}"))
                    .collect();
                let own: String = c
                    .strong_by_model
                    .iter()
                    .map(|(m, score)| {
                        format!("\n  strong_score for {m} (its own heads): {score:.3}")
                    })
                    .collect();
                detail = Some(format!(
                    "categories: {}; {} tokens{}{}{own}",
                    cats.join(", "),
                    c.tokens,
                    if c.truncated { ", truncated" } else { "" },
                    if c.strong_parts.is_empty() {
                        String::new()
                    } else {
                        format!("\n  strong_score{}", strong_terms(&c.strong_parts))
                    }
                ));
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    }
    let output_tokens = args.output_tokens.or(row.request.max_tokens).unwrap_or(256);
    print!("{}", explain(&policy, &row, detail, output_tokens));
    0
}

/// ` = 0.06 × strong head 0.452 + 0.94 × math expert 0.150`: the strong score's mixture, for
/// people reading `classify` and `policy explain`; empty without strong experts.
pub fn strong_terms(parts: &[crate::classifier::heads::StrongPart]) -> String {
    if parts.is_empty() {
        return String::new();
    }
    let terms: Vec<String> = parts
        .iter()
        .map(|p| {
            let role = if p.head == "strong" { "head" } else { "expert" };
            format!("{:.2} × {} {role} {:.3}", p.weight, p.head, p.score)
        })
        .collect();
    format!(" = {}", terms.join(" + "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under a sticky route, explain says which messages name the conversation: past an
    /// agent's own opening messages, up to the person's first request.
    #[test]
    fn a_sticky_decision_names_the_conversations_opening() {
        let policy = crate::policy::parse(
            "version: 1\nmodels:\n  small: { kind: local }\nsticky: true\ndefault: { route: small }\n",
            "t.yaml",
            &|_| None,
        )
        .expect("policy");
        let row = traffic::parse_row(
            r#"{"model": "auto", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "<environment_context><cwd>/r</cwd></environment_context>"}, {"role": "user", "content": "Fix the build."}, {"role": "assistant", "content": "Done."}, {"role": "user", "content": "Thanks."}]}"#,
        )
        .expect("row");
        let t = explain(&policy, &row, None, 16);
        assert!(t.contains("conversation: named by messages[0..=2]"), "{t}");
        let named = traffic::parse_row(
            r#"{"model": "small", "messages": [{"role": "user", "content": "hi"}]}"#,
        )
        .expect("row");
        assert!(!explain(&policy, &named, None, 16).contains("conversation:"));
    }
}
