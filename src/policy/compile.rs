//! Validation of a [`PolicyFile`] into a [`Policy`], with every problem reported as
//! `file:line:column: message`.

use super::conditions::{CategoryCondition, Conditions, PiiCondition, Range};
use super::env::expand;
use super::model::{
    BreakerSettings, BudgetSettings, ClassifierSettings, EncoderSettings, Limits, LocalSettings,
    Model, Policy, Price, Provider, Rate, RateLimitSettings, RecordingSettings, RetrySettings,
    Route, Rule, Secret, StateSettings, Tenant, Timeouts, DEFAULT_FORWARD_HEADERS,
    DEFAULT_RESPONSE_HEADERS,
};
use super::positions::Positions;
use super::schema::{
    ConditionsSpec, ModelKind, PiiSpec, PolicyFile, RangeSpec, Reasoning, StickySpec,
};
use super::{AUTO, CATEGORIES, LOCAL};
use crate::api::headers::PassBack;
use crate::api::{Capabilities, Capability};
use crate::pii::Kinds;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// All problems found in a policy file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads and validates the policy at `path`, expanding `${ENV}` from the process environment.
pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        PolicyErrors(vec![PolicyError {
            file: name.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the policy file: {e}"),
        }])
    })?;
    parse(&source, &name, &|v| std::env::var(v).ok())
}

/// Validates a policy given as text. `file` names it in errors; `env` resolves `${VAR}`.
pub fn parse(
    source: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Policy, PolicyErrors> {
    let spec: PolicyFile = serde_yaml::from_str(source).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let message = e.to_string();
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        PolicyErrors(vec![PolicyError {
            file: file.to_string(),
            line,
            column,
            message,
        }])
    })?;
    let mut c = Compiler {
        file,
        pos: Positions::of(source),
        errors: Vec::new(),
    };
    let policy = c.policy(spec, env);
    if c.errors.is_empty() {
        Ok(policy)
    } else {
        c.errors.sort_by_key(|e| (e.line, e.column));
        Err(PolicyErrors(c.errors))
    }
}

struct Compiler<'a> {
    file: &'a str,
    pos: Positions,
    errors: Vec<PolicyError>,
}

