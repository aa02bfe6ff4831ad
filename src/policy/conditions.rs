//! Compiled rule conditions: matching against request features, and the implication
//! test that finds unreachable rules.

use crate::features::Features;
use crate::pii::Kinds;

/// A condition on the private data found in a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PiiCondition {
    /// Any of these kinds was found.
    Any(Kinds),
    /// None was found.
    Absent,
}

impl PiiCondition {
    fn holds(self, found: Kinds) -> bool {
        match self {
            PiiCondition::Any(k) => found.intersects(k),
            PiiCondition::Absent => found.is_empty(),
        }
    }

    /// Every request this matches, `other` matches too.
    fn within(&self, other: &PiiCondition) -> bool {
        match (self, other) {
            (PiiCondition::Any(a), PiiCondition::Any(b)) => a.within(*b),
            (PiiCondition::Absent, PiiCondition::Absent) => true,
            _ => false,
        }
    }
}

/// A strict range `above < x < below`; a missing bound is open.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range<T> {
    pub above: Option<T>,
    pub below: Option<T>,
}

impl<T: PartialOrd + Copy> Range<T> {
    fn contains(&self, x: T) -> bool {
        self.above.is_none_or(|a| x > a) && self.below.is_none_or(|b| x < b)
    }

    /// Every value in `self` is also in `other`.
    fn within(&self, other: &Range<T>) -> bool {
        let lower = match (other.above, self.above) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(s)) => s >= o,
        };
        let upper = match (other.below, self.below) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(o), Some(s)) => s <= o,
        };
        lower && upper
    }
}

/// The classifier's top category must be one of `one_of` with at least `min_probability`.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryCondition {
    pub one_of: Vec<String>,
    pub min_probability: f64,
}

/// All conditions of one rule (every one that is set must hold).
#[derive(Debug, Clone, PartialEq)]
pub struct Conditions {
    /// Requested model names this rule applies to (`auto` when the rule does not say).
    pub models: Vec<String>,
    pub prompt_tokens: Option<Range<u64>>,
    pub messages: Option<Range<u64>>,
    pub has_tools: Option<bool>,
    pub has_images: Option<bool>,
    pub tenants: Option<Vec<String>>,
    /// Any of these tags.
    pub tags: Option<Vec<String>>,
    pub category: Option<CategoryCondition>,
    pub strong_score: Option<Range<f64>>,
    /// The on-box model whose calibrated strong score `strong_score` reads (`None`: the shared
    /// heads' score).
    pub strong_model: Option<String>,
    pub pii: Option<PiiCondition>,
}

impl Default for Conditions {
    fn default() -> Self {
        Conditions {
            models: vec![super::AUTO.to_string()],
            prompt_tokens: None,
            messages: None,
            has_tools: None,
            has_images: None,
            tenants: None,
            tags: None,
            category: None,
            strong_score: None,
            strong_model: None,
            pii: None,
        }
    }
}

fn subset(a: &[String], b: &[String]) -> bool {
    a.iter().all(|x| b.contains(x))
}

/// `later` is at least as strict as `earlier` (or `earlier` does not constrain).
fn implied<T>(later: &Option<T>, earlier: &Option<T>, within: impl Fn(&T, &T) -> bool) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => within(l, e),
    }
}

impl Conditions {
    /// Whether the classifier must run for this rule to be evaluated.
    pub fn uses_classifier(&self) -> bool {
        self.category.is_some() || self.strong_score.is_some()
    }

    /// Whether a request with these features matches. Conditions on classifier outputs
    /// never match a request that was not classified.
    pub fn matches(&self, f: &Features) -> bool {
        self.matches_request(f) && self.matches_classifier(f)
    }

    /// Whether the conditions on the request itself (all but the classifier's) hold.
    pub fn matches_request(&self, f: &Features) -> bool {
        if !self.models.contains(&f.requested_model) {
            return false;
        }
        if let Some(r) = &self.prompt_tokens {
            if !r.contains(f.prompt_tokens) {
                return false;
            }
        }
        if let Some(r) = &self.messages {
            if !r.contains(f.messages) {
                return false;
            }
        }
        if self.has_tools.is_some_and(|want| want != f.has_tools) {
            return false;
        }
        if self.has_images.is_some_and(|want| want != f.has_images) {
            return false;
        }
        if let Some(tenants) = &self.tenants {
            match &f.tenant {
                Some(t) if tenants.contains(t) => {}
                _ => return false,
            }
        }
        if let Some(tags) = &self.tags {
            if !tags.iter().any(|t| f.tags.contains(t)) {
                return false;
            }
        }
        if self.pii.is_some_and(|p| !p.holds(f.pii)) {
            return false;
        }
        true
    }

