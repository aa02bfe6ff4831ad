//! The routing decision: a pure function of a [`Policy`] and request [`Features`].

use super::conditions::PiiCondition;
use super::model::{Policy, Route};
use super::{AUTO, LOCAL};
use crate::api::{Capabilities, Capability};
use crate::features::Features;
use crate::pii::Kinds;

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
    /// Kinds of private data replaced before a cloud model gets the request.
    pub redact: Kinds,
    /// The answering model is to be pinned for the conversation's next turns.
    pub sticky: bool,
    /// The conversation's pin decided ([`Features::pinned`]), not a rule's route.
    pub pinned: bool,
}

impl<'p> Decision<'p> {
    fn of(route: &'p Route, rule: &'p str) -> Decision<'p> {
        Decision {
            model: &route.model,
            fallbacks: &route.fallbacks,
            rule,
            skipped: None,
            redact: route.redact,
            sticky: route.sticky,
            pinned: false,
        }
    }

    fn requested(model: &'p str) -> Decision<'p> {
        Decision {
            model,
            fallbacks: &[],
            rule: "requested",
            skipped: None,
            redact: Kinds::NONE,
            sticky: false,
            pinned: false,
        }
    }
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
    #[error("{}", unservable_message(.0, None))]
    Unservable(Vec<(String, Capability)>),
}

fn unservable_message(lacking: &[(String, Capability)], param: Option<&str>) -> String {
    let which: Vec<String> = lacking
        .iter()
        .map(|(m, c)| format!("`{m}` cannot do `{c}`"))
        .collect();
    let first = lacking.first().map(|(_, c)| *c);
    match first {
        Some(c) => format!(
            "this request needs `{c}` (set by `{}`), and no model it may be routed to can serve it: {}",
            param.unwrap_or(c.param()),
            which.join(", ")
        ),
        None => "no model can serve this request".into(),
    }
}

impl DecideError {
    /// The message, naming `param` as the field that set the missing capability instead of
    /// the capability's own ([`Capability::param`]).
    pub fn message_for(&self, param: Option<&str>) -> String {
        match self {
            DecideError::Unservable(l) => unservable_message(l, param),
            e => e.to_string(),
        }
    }

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
///
/// A conversation's pin whose route has no model that can serve the turn is set aside for that
/// turn, which is routed as if the conversation had none: a rule above the pinning one, sticky
/// or not, that sends images or tools to a model that can take them serves it, rather than the
/// pin turning the request into [`DecideError::Unservable`].
pub fn decide<'p>(policy: &'p Policy, f: &Features) -> Result<Decision<'p>, DecideError> {
    let decision = route(policy, f, true)?;
    match capable(policy, f.needs, decision) {
        Err(DecideError::Unservable(_)) if decision.pinned => {
            capable(policy, f.needs, route(policy, f, false)?)
        }
        decided => decided,
    }
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
                    skipped: Some((d.model, missing)),
                    ..d
                })
            }
            Some(c) => lacks.push((f.clone(), c)),
        }
    }
    Err(DecideError::Unservable(lacks))
}

/// The route of a request, before capabilities are considered; a conversation's pin is read
/// only when `with_pin`.
fn route<'p>(
    policy: &'p Policy,
    f: &Features,
    with_pin: bool,
) -> Result<Decision<'p>, DecideError> {
    let requested = f.requested_model.as_str();
    let named = match requested {
        AUTO | LOCAL => None,
        name => match policy.models.get_key_value(name) {
            Some((name, _)) => Some(name.as_str()),
            None => return Err(DecideError::ModelNotFound(name.to_string())),
        },
    };
    let matched = policy.rules.iter().position(|r| r.when.matches(f));
    if let Some(d) = with_pin.then(|| pinned(policy, f, matched)).flatten() {
        return Ok(d);
    }
    if let Some(rule) = matched.and_then(|i| policy.rules.get(i)) {
        return Ok(Decision::of(&rule.route, &rule.name));
    }
    Ok(match named {
        Some(model) => Decision::requested(model),
        None if requested == LOCAL => Decision::requested(
            policy
                .local_model
                .as_deref()
                .ok_or(DecideError::NoLocalModel)?,
        ),
        None => Decision::of(&policy.default, "default"),
    })
}

