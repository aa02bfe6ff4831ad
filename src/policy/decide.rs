//! The routing decision: a pure function of a [`Policy`] and request [`Features`].

use super::model::Policy;
use super::{AUTO, LOCAL};
use crate::api::{Capabilities, Capability};
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
    /// The route's first model, when it was passed over because it lacks a capability the
    /// request needs (and which one): `model` is then the first of its fallbacks that has them.
    pub skipped: Option<(&'p str, Capability)>,
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
    /// No model of the route has every capability the request needs: each model with the
    /// first one it lacks, in route order.
    #[error("{}", unservable_message(.0))]
    Unservable(Vec<(String, Capability)>),
}

fn unservable_message(lacking: &[(String, Capability)]) -> String {
    let which: Vec<String> = lacking
        .iter()
        .map(|(m, c)| format!("`{m}` cannot do `{c}`"))
        .collect();
    let first = lacking.first().map(|(_, c)| *c);
    match first {
        Some(c) => format!(
            "this request needs `{c}` (set by `{}`), and no model it may be routed to can serve it: {}",
            c.param(),
            which.join(", ")
        ),
        None => "no model can serve this request".into(),
    }
}

impl DecideError {
    /// The capability the client asked for that no model can give, for an unservable request.
    pub fn missing_capability(&self) -> Option<Capability> {
        match self {
            DecideError::Unservable(l) => l.first().map(|(_, c)| *c),
            _ => None,
        }
    }
}

/// Decides the route of a request. Rules apply to the requested models they list
/// (`auto` when they list none); the first match wins. Otherwise `auto` takes the default
/// route, `local` the policy's first local model, and a named model goes to itself.
///
/// A route's target that lacks a capability the request needs ([`Features::needs`]) is passed
/// over for the first of its fallbacks that has them all ([`Decision::skipped`] says so); when
/// none has, the request cannot be served ([`DecideError::Unservable`]).
pub fn decide<'p>(policy: &'p Policy, f: &Features) -> Result<Decision<'p>, DecideError> {
    let decision = route(policy, f)?;
    capable(policy, f.needs, decision)
}

/// The first capability of `needs` that `model` lacks (none when nothing is needed).
pub fn lacking(policy: &Policy, needs: Capabilities, model: &str) -> Option<Capability> {
    if needs.is_empty() {
        return None;
    }
    let has = policy
        .models
        .get(model)
        .map_or(Capabilities::NONE, |m| m.capabilities);
    needs.first_missing(has)
}

/// The decision moved to the first model of its route that can serve `needs`.
fn capable<'p>(
    policy: &'p Policy,
    needs: Capabilities,
    d: Decision<'p>,
) -> Result<Decision<'p>, DecideError> {
    let Some(missing) = lacking(policy, needs, d.model) else {
        return Ok(d);
    };
    let mut lacks = vec![(d.model.to_string(), missing)];
    for (i, f) in d.fallbacks.iter().enumerate() {
        match lacking(policy, needs, f) {
            None => {
                return Ok(Decision {
                    model: f,
                    fallbacks: &d.fallbacks[i + 1..],
                    rule: d.rule,
                    skipped: Some((d.model, missing)),
                })
            }
            Some(c) => lacks.push((f.clone(), c)),
        }
    }
    Err(DecideError::Unservable(lacks))
}

/// The route of a request, before capabilities are considered.
fn route<'p>(policy: &'p Policy, f: &Features) -> Result<Decision<'p>, DecideError> {
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
            skipped: None,
        });
    }
    Ok(match named {
        Some(model) => Decision {
            model,
            fallbacks: &[],
            rule: "requested",
            skipped: None,
        },
        None if requested == LOCAL => Decision {
            model: policy
                .local_model
                .as_deref()
                .ok_or(DecideError::NoLocalModel)?,
            fallbacks: &[],
            rule: "requested",
            skipped: None,
        },
        None => Decision {
            model: &policy.default.model,
            fallbacks: &policy.default.fallbacks,
            rule: "default",
            skipped: None,
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

    fn needing(model: &str, c: Capability) -> Features {
        Features {
            requested_model: model.into(),
            needs: Capabilities::NONE.with(c),
            ..auto()
        }
    }

    #[test]
    fn a_target_lacking_a_needed_capability_is_passed_over_for_a_fallback_that_has_it() {
        let p = policy("  - { name: r, when: { has_tools: true }, route: big }");
        let d = decide(&p, &needing("auto", Capability::Images)).unwrap();
        assert_eq!((d.model, d.rule), ("big", "default"));
        assert_eq!(d.skipped, Some(("small", Capability::Images)));
        assert!(d.fallbacks.is_empty());
        // Nothing needed: the route as written.
        let d = decide(&p, &auto()).unwrap();
        assert_eq!((d.model, d.skipped), ("small", None));
        // The on-box model, named or as `local`, cannot serve it: nothing to fall back to.
        for requested in ["small", "local"] {
            let e = decide(&p, &needing(requested, Capability::Audio)).unwrap_err();
            assert_eq!(
                e,
                DecideError::Unservable(vec![("small".into(), Capability::Audio)])
            );
            assert_eq!(e.missing_capability(), Some(Capability::Audio));
            assert!(e.to_string().contains("`small` cannot do `audio`"), "{e}");
        }
    }

    #[test]
    fn declared_capabilities_replace_a_cloud_models_default() {
        let src = format!(
            "{}default: {{ route: small, fallbacks: [big] }}\n",
            MODELS.replace(
                "    kind: openai\n",
                "    kind: openai\n    capabilities: [tools, json_object]\n"
            )
        );
        let p = parse(&src, "test.yaml", &|_| None).unwrap();
        assert!(decide(&p, &needing("auto", Capability::JsonObject)).is_ok());
        let e = decide(&p, &needing("auto", Capability::Images)).unwrap_err();
        assert_eq!(
            e,
            DecideError::Unservable(vec![
                ("small".into(), Capability::Images),
                ("big".into(), Capability::Images)
            ])
        );
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
                rule: "default",
                skipped: None,
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