impl Compiler<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let p = self.pos.get(path);
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: p.line,
            column: p.column,
            message: message.into(),
        });
    }

    fn policy(&mut self, spec: PolicyFile, env: &dyn Fn(&str) -> Option<String>) -> Policy {
        if spec.version != 1 {
            self.error(
                "version",
                format!("unsupported policy version {}: only 1 exists", spec.version),
            );
        }
        if spec.models.is_empty() {
            self.error("models", "the policy defines no models");
        }
        let mut models = indexmap::IndexMap::new();
        let mut model_heads = vec![];
        for (name, m) in spec.models {
            let path = format!("models.{name}");
            if name == AUTO || name == LOCAL {
                self.error(
                    &path,
                    format!("`{name}` is a reserved model name (a virtual model): pick another"),
                );
            }
            let price = Price {
                input_per_million: m.price.input_per_million,
                output_per_million: m.price.output_per_million,
                cached_input_per_million: m
                    .price
                    .cached_input_per_million
                    .unwrap_or(m.price.input_per_million),
                cache_write_per_million: m
                    .price
                    .cache_write_per_million
                    .unwrap_or(m.price.input_per_million),
                web_search_per_thousand: m.price.web_search_per_thousand,
            };
            for (field, v) in [
                ("input_per_million", price.input_per_million),
                ("output_per_million", price.output_per_million),
                ("cached_input_per_million", price.cached_input_per_million),
                ("cache_write_per_million", price.cache_write_per_million),
                ("web_search_per_thousand", price.web_search_per_thousand),
            ] {
                if !v.is_finite() || v < 0.0 {
                    self.error(
                        &format!("{path}.price.{field}"),
                        format!("price must be a number >= 0, got {v}"),
                    );
                }
            }
            let provider = match m.kind {
                ModelKind::Local | ModelKind::Encoder => {
                    for (field, set) in [
                        ("base_url", m.base_url.is_some()),
                        ("api_key", m.api_key.is_some()),
                        ("upstream_model", m.upstream_model.is_some()),
                        (
                            "timeouts",
                            m.timeouts.connect_ms.is_some()
                                || m.timeouts.first_byte_ms.is_some()
                                || m.timeouts.total_ms.is_some(),
                        ),
                        ("retries", m.retries.is_some()),
                        ("circuit_breaker", m.circuit_breaker.is_some()),
                        ("forward_headers", m.forward_headers.is_some()),
                        ("response_headers", m.response_headers.is_some()),
                        ("auth_header", m.auth_header.is_some()),
                        ("query", m.query.is_some()),
                        ("responses", m.responses.is_some()),
                        ("completions", m.completions.is_some()),
                        ("embeddings", m.embeddings.is_some()),
                        ("reasoning", m.reasoning.is_some()),
                    ] {
                        if set {
                            self.error(
                                &format!("{path}.{field}"),
                                format!("`{field}` is only valid for cloud (`kind: openai` or `anthropic`) models"),
                            );
                        }
                    }
                    None
                }
                ModelKind::Openai | ModelKind::Anthropic => {
                    if m.kind == ModelKind::Anthropic {
                        for (field, set) in [
                            ("responses", m.responses.is_some()),
                            ("completions", m.completions.is_some()),
                            ("embeddings", m.embeddings.is_some()),
                        ] {
                            if set {
                                self.error(
                                    &format!("{path}.{field}"),
                                    format!("`{field}` is only valid for `kind: openai` models (Anthropic serves Messages only)"),
                                );
                            }
                        }
                    }
                    for (field, set) in [
                        ("path", m.path.is_some()),
                        ("tokenizer", m.tokenizer.is_some()),
                        ("template", m.template.is_some()),
                        ("workers", m.workers.is_some()),
                        ("queue", m.queue.is_some()),
                        ("threads", m.threads.is_some()),
                    ] {
                        if set {
                            self.error(
                                &format!("{path}.{field}"),
                                match field {
                                    "path" | "queue" => format!("`{field}` is only valid for on-box (`kind: local` or `encoder`) models"),
                                    _ => format!("`{field}` is only valid for `kind: local` models"),
                                },
                            );
                        }
                    }
                    Some(self.provider(&path, &name, &m, env))
                }
            };
            let local = (m.kind == ModelKind::Local).then(|| self.local(&path, &m, env));
            let encoder = (m.kind == ModelKind::Encoder)
                .then(|| self.encoder(&path, &m, env))
                .flatten();
            if let Some(raw) = &m.heads {
                let field = format!("{path}.heads");
                match (m.kind, expand(raw, env)) {
                    (ModelKind::Local, Ok(p)) if !p.is_empty() => {
                        model_heads.push((name.clone(), std::path::PathBuf::from(p)))
                    }
                    // Empty (`${VAR:-}` with VAR unset): no heads of its own, as for
                    // `classifier.heads`.
                    (ModelKind::Local, Ok(_)) => {}
                    (ModelKind::Local, Err(var)) => self.error(
                        &field,
                        format!("environment variable {var} is not set and the heads give no default (`${{{var}:-...}}`)"),
                    ),
                    _ => self.error(&field, "`heads` is only valid for `kind: local` models"),
                }
            }
            let mut capabilities = self.capabilities(&path, m.kind, m.capabilities.as_deref());
            if m.kind.is_cloud() {
                // Set by `completions: true`, `responses: true` and `embeddings: true` alone,
                // whatever the list says; an Anthropic model always serves the Messages API.
                let anthropic = Some(m.kind == ModelKind::Anthropic);
                for (c, set) in [
                    (Capability::Completions, m.completions),
                    (Capability::Responses, m.responses),
                    (Capability::Embeddings, m.embeddings),
                    (Capability::Messages, anthropic),
                ] {
                    capabilities = match set {
                        Some(true) => capabilities.with(c),
                        _ => capabilities.without(c),
                    };
                }
            }
            models.insert(
                name.clone(),
                Model {
                    name,
                    kind: m.kind,
                    price,
                    context_tokens: m.limits.context_tokens,
                    max_output_tokens: m.limits.max_output_tokens,
                    provider,
                    local,
                    encoder,
                    capabilities,
                },
            );
        }

        let reference_model = match spec.reference_model {
            Some(r) => {
                match models.get(&r) {
                    None => self.error(
                        "reference_model",
                        format!("unknown model `{r}` (not under `models`)"),
                    ),
                    Some(m) if !m.kind.is_cloud() => self.error(
                        "reference_model",
                        format!(
                            "reference model `{r}` must be a cloud (`openai` or `anthropic`) model"
                        ),
                    ),
                    _ => {}
                }
                Some(r)
            }
            None => models
                .values()
                .find(|m| m.kind.is_cloud())
                .map(|m| m.name.clone()),
        };
        let local_model = models
            .values()
            .find(|m| m.kind == ModelKind::Local)
            .map(|m| m.name.clone());

        let mut tenants = Vec::new();
        let mut tenant_names = HashSet::new();
        for (i, t) in spec.tenants.into_iter().enumerate() {
            let path = format!("tenants[{i}]");
            if !tenant_names.insert(t.name.clone()) {
                self.error(
                    &format!("{path}.name"),
                    format!("duplicate tenant name `{}`", t.name),
                );
            }
            let mut hash = [0u8; 32];
            match hex::decode_to_slice(t.key_sha256.trim(), &mut hash) {
                Ok(()) => tenants.push(Tenant { name: t.name, key_sha256: hash }),
                Err(_) => self.error(
                    &format!("{path}.key_sha256"),
                    "key_sha256 must be 64 hex digits: the SHA-256 of the key (printf %s \"$KEY\" | sha256sum)",
                ),
            }
        }

        let (sticky_all, sticky_ttl) = self.sticky(spec.sticky.as_ref());
        let mut rules: Vec<Rule> = Vec::new();
        let mut rule_names = HashSet::new();
        for (i, r) in spec.rules.into_iter().enumerate() {
            let path = format!("rules[{i}]");
            if r.name.trim().is_empty() {
                self.error(&format!("{path}.name"), "rule name must not be empty");
            } else if r.name == "default" || r.name == "requested" {
                self.error(
                    &format!("{path}.name"),
                    format!("`{}` is a reserved rule name", r.name),
                );
            } else if !rule_names.insert(r.name.clone()) {
                self.error(
                    &format!("{path}.name"),
                    format!("duplicate rule name `{}`", r.name),
                );
            }
            let when = self.conditions(&format!("{path}.when"), r.when, &models, &tenant_names);
            let mut route = self.route(&path, r.route, r.fallbacks, &models);
            route.redact = self.redact(&path, r.redact.as_ref(), &route, &models);
            route.sticky = r.sticky.unwrap_or(sticky_all);
            let line = self.pos.get(&path).line;
            if let Some(earlier) = rules.iter().find(|e| when.implies(&e.when)) {
                self.error(
                    &format!("{path}.name"),
                    format!(
                        "rule `{}` is unreachable: rule `{}` (line {}) matches every request it matches",
                        r.name, earlier.name, earlier.line
                    ),
                );
            }
            rules.push(Rule {
                name: r.name,
                when,
                route,
                line,
            });
        }

        let default = match spec.default {
            Some(d) => {
                let mut route = self.route("default", d.route, d.fallbacks, &models);
                route.redact = self.redact("default", d.redact.as_ref(), &route, &models);
                route.sticky = d.sticky.unwrap_or(sticky_all);
                route
            }
            None => {
                self.error("", "no default route: add `default: { route: MODEL }` for requests no rule matches");
                Route::default()
            }
        };

        let mut classifier = self.classifier(spec.classifier.unwrap_or_default(), env);
        classifier.model_heads = model_heads;
        // A rule's strong score is the one calibrated for its route's first on-box model with
        // heads, else for the policy's on-box model, else the shared heads'.
        let calibrated = |route: &Route| -> Option<String> {
            let has = |m: &String| classifier.model_heads.iter().any(|(n, _)| n == m);
            std::iter::once(&route.model)
                .chain(&route.fallbacks)
                .find(|m| has(m))
                .or(local_model.as_ref().filter(|m| has(m)))
                .cloned()
        };
        for r in &mut rules {
            if r.when.strong_score.is_some() {
                r.when.strong_model = calibrated(&r.route);
            }
        }
        let recording = spec.recording.and_then(|r| {
            let path = match expand(&r.path, env) {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => {
                    self.error("recording.path", "`path` must not be empty");
                    return None;
                }
                Err(var) => {
                    self.error(
                        "recording.path",
                        format!("environment variable {var} is not set and the path gives no default (`${{{var}:-...}}`)"),
                    );
                    return None;
                }
            };
            let max_bytes = r.max_bytes.unwrap_or(100 << 20);
            if max_bytes < 1024 {
                self.error("recording.max_bytes", "`max_bytes` must be at least 1024");
            }
            Some(RecordingSettings {
                path: path.into(),
                prompts: r.prompts,
                max_bytes,
                keep_files: r.keep_files.unwrap_or(5),
            })
        });
        let budgets = spec.budgets.map(|b| {
            let mut limits: Vec<(String, super::schema::BudgetLimits)> = vec![];
            if let Some(g) = &b.global {
                limits.push(("budgets.global".into(), *g));
            }
            for (name, l) in &b.tenants {
                limits.push((format!("budgets.tenants.{name}"), *l));
                if !tenant_names.contains(name) {
                    self.error(
                        &format!("budgets.tenants.{name}"),
                        format!("unknown tenant `{name}` (not under `tenants`)"),
                    );
                }
            }
            for (path, l) in &limits {
                for (field, v) in [("daily_usd", l.daily_usd), ("monthly_usd", l.monthly_usd)] {
                    if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                        self.error(
                            &format!("{path}.{field}"),
                            format!("`{field}` must be a non-negative number of USD"),
                        );
                    }
                }
            }
            if b.on_exhausted == super::schema::OnExhausted::Local && local_model.is_none() {
                self.error(
                    "budgets.on_exhausted",
                    "`local` needs a `kind: local` model in the policy",
                );
            }
            BudgetSettings {
                global: b.global,
                tenants: b.tenants.into_iter().collect(),
                on_exhausted: b.on_exhausted,
            }
        });
        let limits = self.limits(spec.limits.unwrap_or_default());
        let rate_limits = spec.rate_limits.map(|r| {
            for name in r.tenants.keys() {
                if !tenant_names.contains(name) {
                    self.error(
                        &format!("rate_limits.tenants.{name}"),
                        format!("unknown tenant `{name}` (not under `tenants`)"),
                    );
                }
            }
            let mut rate = |path: String, r: &super::schema::RateSpec| {
                for (field, v) in [
                    ("requests_per_minute", r.requests_per_minute),
                    ("tokens_per_minute", r.tokens_per_minute),
                ] {
                    if v == Some(0) {
                        self.error(
                            &format!("{path}.{field}"),
                            format!("`{field}` must be at least 1 (leave it out for no limit)"),
                        );
                    }
                }
                Rate {
                    requests_per_minute: r.requests_per_minute,
                    tokens_per_minute: r.tokens_per_minute,
                }
            };
            RateLimitSettings {
                default: r
                    .default
                    .as_ref()
                    .map(|d| rate("rate_limits.default".into(), d)),
                tenants: r
                    .tenants
                    .iter()
                    .map(|(name, t)| (name.clone(), rate(format!("rate_limits.tenants.{name}"), t)))
                    .collect(),
            }
        });
        let state = self.state(spec.state, env);
        Policy {
            models,
            reference_model,
            local_model,
            tenants,
            rules,
            default,
            classifier,
            recording,
            budgets,
            limits,
            rate_limits,
            state,
            sticky_ttl,
        }
    }

    /// `sticky:`: whether every route is sticky, and the pins' lifetime.
    fn sticky(&mut self, spec: Option<&StickySpec>) -> (bool, Duration) {
        match spec {
            None => (false, Policy::DEFAULT_STICKY_TTL),
            Some(StickySpec::On(on)) => (*on, Policy::DEFAULT_STICKY_TTL),
            Some(StickySpec::Settings(s)) => {
                if s.ttl_s == Some(0) {
                    self.error("sticky.ttl_s", "ttl_s must be at least 1 second");
                }
                let ttl = s
                    .ttl_s
                    .map_or(Policy::DEFAULT_STICKY_TTL, Duration::from_secs);
                (s.enabled.unwrap_or(true), ttl)
            }
        }
    }

    /// Kinds of private data, from `true`/`false` or a list of names.
    fn pii_kinds(&mut self, path: &str, spec: &PiiSpec) -> Kinds {
        match spec {
            PiiSpec::Any(true) => Kinds::ALL,
            PiiSpec::Any(false) => Kinds::NONE,
            PiiSpec::Kinds(names) => {
                if names.is_empty() {
                    self.error(path, "the list needs at least one kind (or `true` for any)");
                }
                let mut kinds = Kinds::NONE;
                for (i, n) in names.iter().enumerate() {
                    match crate::pii::Kind::parse(n) {
                        Some(k) => kinds = kinds.with(k),
                        None => self.error(
                            &format!("{path}[{i}]"),
                            format!(
                                "unknown kind of private data `{n}` (kinds: {})",
                                crate::pii::Kind::names()
                            ),
                        ),
                    }
                }
                kinds
            }
        }
    }

    /// A route's `redact`: kinds, on a route with a cloud model to protect.
    fn redact(
        &mut self,
        path: &str,
        spec: Option<&PiiSpec>,
        route: &Route,
        models: &indexmap::IndexMap<String, Model>,
    ) -> Kinds {
        let Some(spec) = spec else {
            return Kinds::NONE;
        };
        let path = format!("{path}.redact");
        let kinds = self.pii_kinds(&path, spec);
        let cloud = std::iter::once(&route.model)
            .chain(&route.fallbacks)
            .any(|m| models.get(m).is_some_and(|m| m.kind.is_cloud()));
        if !kinds.is_empty() && !cloud {
            self.error(
                &path,
                "`redact` applies to cloud models, and this route has none (on-box models see the request as sent)",
            );
        }
        kinds
    }

    /// `state:`: the store of budget and rate-limit state. The URL is checked for its form only
    /// (no connection is made) and never quoted back: it may hold a password.
    fn state(
        &mut self,
        spec: Option<super::schema::StateSpec>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> StateSettings {
        use super::schema::StateBackend;
        let mut out = StateSettings::default();
        let Some(spec) = spec else {
            return out;
        };
        match (spec.backend, spec.url) {
            (StateBackend::Memory, None) => {}
            (StateBackend::Memory, Some(_)) => {
                self.error("state.url", "`url` is for `backend: redis` only")
            }
            (StateBackend::Redis, None) => self.error(
                "state.backend",
                "`backend: redis` needs `url` (redis://host:port/db or rediss:// for TLS)",
            ),
            (StateBackend::Redis, Some(raw)) => match expand(&raw, env) {
                Err(var) => self.error(
                    "state.url",
                    format!("environment variable {var} is not set and the url gives no default (`${{{var}:-...}}`)"),
                ),
                Ok(url) => match redis::Client::open(url.as_str()) {
                    Ok(_) => out.redis_url = Some(Secret::new(url)),
                    Err(_) => self.error(
                        "state.url",
                        "not a Redis URL: expected redis://[user:password@]host[:port][/db] or rediss://... (the value is not shown: it may hold a password)",
                    ),
                },
            },
        }
        match spec.timeout_ms {
            Some(0) => self.error("state.timeout_ms", "`timeout_ms` must be at least 1"),
            Some(ms) => out.timeout = Duration::from_millis(ms),
            None => {}
        }
        match spec.reservation_ttl_s {
            Some(0) => self.error(
                "state.reservation_ttl_s",
                "`reservation_ttl_s` must be at least 1",
            ),
            Some(s) => out.reservation_ttl = Duration::from_secs(s),
            None => {}
        }
        if let Some(p) = spec.key_prefix {
            out.key_prefix = p;
        }
        out.on_unavailable = spec.on_unavailable;
        out
    }

    fn classifier(
        &mut self,
        spec: super::schema::ClassifierSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> ClassifierSettings {
        let mut out = ClassifierSettings::default();
        let mut folder = |field: &str, raw: Option<String>| match raw.map(|r| expand(&r, env)) {
            None => None,
            Some(Ok(p)) if !p.is_empty() => Some(std::path::PathBuf::from(p)),
            Some(Ok(_)) => None,
            Some(Err(var)) => {
                self.error(
                    &format!("classifier.{field}"),
                    format!("environment variable {var} is not set and the {field} gives no default (`${{{var}:-...}}`)"),
                );
                None
            }
        };
        if let Some(e) = folder("encoder", spec.encoder) {
            out.encoder = e;
        }
        out.heads = folder("heads", spec.heads);
        if let Some(t) = spec.max_tokens {
            if !(8..=512).contains(&t) {
                self.error(
                    "classifier.max_tokens",
                    "`max_tokens` must be between 8 and 512 (the encoder's positions)",
                );
            }
            out.max_tokens = t;
        }
        if let Some(us) = spec.batch_window_us {
            if us > 100_000 {
                self.error(
                    "classifier.batch_window_us",
                    "`batch_window_us` must be at most 100000 (0.1 s)",
                );
            }
            out.batch_window = Duration::from_micros(us);
        }
        if let Some(b) = spec.max_batch {
            if b == 0 {
                self.error("classifier.max_batch", "`max_batch` must be at least 1");
            }
            out.max_batch = b.max(1);
        }
        for (i, rule) in spec.strip.iter().flatten().enumerate() {
            if let Err(e) = crate::classifier::input::compile_strip(rule) {
                self.error(&format!("classifier.strip[{i}]"), e);
            }
        }
        for (i, rule) in spec.tool_feedback.iter().flatten().enumerate() {
            if let Err(e) = crate::classifier::input::compile_feedback(rule) {
                self.error(&format!("classifier.tool_feedback[{i}]"), e);
            }
        }
        out.strip = spec.strip.unwrap_or_default();
        out.tool_feedback = spec.tool_feedback.unwrap_or_default();
        out.strip_builtin = spec.strip_builtin.unwrap_or(true);
        out
    }

    /// An encoder's settings: its folder (`path`, required), its input limit
    /// (`limits.context_tokens`) and its `queue` (default 16); what only chat models take is
    /// refused.
    fn encoder(
        &mut self,
        path: &str,
        m: &super::schema::ModelSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<EncoderSettings> {
        for (field, set) in [
            ("tokenizer", m.tokenizer.is_some()),
            ("template", m.template.is_some()),
            ("workers", m.workers.is_some()),
            ("threads", m.threads.is_some()),
            (
                "limits.max_output_tokens",
                m.limits.max_output_tokens.is_some(),
            ),
        ] {
            if set {
                self.error(
                    &format!("{path}.{field}"),
                    format!("`{field}` is only valid for chat models (an encoder writes no text)"),
                );
            }
        }
        let folder = match m.path.as_deref().map(|raw| expand(raw, env)) {
            Some(Ok(p)) if !p.is_empty() => std::path::PathBuf::from(p),
            Some(Err(var)) => {
                self.error(
                    &format!("{path}.path"),
                    format!("environment variable {var} is not set and the path gives no default (`${{{var}:-...}}`)"),
                );
                return None;
            }
            _ => {
                self.error(
                    &format!("{path}.path"),
                    "an encoder needs `path`: a BERT folder (config.json, model.safetensors, tokenizer.json)",
                );
                return None;
            }
        };
        let max_input_tokens = match m.limits.context_tokens {
            Some(n) if n < 3 => {
                self.error(
                    &format!("{path}.limits.context_tokens"),
                    "an encoder's `context_tokens` must be at least 3 (its two special tokens and one of text)",
                );
                None
            }
            n => n.map(|n| n as usize),
        };
        Some(EncoderSettings {
            path: folder,
            max_input_tokens,
            queue: m.queue.unwrap_or(16),
        })
    }

    fn local(
        &mut self,
        path: &str,
        m: &super::schema::ModelSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> LocalSettings {
        let mut file = |field: &str, raw: &Option<String>| match raw {
            None => None,
            Some(raw) => match expand(raw, env) {
                Ok(p) if !p.is_empty() => Some(std::path::PathBuf::from(p)),
                Ok(_) => None,
                Err(var) => {
                    self.error(
                        &format!("{path}.{field}"),
                        format!("environment variable {var} is not set and the {field} gives no default (`${{{var}:-...}}`)"),
                    );
                    None
                }
            },
        };
        let model_path = file("path", &m.path);
        let tokenizer = file("tokenizer", &m.tokenizer);
        let template = file("template", &m.template).map(|p| p.display().to_string());
        for (field, v) in [
            ("workers", m.workers),
            ("queue", m.queue),
            ("threads", m.threads),
        ] {
            if v == Some(0) && field != "queue" {
                self.error(
                    &format!("{path}.{field}"),
                    format!("`{field}` must be at least 1"),
                );
            }
        }
        LocalSettings {
            path: model_path,
            tokenizer,
            template,
            workers: m.workers.unwrap_or(1),
            queue: m.queue.unwrap_or(16),
            threads: m.threads,
        }
    }

    fn provider(
        &mut self,
        path: &str,
        name: &str,
        m: &super::schema::ModelSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Provider {
        let base_url = match &m.base_url {
            None if m.kind == ModelKind::Anthropic => "https://api.anthropic.com".to_string(),
            None => {
                self.error(
                    path,
                    format!("model `{name}` of kind openai needs a `base_url`"),
                );
                String::new()
            }
            Some(raw) => match expand(raw, env) {
                Ok(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    u.trim_end_matches('/').to_string()
                }
                Ok(u) => {
                    self.error(
                        &format!("{path}.base_url"),
                        format!("base_url must start with http:// or https://, got `{u}`"),
                    );
                    String::new()
                }
                Err(var) => {
                    self.error(
                        &format!("{path}.base_url"),
                        format!("environment variable {var} is not set and the base_url gives no default (`${{{var}:-...}}`)"),
                    );
                    String::new()
                }
            },
        };
        let (api_key, disabled_reason) = match &m.api_key {
            None => (None, None),
            Some(raw) => match expand(raw, env) {
                Ok(k) => (Some(Secret::new(k)), None),
                Err(var) => (None, Some(format!("{var} is not set"))),
            },
        };
        let t = m.timeouts;
        let defaults = Timeouts::default();
        let mut ms = |field: &str, v: Option<u64>, d: Duration| -> Duration {
            match v {
                Some(0) => {
                    self.error(
                        &format!("{path}.timeouts.{field}"),
                        "timeouts must be > 0 ms",
                    );
                    d
                }
                Some(v) => Duration::from_millis(v),
                None => d,
            }
        };
        let timeouts = Timeouts {
            connect: ms("connect_ms", t.connect_ms, defaults.connect),
            first_byte: ms("first_byte_ms", t.first_byte_ms, defaults.first_byte),
            total: ms("total_ms", t.total_ms, defaults.total),
        };
        Provider {
            base_url,
            api_key,
            disabled_reason,
            upstream_model: m.upstream_model.clone().unwrap_or_else(|| name.to_string()),
            timeouts,
            retries: self.retries(path, m.retries.unwrap_or_default()),
            breaker: self.breaker(path, m.circuit_breaker.unwrap_or_default()),
            forward_headers: self.forward_headers(path, m.forward_headers.as_deref()),
            response_headers: self.response_headers(path, m.response_headers.as_deref()),
            auth_header: m.auth_header.as_deref().and_then(|raw| {
                let p = format!("{path}.auth_header");
                match http::HeaderName::from_bytes(raw.trim().as_bytes()) {
                    Ok(n) if n == http::header::AUTHORIZATION => None,
                    Ok(n)
                        if crate::api::headers::is_never_forwarded(&n)
                            && !matches!(n.as_str(), "x-api-key" | "api-key") =>
                    {
                        self.error(&p, format!("`{n}` cannot carry the key: the gateway sets it"));
                        None
                    }
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.error(&p, format!("`{raw}` is not a valid header name"));
                        None
                    }
                }
            }),
            responses: m.responses.unwrap_or(false),
            completions: m.completions.unwrap_or(false),
            embeddings: m.embeddings.unwrap_or(false),
            reasoning: match m.reasoning {
                Some(Reasoning::Budget) if m.kind != ModelKind::Anthropic => {
                    self.error(
                        &format!("{path}.reasoning"),
                        "`budget` is Anthropic's extended thinking: `kind: openai` models take `effort` or `none`",
                    );
                    Reasoning::Effort
                }
                r => r.unwrap_or(Reasoning::Effort),
            },
            query: m
                .query
                .iter()
                .flatten()
                .filter_map(|(k, v)| {
                    let p = format!("{path}.query.{k}");
                    if k.is_empty() {
                        self.error(&p, "a query parameter needs a name");
                        return None;
                    }
                    match expand(v, env) {
                        Ok(v) => Some((k.clone(), v)),
                        Err(var) => {
                            self.error(&p, format!("environment variable {var} is not set and the value gives no default (`${{{var}:-...}}`)"));
                            None
                        }
                    }
                })
                .collect(),
        }
    }

    fn retries(&mut self, path: &str, r: super::schema::RetriesSpec) -> RetrySettings {
        let d = RetrySettings::default();
        let out = RetrySettings {
            max_retries: r.max_retries.unwrap_or(d.max_retries),
            initial_backoff: r
                .initial_backoff_ms
                .map_or(d.initial_backoff, Duration::from_millis),
            max_backoff: r
                .max_backoff_ms
                .map_or(d.max_backoff, Duration::from_millis),
        };
        if out.max_retries > 10 {
            self.error(
                &format!("{path}.retries.max_retries"),
                "`max_retries` must be at most 10",
            );
        }
        if out.initial_backoff > out.max_backoff {
            self.error(
                &format!("{path}.retries.initial_backoff_ms"),
                "`initial_backoff_ms` must not exceed `max_backoff_ms`",
            );
        }
        out
    }

    fn breaker(&mut self, path: &str, b: super::schema::BreakerSpec) -> Option<BreakerSettings> {
        let d = BreakerSettings::default();
        let out = BreakerSettings {
            failure_ratio: b.failure_ratio.unwrap_or(d.failure_ratio),
            min_calls: b.min_calls.unwrap_or(d.min_calls),
            window: b.window_ms.map_or(d.window, Duration::from_millis),
            cooldown: b.cooldown_ms.map_or(d.cooldown, Duration::from_millis),
        };
        let p = format!("{path}.circuit_breaker");
        if !(out.failure_ratio > 0.0 && out.failure_ratio <= 1.0) {
            self.error(
                &format!("{p}.failure_ratio"),
                "`failure_ratio` must be above 0 and at most 1",
            );
        }
        if out.min_calls == 0 {
            self.error(&format!("{p}.min_calls"), "`min_calls` must be at least 1");
        }
        for (field, v) in [("window_ms", out.window), ("cooldown_ms", out.cooldown)] {
            if v.is_zero() {
                self.error(&format!("{p}.{field}"), format!("`{field}` must be > 0"));
            }
        }
        b.enabled.unwrap_or(true).then_some(out)
    }

    fn forward_headers(&mut self, path: &str, names: Option<&[String]>) -> Vec<http::HeaderName> {
        let names: Vec<String> = match names {
            Some(n) => n.to_vec(),
            None => DEFAULT_FORWARD_HEADERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let mut out = vec![];
        for (i, raw) in names.iter().enumerate() {
            let p = format!("{path}.forward_headers[{i}]");
            let name = match http::HeaderName::from_bytes(raw.trim().as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    self.error(&p, format!("`{raw}` is not a valid header name"));
                    continue;
                }
            };
            if crate::api::headers::is_never_forwarded(&name) {
                self.error(
                    &p,
                    format!("`{name}` is never forwarded: it carries credentials, is hop-by-hop or is set by the gateway"),
                );
                continue;
            }
            out.push(name);
        }
        out
    }

    /// A model's capabilities: declared, or its kind's default. An on-box model cannot claim
    /// what the on-box engine does not support.
    fn capabilities(
        &mut self,
        path: &str,
        kind: ModelKind,
        declared: Option<&[String]>,
    ) -> Capabilities {
        let engine = match kind {
            ModelKind::Local => crate::local::capabilities(),
            ModelKind::Encoder => Capabilities::NONE.with(Capability::Embeddings),
            ModelKind::Openai => Capabilities::all()
                .without(Capability::Completions)
                .without(Capability::Responses)
                .without(Capability::Messages)
                .without(Capability::Embeddings),
            // What the Messages translation carries (tools, images, JSON schemas as structured
            // output, web search as Anthropic's server tool), and what only the Messages API
            // serves. As for OpenAI models, the provider refuses what its model lacks
            // (structured output on older models, web search where an organisation turned it
            // off).
            ModelKind::Anthropic => Capabilities::NONE
                .with(Capability::Tools)
                .with(Capability::Images)
                .with(Capability::JsonSchema)
                .with(Capability::WebSearch)
                .with(Capability::Messages),
        };
        let Some(names) = declared else {
            return engine;
        };
        let mut out = Capabilities::NONE;
        for (i, name) in names.iter().enumerate() {
            let p = format!("{path}.capabilities[{i}]");
            match Capability::parse(name.trim()) {
                None => self.error(
                    &p,
                    format!(
                        "unknown capability `{name}` (capabilities: {})",
                        Capabilities::all().names()
                    ),
                ),
                Some(Capability::Completions) if kind.is_cloud() => self.error(
                    &p,
                    "a cloud model serves legacy completions when it says `completions: true`",
                ),
                Some(Capability::Responses) if kind.is_cloud() => self.error(
                    &p,
                    "a cloud model serves the Responses API when it says `responses: true`",
                ),
                Some(Capability::Embeddings) if kind.is_cloud() => self.error(
                    &p,
                    "a cloud model serves embeddings when it says `embeddings: true`",
                ),
                Some(Capability::Messages) if kind.is_cloud() => self.error(
                    &p,
                    "`kind: anthropic` models serve Anthropic's Messages API, and only they do",
                ),
                Some(c) if !engine.has(c) => self.error(
                    &p,
                    match kind {
                        ModelKind::Anthropic => format!(
                            "the translation to Anthropic's Messages API cannot carry `{c}` (it carries: {})",
                            engine.without(Capability::Messages).names()
                        ),
                        _ => format!(
                            "the on-box engine cannot do `{c}` (it supports: {})",
                            engine.names()
                        ),
                    },
                ),
                Some(c) => out = out.with(c),
            }
        }
        out
    }

    fn response_headers(&mut self, path: &str, patterns: Option<&[String]>) -> PassBack {
        let patterns: Vec<&str> = match patterns {
            Some(p) => p.iter().map(String::as_str).collect(),
            None => DEFAULT_RESPONSE_HEADERS.to_vec(),
        };
        let mut ok = vec![];
        for (i, raw) in patterns.iter().enumerate() {
            match PassBack::new([*raw]) {
                Ok(_) => ok.push(*raw),
                Err(e) => self.error(&format!("{path}.response_headers[{i}]"), e),
            }
        }
        PassBack::new(ok).unwrap_or_default()
    }

    fn limits(&mut self, l: super::schema::ClientLimitsSpec) -> Limits {
        let d = Limits::default();
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        let out = Limits {
            max_body_bytes: l.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_messages: l.max_messages.unwrap_or(d.max_messages),
            max_message_bytes: l.max_message_bytes.unwrap_or(d.max_message_bytes),
            max_tokens: l.max_tokens.unwrap_or(d.max_tokens),
            max_header_bytes: l.max_header_bytes.unwrap_or(d.max_header_bytes),
            header_timeout: ms(l.header_timeout_ms, d.header_timeout),
            body_timeout: ms(l.body_timeout_ms, d.body_timeout),
            stream_idle_timeout: ms(l.stream_idle_timeout_ms, d.stream_idle_timeout),
            max_connections: l.max_connections.unwrap_or(d.max_connections),
        };
        for (field, zero) in [
            ("max_body_bytes", out.max_body_bytes == 0),
            ("max_messages", out.max_messages == 0),
            ("max_message_bytes", out.max_message_bytes == 0),
            ("max_tokens", out.max_tokens == 0),
            ("max_connections", out.max_connections == 0),
            ("header_timeout_ms", out.header_timeout.is_zero()),
            ("body_timeout_ms", out.body_timeout.is_zero()),
            ("stream_idle_timeout_ms", out.stream_idle_timeout.is_zero()),
        ] {
            if zero {
                self.error(&format!("limits.{field}"), format!("`{field}` must be > 0"));
            }
        }
        if out.max_header_bytes < 1024 {
            self.error(
                "limits.max_header_bytes",
                "`max_header_bytes` must be at least 1024",
            );
        }
        out
    }

    fn model_ref(&mut self, path: &str, name: &str, models: &indexmap::IndexMap<String, Model>) {
        if !models.contains_key(name) {
            let known: Vec<&str> = models.keys().map(String::as_str).collect();
            self.error(
                path,
                format!("unknown model `{name}` (models: {})", known.join(", ")),
            );
        }
    }

    /// A model a route may send requests to: one of `models`, and no encoder (which serves
    /// embeddings only, to clients that name it; a chat routed there could never be answered).
    fn routable(&mut self, path: &str, name: &str, models: &indexmap::IndexMap<String, Model>) {
        self.model_ref(path, name, models);
        if models
            .get(name)
            .is_some_and(|m| m.kind == ModelKind::Encoder)
        {
            self.error(
                path,
                format!("`{name}` is a sentence encoder (`kind: encoder`): it serves embeddings to clients that name it, and is no route's target or fallback"),
            );
        }
    }

    fn route(
        &mut self,
        path: &str,
        model: String,
        fallbacks: Vec<String>,
        models: &indexmap::IndexMap<String, Model>,
    ) -> Route {
        self.routable(&format!("{path}.route"), &model, models);
        let mut seen = HashSet::from([model.clone()]);
        for (i, f) in fallbacks.iter().enumerate() {
            let fp = format!("{path}.fallbacks[{i}]");
            self.routable(&fp, f, models);
            if !seen.insert(f.clone()) {
                self.error(
                    &fp,
                    format!("`{f}` appears twice in the route (target or fallbacks)"),
                );
            }
        }
        let all: Vec<String> = std::iter::once(model.clone())
            .chain(fallbacks.iter().cloned())
            .collect();
        let pinned_fallbacks = (0..all.len())
            .map(|i| {
                let mut others = all.clone();
                others.remove(i);
                others
            })
            .chain(std::iter::once(all.clone()))
            .collect();
        Route {
            model,
            fallbacks,
            pinned_fallbacks,
            ..Route::default()
        }
    }

    fn range<T: PartialOrd + Copy + fmt::Display>(
        &mut self,
        path: &str,
        r: RangeSpec<T>,
    ) -> Range<T> {
        if r.above.is_none() && r.below.is_none() {
            self.error(path, "a range needs `above`, `below` or both");
        }
        if let (Some(a), Some(b)) = (r.above, r.below) {
            if a >= b {
                self.error(path, format!("empty range: above {a} is not below {b}"));
            }
        }
        Range {
            above: r.above,
            below: r.below,
        }
    }

    fn conditions(
        &mut self,
        path: &str,
        w: ConditionsSpec,
        models: &indexmap::IndexMap<String, Model>,
        tenants: &HashSet<String>,
    ) -> Conditions {
        let mut c = Conditions::default();
        if let Some(list) = w.model {
            if list.is_empty() {
                self.error(&format!("{path}.model"), "`model` needs at least one name");
            }
            for (i, m) in list.iter().enumerate() {
                if m != AUTO && m != LOCAL {
                    self.model_ref(&format!("{path}.model[{i}]"), m, models);
                }
            }
            c.models = list;
        }
        c.prompt_tokens = w
            .prompt_tokens
            .map(|r| self.range(&format!("{path}.prompt_tokens"), r));
        c.messages = w
            .messages
            .map(|r| self.range(&format!("{path}.messages"), r));
        c.has_tools = w.has_tools;
        c.has_images = w.has_images;
        if let Some(list) = &w.tenant {
            for (i, t) in list.iter().enumerate() {
                if !tenants.contains(t) {
                    self.error(
                        &format!("{path}.tenant[{i}]"),
                        format!("unknown tenant `{t}` (not under `tenants`)"),
                    );
                }
            }
        }
        c.tenants = w.tenant;
        if let Some(tags) = &w.tags {
            if tags.is_empty() {
                self.error(&format!("{path}.tags"), "`tags` needs at least one tag");
            }
        }
        c.tags = w.tags;
        if let Some(cat) = w.category {
            let cp = format!("{path}.category");
            for (i, name) in cat.one_of.iter().enumerate() {
                if !CATEGORIES.contains(&name.as_str()) {
                    self.error(
                        &format!("{cp}.in[{i}]"),
                        format!(
                            "unknown category `{name}` (categories: {})",
                            CATEGORIES.join(", ")
                        ),
                    );
                }
            }
            let min_probability = cat.min_probability.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&min_probability) {
                self.error(
                    &format!("{cp}.min_probability"),
                    "min_probability must be within [0, 1]",
                );
            }
            c.category = Some(CategoryCondition {
                one_of: cat.one_of,
                min_probability,
            });
        }
        if let Some(r) = w.strong_score {
            let sp = format!("{path}.strong_score");
            for v in [r.above, r.below].into_iter().flatten() {
                if !(0.0..=1.0).contains(&v) {
                    self.error(
                        &sp,
                        format!("strong_score thresholds must be within [0, 1], got {v}"),
                    );
                }
            }
            c.strong_score = Some(self.range(&sp, r));
        }
        if let Some(p) = &w.pii {
            c.pii = Some(match p {
                PiiSpec::Any(false) => PiiCondition::Absent,
                p => PiiCondition::Any(self.pii_kinds(&format!("{path}.pii"), p)),
            });
        }
        c
    }
}
