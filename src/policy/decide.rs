//! The routing decision: a pure function of a [`Policy`] and request [`Features`].

use super::model::Policy;
use super::{AUTO, LOCAL};
use crate::features::Features;

/// Where a request goes and why, in names borrowed from the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision<'p> {
    /// The target model.
    pub model: &'p str,
    /// Models to try, in order, when the target is unavailable or fails before its first byte.
    pub fallbacks: &'p [String],
    /// The rule that decided: a rule name, `default`, or `requested` (the client named the model).
    pub rule: &'p str,
}

/// Why no decision could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecideError {
    /// The requested model is neither virtual nor in the policy.
    #[error("the model `{0}` does not exist (use `auto`, `local` or a model from GET /v1/models)")]
    ModelNotFound(String),
    /// `local` was requested but the policy has no local model.
    #[error("the policy has no local model, so `local` cannot be served")]
    NoLocalModel,
}

/// Decides the route of a request. Rules apply to the requested models they list
/// (`auto` when they list none); the first match wins. Otherwise `auto` takes the default
/// route, `local` the policy's first local model, and a named model goes to itself.
pub fn decide<'p>(policy: &'p Policy, f: &Features) -> Result<Decision<'p>, DecideError> {
    let requested = f.requested_model.as_str();
    let named = match requested {
        AUTO | LOCAL => None,
        name => match policy.models.get_key_value(name) {
            Some((name, _)) => Some(name.as_str()),
            None => return Err(DecideError::ModelNotFound(name.to_string())),
        },
    };
    if let Some(rule) = policy.rules.iter().find(|r| r.when.matches(f)) {
        return Ok(Decision {
            model: &rule.route.model,
            fallbacks: &rule.route.fallbacks,
            rule: &rule.name,
        });
    }
    Ok(match named {
        Some(model) => Decision {
            model,
            fallbacks: &[],
            rule: "requested",
        },
        None if requested == LOCAL => Decision {
            model: policy
                .local_model
                .as_deref()
                .ok_or(DecideError::NoLocalModel)?,
            fallbacks: &[],
            rule: "requested",
        },
        None => Decision {
            model: &policy.default.model,
            fallbacks: &policy.default.fallbacks,
            rule: "default",
        },
    })
}