/// The decision of a sticky conversation's pin ([`Features::pinned`]): its model, with the
/// pinning route's other models, in route order, as fallbacks (so a turn the pinned model
/// cannot take, for a capability or a failure, goes where the route would send it). A pin
/// holds unless a rule above the one that pinned it matches and forces the change: a rule that
/// is not sticky itself (images, tools), or one that asks for private data (`pii: true` or
/// kinds), sticky or not, since keeping private data where a policy sends it outranks a
/// provider's prompt cache. A pin is ignored, and the turn routed afresh, when the
/// policy no longer has its rule, the rule is no longer sticky, or its route no longer holds
/// the pinned model (a reload moved it), unless that model is the policy's local model (a
/// budget sent the conversation to the box). Capabilities and budgets are checked afterwards
/// as for any decision.
fn pinned<'p>(policy: &'p Policy, f: &Features, matched: Option<usize>) -> Option<Decision<'p>> {
    let pin = f.pinned.as_ref()?;
    if f.requested_model != AUTO {
        return None;
    }
    let (at, route, rule): (usize, &Route, &str) = if pin.rule == "default" {
        (policy.rules.len(), &policy.default, "default")
    } else {
        let i = policy.rules.iter().position(|r| r.name == pin.rule)?;
        let r = &policy.rules[i];
        (i, &r.route, &r.name)
    };
    if !route.sticky {
        return None;
    }
    if let Some(r) = matched.filter(|m| *m < at).map(|m| &policy.rules[m]) {
        let private = matches!(r.when.pii, Some(PiiCondition::Any(_)));
        if !r.route.sticky || private {
            return None;
        }
    }
    let others = |i: usize| route.pinned_fallbacks.get(i).map_or(&[][..], Vec::as_slice);
    let in_route = std::iter::once(&route.model)
        .chain(&route.fallbacks)
        .enumerate()
        .find(|(_, m)| **m == pin.model);
    let (model, fallbacks): (&str, &[String]) = match in_route {
        Some((i, m)) => (m, others(i)),
        None => {
            let local = policy.local_model.as_deref().filter(|l| *l == pin.model)?;
            (local, others(route.fallbacks.len() + 1))
        }
    };
    Some(Decision {
        model,
        fallbacks,
        rule,
        skipped: None,
        redact: route.redact,
        sticky: true,
        pinned: true,
    })
}

