//! A builder for the YAML policies the tests serve, so that each test says what its policy has
//! (models, rules, tenants, budgets, limits, ...) instead of repeating or patching YAML text.
//!
//! Values that are YAML themselves (a model field's value, a rule's `when`, a budget) are given
//! as flow YAML, e.g. `"{ tags: [t] }"`; names and URLs are quoted here.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::Path;

/// A YAML double-quoted string (a JSON string is one).
pub fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Lowercase hex SHA-256 of a gateway key, as `tenants[].key_sha256` takes it.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[derive(Debug, Clone)]
struct Rule {
    name: String,
    when: String,
    route: String,
    fallbacks: Vec<String>,
    /// More fields of the rule: (field, flow YAML value), e.g. `("sticky", "true")`.
    fields: Vec<(String, String)>,
}

/// A policy under construction; `render` gives its YAML.
#[derive(Debug, Clone, Default)]
pub struct PolicyBuilder {
    reference_model: Option<String>,
    /// (name, [(field, flow YAML value)]) in order.
    models: Vec<(String, Vec<(String, String)>)>,
    /// (name, key SHA-256).
    tenants: Vec<(String, String)>,
    classifier: Option<Vec<(String, String)>>,
    recording: Option<Vec<(String, String)>>,
    budgets: Vec<(String, String)>,
    tenant_budgets: Vec<(String, String)>,
    default_rate: Option<String>,
    tenant_rates: Vec<(String, String)>,
    limits: Vec<(String, String)>,
    state: Option<Vec<(String, String)>>,
    rules: Vec<Rule>,
    /// Rules rendered after `rules` (the standard policy's `cloud-on-request`).
    last_rules: Vec<Rule>,
    default: Option<(String, Vec<String>)>,
}

impl PolicyBuilder {
    /// An empty policy (`version: 1` and nothing else).
    pub fn new() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// The tests' usual two-model policy: `local-echo` on the box (the echo engine serves it) and
    /// `cloud` at `base_url` with key `${CLOUD_KEY}`, upstream name `upstream-model-x`, $1 per
    /// input token and $2 per output token, and short timeouts. `model: cloud` goes to the cloud
    /// with the box as its fallback (rule `cloud-on-request`, kept after the rules a test adds),
    /// and so does the default route.
    pub fn standard(base_url: &str) -> PolicyBuilder {
        PolicyBuilder::new()
            .local("local-echo")
            .model(
                "cloud",
                &[
                    ("kind", "openai"),
                    ("base_url", &quoted(base_url)),
                    ("api_key", &quoted("${CLOUD_KEY}")),
                    ("upstream_model", "upstream-model-x"),
                    (
                        "price",
                        "{ input_per_million: 1000000, output_per_million: 2000000 }",
                    ),
                    (
                        "timeouts",
                        "{ connect_ms: 2000, first_byte_ms: 1500, total_ms: 3000 }",
                    ),
                ],
            )
            .last_rule(
                "cloud-on-request",
                "{ model: [cloud] }",
                "cloud",
                &["local-echo"],
            )
            .default_route("cloud", &["local-echo"])
    }

    /// `reference_model:` (what savings are measured against).
    pub fn reference_model(mut self, name: &str) -> Self {
        self.reference_model = Some(name.to_string());
        self
    }

    /// A model with these fields (values in flow YAML), replacing one of the same name.
    pub fn model(mut self, name: &str, fields: &[(&str, &str)]) -> Self {
        let fields = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match self.models.iter_mut().find(|(n, _)| n == name) {
            Some(m) => m.1 = fields,
            None => self.models.push((name.to_string(), fields)),
        }
        self
    }

    /// An on-box model with no other settings (`{ kind: local }`).
    pub fn local(self, name: &str) -> Self {
        self.model(name, &[("kind", "local")])
    }

    /// A cloud model at `base_url` with key `${CLOUD_KEY}`.
    pub fn cloud(self, name: &str, base_url: &str) -> Self {
        self.model(
            name,
            &[
                ("kind", "openai"),
                ("base_url", &quoted(base_url)),
                ("api_key", &quoted("${CLOUD_KEY}")),
            ],
        )
    }

