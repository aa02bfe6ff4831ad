//! Request features: everything the policy may route on, extracted from a parsed request
//! without touching the network or a model.

use crate::api::ChatRequest;

/// What the classifier says about a request (filled in when the policy needs it).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierOutput {
    /// The most likely category.
    pub category: String,
    /// Its probability.
    pub probability: f64,
    /// How likely a small model's answer is worse than a large model's, in [0, 1].
    pub strong_score: f64,
    /// The same, calibrated for each on-box model with its own heads, by model name.
    pub strong_by_model: Vec<(String, f64)>,
}

impl ClassifierOutput {
    /// The strong score calibrated for `model`, else the shared one.
    pub fn strong_for(&self, model: Option<&str>) -> f64 {
        model
            .and_then(|m| self.strong_by_model.iter().find(|(n, _)| n == m))
            .map_or(self.strong_score, |(_, s)| *s)
    }
}

/// The inputs of a routing decision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Features {
    /// The `model` field of the request (`auto`, `local` or a model name).
    pub requested_model: String,
    /// Estimated prompt tokens (see [`estimate_prompt_tokens`]).
    pub prompt_tokens: u64,
    /// Number of messages.
    pub messages: u64,
    pub has_tools: bool,
    pub has_images: bool,
    /// What the request needs of the model that answers it (tools, JSON modes, ...).
    pub needs: crate::api::Capabilities,
    /// Tenant of the gateway key, when keys are configured.
    pub tenant: Option<String>,
    /// Tags from the `x-switchyard-tags` header.
    pub tags: Vec<String>,
    pub classifier: Option<ClassifierOutput>,
    /// Kinds of private data found in the request (empty when the policy does not look).
    pub pii: crate::pii::Kinds,
    /// The model this conversation is pinned to, when sticky routing pinned it.
    pub pinned: Option<Pin>,
}

/// A sticky conversation's pin: the model that answered it and the rule that routed it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub model: String,
    pub rule: String,
}

/// Per-message framing tokens (role markers) added to the estimate.
const TOKENS_PER_MESSAGE: u64 = 4;
/// Tokens counted per image part (a low-detail image on the large providers).
const TOKENS_PER_IMAGE: u64 = 85;

/// Estimates prompt tokens without a tokenizer: about four bytes of text per token,
/// plus message framing, tool definitions and images.
pub fn estimate_prompt_tokens(text_bytes: u64, messages: u64, tool_bytes: u64, images: u64) -> u64 {
    text_bytes.div_ceil(4)
        + tool_bytes.div_ceil(4)
        + messages * TOKENS_PER_MESSAGE
        + 3
        + images * TOKENS_PER_IMAGE
}

/// Estimates a parsed request's prompt tokens: [`estimate_prompt_tokens`] of its messages,
/// tools and images, plus the tokens it sent as ids ([`ChatRequest::token_ids`]), one each.
pub fn estimate_request_tokens(req: &ChatRequest) -> u64 {
    estimate_prompt_tokens(
        req.text_bytes,
        req.message_count,
        req.tool_bytes,
        req.image_count,
    )
    .saturating_add(req.token_ids)
}

/// Estimates tokens of generated text (used when an upstream reports no usage).
pub fn estimate_text_tokens(text_bytes: u64) -> u64 {
    text_bytes.div_ceil(4)
}

/// Parses the `x-switchyard-tags` header: comma-separated, trimmed, empty items dropped.
pub fn parse_tags(header: Option<&str>) -> Vec<String> {
    header
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Extracts the features of a parsed request.
pub fn extract(req: &ChatRequest, tenant: Option<&str>, tags_header: Option<&str>) -> Features {
    Features {
        requested_model: req.model.clone(),
        prompt_tokens: estimate_request_tokens(req),
        messages: req.message_count,
        has_tools: req.tool_bytes > 0,
        has_images: req.image_count > 0,
        needs: req.needs,
        tenant: tenant.map(str::to_string),
        tags: parse_tags(tags_header),
        classifier: None,
        pii: crate::pii::Kinds::NONE,
        pinned: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_split_and_trimmed() {
        assert_eq!(parse_tags(Some(" a, b ,,c")), vec!["a", "b", "c"]);
        assert!(parse_tags(None).is_empty());
    }

    #[test]
    fn estimate_grows_with_text_and_images() {
        let base = estimate_prompt_tokens(400, 1, 0, 0);
        assert_eq!(base, 100 + 4 + 3);
        assert!(estimate_prompt_tokens(400, 1, 0, 1) > base);
        assert!(estimate_prompt_tokens(800, 1, 0, 0) > base);
    }

    #[test]
    fn tokens_sent_as_ids_count_one_each() {
        let mut req =
            ChatRequest::parse(br#"{"model": "m", "messages": [{"role": "user", "content": ""}]}"#)
                .expect("parse");
        let empty = estimate_request_tokens(&req);
        assert_eq!(empty, 4 + 3);
        req.set_token_ids(500);
        assert_eq!(estimate_request_tokens(&req), empty + 500);
        assert_eq!(extract(&req, None, None).prompt_tokens, empty + 500);
    }
}