/// Whether the classifier's outputs could change this request's decision: a rule with a
/// classifier condition, whose other conditions hold, comes before any rule that matches
/// without the classifier. A conversation's pin that holds decides by itself unless a rule
/// above the pinning one matches first ([`pinned`]), so under a pin only those rules count.
/// Requests for which this is false skip the classifier.
pub fn needs_classifier(policy: &Policy, f: &Features) -> bool {
    let rules = match pinned(policy, f, None) {
        Some(d) => {
            let at = policy.rules.iter().position(|r| r.name == d.rule);
            &policy.rules[..at.unwrap_or(policy.rules.len())]
        }
        None => &policy.rules[..],
    };
    for rule in rules {
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

    /// An `auto` turn of a conversation pinned to `model` by `rule`.
    fn pinned_to(model: &str, rule: &str) -> Features {
        Features {
            pinned: Some(crate::features::Pin {
                model: model.into(),
                rule: rule.into(),
            }),
            ..auto()
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
                redact: Kinds::NONE,
                sticky: false,
                pinned: false,
            }
        );
    }

    #[test]
    fn a_strong_score_condition_reads_its_on_box_models_calibrated_score() {
        let src = r#"
version: 1
models:
  small: { kind: local, heads: /heads/small }
  other: { kind: local }
  big: { kind: openai, base_url: http://127.0.0.1:1/v1 }
rules:
  - { name: hard, when: { strong_score: { above: 0.7 } }, route: big, fallbacks: [small] }
default: { route: other }
"#;
        let p = parse(src, "test.yaml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.rules[0].when.strong_model.as_deref(), Some("small"));
        assert_eq!(
            p.classifier.model_heads,
            vec![(
                "small".to_string(),
                std::path::PathBuf::from("/heads/small")
            )]
        );
        let with = |shared: f64, small: f64| Features {
            classifier: Some(ClassifierOutput {
                category: "chat".into(),
                probability: 1.0,
                strong_score: shared,
                strong_by_model: vec![("small".into(), small)],
            }),
            ..auto()
        };
        // The shared score says easy; `small`'s own heads say it would get it wrong.
        assert_eq!(rule_of(&p, &with(0.2, 0.9)), "hard");
        assert_eq!(rule_of(&p, &with(0.9, 0.2)), "default");
        // Empty heads (an unset `${VAR:-}`) are none: the rule reads the shared score.
        let unset = src.replace("heads: /heads/small", "heads: \"${SMALL_HEADS:-}\"");
        let p = parse(&unset, "test.yaml", &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.classifier.model_heads.is_empty());
        assert_eq!(p.rules[0].when.strong_model, None);
        assert_eq!(rule_of(&p, &with(0.9, 0.2)), "hard");
        // `heads` belongs to on-box models only.
        let bad = src.replace("big: { kind: openai,", "big: { kind: openai, heads: /h,");
        let e = parse(&bad, "test.yaml", &|_| None)
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("`heads` is only valid for `kind: local` models"),
            "{e}"
        );
    }

    #[test]
    fn pii_conditions_match_kinds_or_their_absence() {
        use crate::pii::Kind;
        let p = policy(concat!(
            "  - { name: cards, when: { pii: [credit_card, iban] }, route: small }\n",
            "  - { name: any, when: { pii: true }, route: small }\n",
            "  - { name: clean, when: { pii: false }, route: big }",
        ));
        let with = |k: Kinds| Features { pii: k, ..auto() };
        assert_eq!(rule_of(&p, &with(Kinds::NONE.with(Kind::Iban))), "cards");
        assert_eq!(rule_of(&p, &with(Kinds::NONE.with(Kind::Email))), "any");
        assert_eq!(rule_of(&p, &with(Kinds::NONE)), "clean");
    }

    #[test]
    fn sticky_pins_hold_unless_a_higher_non_sticky_rule_matches() {
        use crate::features::Pin;
        let p = policy(concat!(
            "  - { name: images, when: { has_images: true }, route: big }\n",
            "  - { name: long, when: { prompt_tokens: { above: 1000 } }, route: big, sticky: true }\n",
            "  - { name: short, when: { prompt_tokens: { below: 1001 } }, route: small, sticky: true }",
        ));
        let pinned = |model: &str, rule: &str, tokens: u64, images: bool| Features {
            prompt_tokens: tokens,
            has_images: images,
            pinned: Some(Pin {
                model: model.into(),
                rule: rule.into(),
            }),
            ..auto()
        };
        // A short turn of a conversation pinned on `big` by `long` stays on `big`.
        let d = decide(&p, &pinned("big", "long", 10, false)).unwrap();
        assert_eq!(
            (d.model, d.rule, d.pinned, d.sticky),
            ("big", "long", true, true)
        );
        // A long turn of one pinned by `short` (a sticky rule above it) stays on `small`.
        let d = decide(&p, &pinned("small", "short", 5000, false)).unwrap();
        assert_eq!((d.model, d.rule, d.pinned), ("small", "short", true));
        // Images: the rule above is not sticky, so it forces the change.
        let d = decide(&p, &pinned("small", "short", 10, true)).unwrap();
        assert_eq!(
            (d.model, d.rule, d.pinned, d.sticky),
            ("big", "images", false, false)
        );
        // A pin of a rule the policy no longer has, or of a named request, is ignored.
        assert_eq!(rule_of(&p, &pinned("big", "gone", 10, false)), "short");
        let named = Features {
            requested_model: "small".into(),
            ..pinned("big", "long", 10, false)
        };
        assert!(!decide(&p, &named).unwrap().pinned);
    }

    #[test]
    fn private_data_and_unservable_turns_break_a_pin_even_under_sticky_rules() {
        use crate::pii::Kind;
        let p = policy(concat!(
            "  - { name: cards, when: { pii: [credit_card] }, route: small, sticky: true }\n",
            "  - { name: clean, when: { pii: false, tags: [clean] }, route: small, sticky: true }\n",
            "  - { name: images, when: { has_images: true }, route: big, sticky: true }\n",
            "  - { name: hard, when: { prompt_tokens: { above: 1000 } }, route: big, sticky: true }\n",
            "  - { name: box-only, when: { tags: [box] }, route: small, sticky: true }",
        ));
        // A card in a conversation pinned to the cloud: the private-data rule above forces the
        // change, though it is sticky.
        let card = Features {
            pii: Kinds::NONE.with(Kind::CreditCard),
            ..pinned_to("big", "hard")
        };
        let d = decide(&p, &card).unwrap();
        assert_eq!(
            (d.model, d.rule, d.pinned, d.sticky),
            ("small", "cards", false, true)
        );
        // Private data of a kind the rule does not name: the pin holds.
        let email = Features {
            pii: Kinds::NONE.with(Kind::Email),
            ..pinned_to("big", "hard")
        };
        let d = decide(&p, &email).unwrap();
        assert_eq!((d.model, d.rule, d.pinned), ("big", "hard", true));
        // A sticky rule that asks for the absence of private data does not force a change.
        let clean = Features {
            tags: vec!["clean".into()],
            ..pinned_to("big", "hard")
        };
        assert_eq!(decide(&p, &clean).unwrap().rule, "hard");
        // An image in a conversation pinned to a box-only route: no model of that route can take
        // it, so the turn is routed without the pin (by the sticky images rule), not refused.
        let image = Features {
            needs: Capabilities::NONE.with(Capability::Images),
            has_images: true,
            tags: vec!["box".into()],
            ..pinned_to("small", "box-only")
        };
        let d = decide(&p, &image).unwrap();
        assert_eq!((d.model, d.rule, d.pinned), ("big", "images", false));
        // Without a rule for it, the default route's fallback takes it.
        let bare = Features {
            has_images: false,
            tags: Vec::new(),
            ..image.clone()
        };
        let d = decide(&p, &bare).unwrap();
        assert_eq!(
            (d.model, d.rule, d.skipped, d.pinned),
            ("big", "default", Some(("small", Capability::Images)), false)
        );
    }

    #[test]
    fn a_pinned_turn_falls_back_to_the_routes_other_models() {
        let p = policy(concat!(
            "  - { name: hard, when: { prompt_tokens: { above: 1000 } }, route: big, fallbacks: [small], sticky: true }\n",
            "  - { name: cloud-only, when: { tags: [cloud] }, route: big, sticky: true }\n",
            "  - { name: box-only, when: { tags: [box] }, route: small, sticky: true }",
        ));
        // Pinned to the route's fallback: the route's first model follows it.
        let d = decide(&p, &pinned_to("small", "hard")).unwrap();
        assert_eq!(
            (d.model, d.fallbacks, d.pinned),
            ("small", &["big".to_string()][..], true)
        );
        // So a turn the box cannot take (an image) goes to the cloud model, not to a 400.
        let images = Features {
            needs: Capabilities::NONE.with(Capability::Images),
            ..pinned_to("small", "hard")
        };
        let d = decide(&p, &images).unwrap();
        assert_eq!(
            (d.model, d.skipped),
            ("big", Some(("small", Capability::Images)))
        );
        // Pinned to the route's first model: the rest of the route after it.
        let d = decide(&p, &pinned_to("big", "hard")).unwrap();
        assert_eq!((d.model, d.fallbacks), ("big", &["small".to_string()][..]));
        // The box, outside the route (a budget sent the conversation there): the whole route
        // follows it.
        let d = decide(&p, &pinned_to("small", "cloud-only")).unwrap();
        assert_eq!(
            (d.model, d.fallbacks, d.rule),
            ("small", &["big".to_string()][..], "cloud-only")
        );
        // A cloud model the route no longer holds (a reload moved the rule): routed afresh.
        let d = decide(&p, &pinned_to("big", "box-only")).unwrap();
        assert_eq!((d.model, d.rule, d.pinned), ("small", "default", false));
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
                strong_by_model: vec![],
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

        // A conversation's pin decides: only rules above the pinning one could move the turn.
        use crate::features::Pin;
        let sticky = policy(concat!(
            "  - { name: urgent, when: { strong_score: { above: 0.9 }, tags: [urgent] }, route: big, sticky: false }\n",
            "  - { name: chat, when: { messages: { above: 0 } }, route: small, sticky: true }\n",
            "  - { name: hard, when: { strong_score: { above: 0.7 } }, route: big, sticky: true }",
        ));
        let pinned = |rule: &str, model: &str, tags: &[&str]| Features {
            pinned: Some(Pin {
                model: model.into(),
                rule: rule.into(),
            }),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..auto()
        };
        assert!(!needs_classifier(&sticky, &pinned("chat", "small", &[])));
        assert!(
            !needs_classifier(&sticky, &pinned("hard", "big", &[])),
            "`chat` matches first"
        );
        assert!(needs_classifier(
            &sticky,
            &pinned("chat", "small", &["urgent"])
        ));
        // A pin that does not hold (its rule is gone) is routed afresh, classifier and all.
        assert!(!needs_classifier(&sticky, &pinned("gone", "big", &[])));
        let fresh = policy(
            "  - { name: hard, when: { strong_score: { above: 0.7 } }, route: big, sticky: true }",
        );
        assert!(needs_classifier(&fresh, &pinned("gone", "big", &[])));
        assert!(!needs_classifier(&fresh, &pinned("hard", "big", &[])));
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