    /// Sets one field of a model added before (replacing its value, or adding it at the end).
    pub fn model_field(mut self, model: &str, field: &str, value: &str) -> Self {
        let fields = &mut self
            .models
            .iter_mut()
            .find(|(n, _)| n == model)
            .unwrap_or_else(|| panic!("no model `{model}` in the policy yet"))
            .1;
        match fields.iter_mut().find(|(k, _)| k == field) {
            Some(f) => f.1 = value.to_string(),
            None => fields.push((field.to_string(), value.to_string())),
        }
        self
    }

    /// A tenant whose gateway key is `key` (its SHA-256 goes into the policy).
    pub fn tenant(mut self, name: &str, key: &str) -> Self {
        self.tenants.push((name.to_string(), key_sha256(key)));
        self
    }

    /// A `classifier:` section with the test encoder and these other fields.
    pub fn classifier(mut self, fields: &[(&str, &str)]) -> Self {
        let mut all = vec![(
            "encoder".to_string(),
            quoted(&super::encoder_path().display().to_string()),
        )];
        all.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.classifier = Some(all);
        self
    }

    /// A `state:` section with these fields, e.g. `[("backend", "redis"), ("url", "'redis://...'")]`.
    pub fn state(mut self, fields: &[(&str, &str)]) -> Self {
        self.state = Some(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    /// A `recording:` section writing to `path`, with `prompts: keep|hash` when given.
    pub fn recording(mut self, path: &Path, prompts: Option<&str>) -> Self {
        let mut fields = vec![("path".to_string(), quoted(&path.display().to_string()))];
        if let Some(p) = prompts {
            fields.push(("prompts".to_string(), p.to_string()));
        }
        self.recording = Some(fields);
        self
    }

    /// `budgets.on_exhausted` (`reject` or `local`).
    pub fn on_exhausted(mut self, what: &str) -> Self {
        self.budgets.push(("on_exhausted".into(), what.to_string()));
        self
    }

    /// `budgets.global`, e.g. `"{ daily_usd: 100 }"`.
    pub fn global_budget(mut self, limits: &str) -> Self {
        self.budgets.push(("global".into(), limits.to_string()));
        self
    }

    /// `budgets.tenants.<tenant>`, e.g. `"{ monthly_usd: 500 }"`.
    pub fn tenant_budget(mut self, tenant: &str, limits: &str) -> Self {
        self.tenant_budgets
            .push((tenant.to_string(), limits.to_string()));
        self
    }

    /// `rate_limits.default`, e.g. `"{ tokens_per_minute: 40 }"`.
    pub fn default_rate_limit(mut self, rate: &str) -> Self {
        self.default_rate = Some(rate.to_string());
        self
    }

    /// `rate_limits.tenants.<tenant>`, e.g. `"{ requests_per_minute: 2 }"`.
    pub fn tenant_rate_limit(mut self, tenant: &str, rate: &str) -> Self {
        self.tenant_rates
            .push((tenant.to_string(), rate.to_string()));
        self
    }

    /// One `limits:` setting, e.g. `("max_connections", "2")`.
    pub fn limit(mut self, name: &str, value: &str) -> Self {
        match self.limits.iter_mut().find(|(k, _)| k == name) {
            Some(l) => l.1 = value.to_string(),
            None => self.limits.push((name.to_string(), value.to_string())),
        }
        self
    }

    /// A rule, after those added before; `when` in flow YAML, e.g. `"{ tags: [t] }"`.
    pub fn rule(mut self, name: &str, when: &str, route: &str, fallbacks: &[&str]) -> Self {
        self.rules.push(rule(name, when, route, fallbacks));
        self
    }

    /// Sets `field` of the rule named `rule` to `value` (flow YAML), e.g. `redact`, `sticky`.
    pub fn rule_field(mut self, rule: &str, field: &str, value: &str) -> Self {
        let r = self
            .rules
            .iter_mut()
            .chain(self.last_rules.iter_mut())
            .find(|r| r.name == rule)
            .unwrap_or_else(|| panic!("no rule {rule}"));
        r.fields.push((field.to_string(), value.to_string()));
        self
    }

    fn last_rule(mut self, name: &str, when: &str, route: &str, fallbacks: &[&str]) -> Self {
        self.last_rules.push(rule(name, when, route, fallbacks));
        self
    }

    /// The default route.
    pub fn default_route(mut self, route: &str, fallbacks: &[&str]) -> Self {
        self.default = Some((
            route.to_string(),
            fallbacks.iter().map(|f| f.to_string()).collect(),
        ));
        self
    }

    /// The policy's YAML.
    pub fn render(&self) -> String {
        let mut y = String::from("version: 1\n");
        if let Some(r) = &self.reference_model {
            let _ = writeln!(y, "reference_model: {r}");
        }
        if !self.models.is_empty() {
            y.push_str("models:\n");
            for (name, fields) in &self.models {
                let _ = writeln!(y, "  {name}: {}", flow(fields));
            }
        }
        if !self.tenants.is_empty() {
            y.push_str("tenants:\n");
            for (name, sha) in &self.tenants {
                let _ = writeln!(y, "  - {{ name: {name}, key_sha256: {} }}", quoted(sha));
            }
        }
        if let Some(c) = &self.classifier {
            let _ = writeln!(y, "classifier: {}", flow(c));
        }
        if let Some(r) = &self.recording {
            let _ = writeln!(y, "recording: {}", flow(r));
        }
        if !self.budgets.is_empty() || !self.tenant_budgets.is_empty() {
            y.push_str("budgets:\n");
            for (k, v) in &self.budgets {
                let _ = writeln!(y, "  {k}: {v}");
            }
            if !self.tenant_budgets.is_empty() {
                let _ = writeln!(y, "  tenants: {}", flow(&self.tenant_budgets));
            }
        }
        if self.default_rate.is_some() || !self.tenant_rates.is_empty() {
            y.push_str("rate_limits:\n");
            if let Some(d) = &self.default_rate {
                let _ = writeln!(y, "  default: {d}");
            }
            if !self.tenant_rates.is_empty() {
                let _ = writeln!(y, "  tenants: {}", flow(&self.tenant_rates));
            }
        }
        if !self.limits.is_empty() {
            let _ = writeln!(y, "limits: {}", flow(&self.limits));
        }
        if let Some(s) = &self.state {
            let _ = writeln!(y, "state: {}", flow(s));
        }
        if !self.rules.is_empty() || !self.last_rules.is_empty() {
            y.push_str("rules:\n");
            for r in self.rules.iter().chain(&self.last_rules) {
                let _ = writeln!(y, "  - name: {}", r.name);
                let _ = writeln!(y, "    when: {}", r.when);
                let _ = writeln!(y, "    route: {}", r.route);
                if !r.fallbacks.is_empty() {
                    let _ = writeln!(y, "    fallbacks: [{}]", r.fallbacks.join(", "));
                }
                for (k, v) in &r.fields {
                    let _ = writeln!(y, "    {k}: {v}");
                }
            }
        }
        if let Some((route, fallbacks)) = &self.default {
            let _ = writeln!(y, "default:\n  route: {route}");
            if !fallbacks.is_empty() {
                let _ = writeln!(y, "  fallbacks: [{}]", fallbacks.join(", "));
            }
        }
        y
    }
}

fn rule(name: &str, when: &str, route: &str, fallbacks: &[&str]) -> Rule {
    Rule {
        name: name.to_string(),
        when: when.to_string(),
        route: route.to_string(),
        fallbacks: fallbacks.iter().map(|f| f.to_string()).collect(),
        fields: Vec::new(),
    }
}

/// `{ k: v, k: v }`.
fn flow(fields: &[(String, String)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{ {} }}", inner.join(", "))
}