    /// Whether the conditions on the classifier's outputs hold (true when there are none).
    pub fn matches_classifier(&self, f: &Features) -> bool {
        if let Some(cat) = &self.category {
            match &f.classifier {
                Some(c)
                    if cat.one_of.contains(&c.category) && c.probability >= cat.min_probability => {
                }
                _ => return false,
            }
        }
        if let Some(r) = &self.strong_score {
            match &f.classifier {
                Some(c) if r.contains(c.strong_for(self.strong_model.as_deref())) => {}
                _ => return false,
            }
        }
        true
    }

    /// Why a request with these features does not match: one line per condition that fails
    /// (empty when the rule matches).
    pub fn failures(&self, f: &Features) -> Vec<String> {
        fn range<T: PartialOrd + Copy + std::fmt::Display>(r: &Range<T>) -> String {
            match (r.above, r.below) {
                (Some(a), Some(b)) => format!("above {a} and below {b}"),
                (Some(a), None) => format!("above {a}"),
                (None, Some(b)) => format!("below {b}"),
                (None, None) => "any".into(),
            }
        }
        let mut out = vec![];
        if !self.models.contains(&f.requested_model) {
            out.push(format!(
                "model `{}` is not in [{}]",
                f.requested_model,
                self.models.join(", ")
            ));
        }
        if let Some(r) = self.prompt_tokens.filter(|r| !r.contains(f.prompt_tokens)) {
            out.push(format!(
                "prompt_tokens {} is not {}",
                f.prompt_tokens,
                range(&r)
            ));
        }
        if let Some(r) = self.messages.filter(|r| !r.contains(f.messages)) {
            out.push(format!("messages {} is not {}", f.messages, range(&r)));
        }
        if let Some(want) = self.has_tools.filter(|w| *w != f.has_tools) {
            out.push(format!(
                "has_tools is {}, the rule wants {want}",
                f.has_tools
            ));
        }
        if let Some(want) = self.has_images.filter(|w| *w != f.has_images) {
            out.push(format!(
                "has_images is {}, the rule wants {want}",
                f.has_images
            ));
        }
        if let Some(t) = &self.tenants {
            if !f.tenant.as_ref().is_some_and(|x| t.contains(x)) {
                out.push(format!(
                    "tenant {} is not in [{}]",
                    f.tenant.as_deref().unwrap_or("(none)"),
                    t.join(", ")
                ));
            }
        }
        if let Some(t) = &self.tags {
            if !t.iter().any(|x| f.tags.contains(x)) {
                out.push(format!(
                    "no tag of [{}] in [{}]",
                    t.join(", "),
                    f.tags.join(", ")
                ));
            }
        }
        if let Some(p) = self.pii.filter(|p| !p.holds(f.pii)) {
            out.push(match p {
                PiiCondition::Any(k) => format!("no private data of {k} (found {})", f.pii),
                PiiCondition::Absent => format!("private data was found: {}", f.pii),
            });
        }
        if let Some(cat) = &self.category {
            match &f.classifier {
                None => out.push("category: the request was not classified".into()),
                Some(c) if !cat.one_of.contains(&c.category) => out.push(format!(
                    "category `{}` is not in [{}]",
                    c.category,
                    cat.one_of.join(", ")
                )),
                Some(c) if c.probability < cat.min_probability => out.push(format!(
                    "category probability {:.3} is below {}",
                    c.probability, cat.min_probability
                )),
                Some(_) => {}
            }
        }
        if let Some(r) = &self.strong_score {
            match &f.classifier {
                None => out.push("strong_score: the request was not classified".into()),
                Some(c) if !r.contains(c.strong_for(self.strong_model.as_deref())) => {
                    out.push(format!(
                        "strong_score{} {:.3} is not {}",
                        self.strong_model
                            .as_deref()
                            .map(|m| format!(" (for {m})"))
                            .unwrap_or_default(),
                        c.strong_for(self.strong_model.as_deref()),
                        range(r)
                    ))
                }
                Some(_) => {}
            }
        }
        out
    }

    /// Every request that matches `self` also matches `earlier`: a rule with these
    /// conditions placed after `earlier` can never fire.
    pub fn implies(&self, earlier: &Conditions) -> bool {
        subset(&self.models, &earlier.models)
            && implied(&self.prompt_tokens, &earlier.prompt_tokens, Range::within)
            && implied(&self.messages, &earlier.messages, Range::within)
            && implied(&self.has_tools, &earlier.has_tools, |a, b| a == b)
            && implied(&self.has_images, &earlier.has_images, |a, b| a == b)
            && implied(&self.tenants, &earlier.tenants, |a, b| subset(a, b))
            && implied(&self.tags, &earlier.tags, |a, b| subset(a, b))
            && implied(&self.category, &earlier.category, |l, e| {
                subset(&l.one_of, &e.one_of) && l.min_probability >= e.min_probability
            })
            && implied(&self.strong_score, &earlier.strong_score, Range::within)
            && (self.strong_score.is_none()
                || earlier.strong_score.is_none()
                || self.strong_model == earlier.strong_model)
            && implied(&self.pii, &earlier.pii, PiiCondition::within)
    }
}