/// Whether the classifier's outputs could change this request's decision: a rule with a
/// classifier condition, whose other conditions hold, comes before any rule that matches
/// without the classifier. Requests for which this is false skip the classifier.
pub fn needs_classifier(policy: &Policy, f: &Features) -> bool {
    for rule in &policy.rules {
        if rule.when.uses_classifier() {
            if rule.when.matches_request(f) {
                return true;
            }
        } else if rule.when.matches(f) {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::ClassifierOutput;
    use crate::policy::parse;

    const MODELS: &str = r#"
version: 1
models:
  small: { kind: local }
  big:
    kind: openai
    base_url: http://127.0.0.1:1/v1
    price: { input_per_million: 2.5, output_per_million: 10 }
tenants:
  - { name: team-a, key_sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
"#;

    fn policy(rules: &str) -> Policy {
        let src =
            format!("{MODELS}rules:\n{rules}\ndefault: {{ route: small, fallbacks: [big] }}\n");
        parse(&src, "test.yaml", &|_| None).unwrap_or_else(|e| panic!("{e}\n{src}"))
    }

    fn auto() -> Features {
        Features {
            requested_model: "auto".into(),
            prompt_tokens: 100,
            messages: 1,
            ..Default::default()
        }
    }

    fn rule_of(p: &Policy, f: &Features) -> String {
        decide(p, f).unwrap().rule.to_string()
    }

    #[test]
    fn default_route_when_nothing_matches() {
        let p = policy("  - { name: r, when: { has_tools: true }, route: big }");
        let d = decide(&p, &auto()).unwrap();
        assert_eq!(
            d,
            Decision {
                model: "small",
                fallbacks: &["big".to_string()],
                rule: "default"
            }
        );
    }

    #[test]
    fn prompt_tokens_condition() {
        let p = policy("  - { name: long, when: { prompt_tokens: { above: 1000 } }, route: big }");
        assert_eq!(rule_of(&p, &auto()), "default");
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    prompt_tokens: 1001,
                    ..auto()
                }
            ),
            "long"
        );
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    prompt_tokens: 1000,
                    ..auto()
                }
            ),
            "default"
        );
    }

    #[test]
    fn messages_condition() {
        let p = policy("  - { name: short, when: { messages: { below: 3 } }, route: big }");
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    messages: 2,
                    ..auto()
                }
            ),
            "short"
        );
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    messages: 3,
                    ..auto()
                }
            ),
            "default"
        );
    }

    #[test]
    fn tools_and_images_conditions() {
        let p = policy(
            "  - { name: tools, when: { has_tools: true }, route: big }\n  - { name: images, when: { has_images: true }, route: big }",
        );
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    has_tools: true,
                    ..auto()
                }
            ),
            "tools"
        );
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    has_images: true,
                    ..auto()
                }
            ),
            "images"
        );
        assert_eq!(rule_of(&p, &auto()), "default");
    }

    #[test]
    fn tenant_condition() {
        let p = policy("  - { name: a, when: { tenant: [team-a] }, route: big }");
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    tenant: Some("team-a".into()),
                    ..auto()
                }
            ),
            "a"
        );
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    tenant: Some("team-b".into()),
                    ..auto()
                }
            ),
            "default"
        );
        assert_eq!(rule_of(&p, &auto()), "default");
    }

    #[test]
    fn tags_condition_matches_any() {
        let p = policy("  - { name: t, when: { tags: [premium, legal] }, route: big }");
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    tags: vec!["x".into(), "legal".into()],
                    ..auto()
                }
            ),
            "t"
        );
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    tags: vec!["x".into()],
                    ..auto()
                }
            ),
            "default"
        );
    }

    #[test]
    fn requested_model_condition_and_explicit_models() {
        let p = policy("  - { name: big-to-small, when: { model: [big] }, route: small }");
        let named = Features {
            requested_model: "big".into(),
            ..auto()
        };
        assert_eq!(decide(&p, &named).unwrap().model, "small");
        let p = policy("  - { name: r, when: { has_tools: true }, route: big }");
        let d = decide(
            &p,
            &Features {
                has_tools: true,
                ..named.clone()
            },
        )
        .unwrap();
        assert_eq!(
            (d.model, d.rule),
            ("big", "requested"),
            "rules default to model auto"
        );
        let local = Features {
            requested_model: "local".into(),
            ..auto()
        };
        assert_eq!(decide(&p, &local).unwrap().model, "small");
        let unknown = Features {
            requested_model: "gpt-9".into(),
            ..auto()
        };
        assert_eq!(
            decide(&p, &unknown),
            Err(DecideError::ModelNotFound("gpt-9".into()))
        );
    }

    #[test]
    fn classifier_conditions() {
        let p = policy(
            "  - { name: hard, when: { strong_score: { above: 0.7 } }, route: big }\n  - { name: code, when: { category: { in: [code], min_probability: 0.5 } }, route: big }",
        );
        let with = |category: &str, probability: f64, strong_score: f64| Features {
            classifier: Some(ClassifierOutput {
                category: category.into(),
                probability,
                strong_score,
            }),
            ..auto()
        };
        assert_eq!(rule_of(&p, &with("chat", 0.9, 0.8)), "hard");
        assert_eq!(rule_of(&p, &with("code", 0.6, 0.2)), "code");
        assert_eq!(rule_of(&p, &with("code", 0.4, 0.2)), "default");
        assert_eq!(
            rule_of(&p, &auto()),
            "default",
            "unclassified requests match no classifier condition"
        );
        assert!(p.uses_classifier());
    }

    #[test]
    fn the_classifier_runs_only_when_it_can_change_the_decision() {
        let p = policy(
            "  - { name: tools, when: { has_tools: true }, route: big }\n  - { name: hard, when: { strong_score: { above: 0.7 }, messages: { below: 5 } }, route: big }",
        );
        assert!(needs_classifier(&p, &auto()));
        let tools = Features {
            has_tools: true,
            ..auto()
        };
        assert!(!needs_classifier(&p, &tools), "an earlier rule decides");
        let long = Features {
            messages: 9,
            ..auto()
        };
        assert!(
            !needs_classifier(&p, &long),
            "the rule's own conditions fail"
        );
        let plain = policy("  - { name: tools, when: { has_tools: true }, route: big }");
        assert!(!needs_classifier(&plain, &auto()));
    }

    #[test]
    fn first_match_wins() {
        let p = policy(
            "  - { name: first, when: { has_tools: true }, route: big }\n  - { name: second, when: { messages: { above: 0 } }, route: small }",
        );
        assert_eq!(
            rule_of(
                &p,
                &Features {
                    has_tools: true,
                    ..auto()
                }
            ),
            "first"
        );
        assert_eq!(rule_of(&p, &auto()), "second");
    }
}
