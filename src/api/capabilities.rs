//! Capabilities: what a request needs of the model that answers it, and what a model can do.
//! A request's needs are read from its OpenAI fields; a model's capabilities are declared in the
//! policy (or reported by its engine), and routing never sends a request to a model that lacks
//! one it needs.

use std::fmt;

/// One thing a request can need of a model. The names are the policy's (`capabilities: [...]`)
/// and the OpenAI request fields they come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// `tools` (or `functions`) the model may call, unless `tool_choice` is `"none"`.
    Tools,
    /// `response_format: {"type": "json_object"}`.
    JsonObject,
    /// `response_format: {"type": "json_schema", ...}`.
    JsonSchema,
    /// `logprobs: true` or `top_logprobs`.
    Logprobs,
    /// `n` above 1 (several choices).
    N,
    /// Image content parts (`image_url`).
    Images,
    /// Audio content parts (`input_audio`), or an answer in audio (`modalities` with `audio`,
    /// or `audio` output settings).
    Audio,
    /// File content parts (`file`).
    Files,
    /// A web search before the answer (`web_search_options`, OpenAI's search models).
    WebSearch,
    /// A raw prompt continued as it is, without a chat template (a legacy completions request,
    /// `POST /v1/completions`): the on-box engine, and cloud models that declare
    /// `completions: true`.
    Completions,
    /// What only the Responses API serves (a Responses request with reasoning summaries or
    /// reasoning items, `include`, built-in or custom tools and their calls, file inputs): such
    /// a request is passed as it came to an OpenAI model that declares `responses: true`, and
    /// no other model can answer it.
    Responses,
    /// What only Anthropic's Messages API serves (a Messages request with extended
    /// `thinking`, server or Anthropic-defined tools and their blocks, documents, MCP servers,
    /// a container): such a request is passed as it came to a `kind: anthropic` model, which
    /// always has it, and no other model can answer it.
    Messages,
    /// An embedding of the input (`POST /v1/embeddings`): the request is passed as it came to
    /// an OpenAI-compatible model that declares `embeddings: true`, and no other model can
    /// answer it.
    Embeddings,
}

impl Capability {
    /// Every capability, in the order of the bit set.
    pub const ALL: [Capability; 13] = [
        Capability::Tools,
        Capability::JsonObject,
        Capability::JsonSchema,
        Capability::Logprobs,
        Capability::N,
        Capability::Images,
        Capability::Audio,
        Capability::Files,
        Capability::WebSearch,
        Capability::Completions,
        Capability::Responses,
        Capability::Messages,
        Capability::Embeddings,
    ];

    /// The policy's name of the capability.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Tools => "tools",
            Capability::JsonObject => "json_object",
            Capability::JsonSchema => "json_schema",
            Capability::Logprobs => "logprobs",
            Capability::N => "n",
            Capability::Images => "images",
            Capability::Audio => "audio",
            Capability::Files => "files",
            Capability::WebSearch => "web_search",
            Capability::Completions => "completions",
            Capability::Responses => "responses",
            Capability::Messages => "messages",
            Capability::Embeddings => "embeddings",
        }
    }

    /// The reason label when a model is skipped for lacking it (`x-switchyard-fallback`).
    pub fn lacking(self) -> &'static str {
        match self {
            Capability::Tools => "lacks_tools",
            Capability::JsonObject => "lacks_json_object",
            Capability::JsonSchema => "lacks_json_schema",
            Capability::Logprobs => "lacks_logprobs",
            Capability::N => "lacks_n",
            Capability::Images => "lacks_images",
            Capability::Audio => "lacks_audio",
            Capability::Files => "lacks_files",
            Capability::WebSearch => "lacks_web_search",
            Capability::Completions => "lacks_completions",
            Capability::Responses => "lacks_responses",
            Capability::Messages => "lacks_messages",
            Capability::Embeddings => "lacks_embeddings",
        }
    }

    /// The request parameter a client sets to need it (the `param` of the error; for
    /// [`Capability::Responses`] the request names its own field,
    /// [`super::ChatRequest::dialect_only`]; for [`Capability::Messages`] as well).
    pub fn param(self) -> &'static str {
        match self {
            Capability::Tools => "tools",
            Capability::JsonObject | Capability::JsonSchema => "response_format",
            Capability::Logprobs => "logprobs",
            Capability::N => "n",
            Capability::Images | Capability::Audio | Capability::Files => "messages",
            Capability::WebSearch => "web_search_options",
            Capability::Completions => "prompt",
            Capability::Responses | Capability::Embeddings => "input",
            Capability::Messages => "messages",
        }
    }

    /// The capability of a policy name.
    pub fn parse(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Capabilities(u16);

impl Capabilities {
    /// No capability: what a plain text chat request needs.
    pub const NONE: Capabilities = Capabilities(0);

    /// Every capability the gateway knows (an OpenAI-compatible model's default is this but
    /// `completions`, `responses` and `embeddings`, which it must declare, and `messages`, which only
    /// Anthropic models have: its provider refuses what the model behind it lacks).
    pub fn all() -> Capabilities {
        Capability::ALL.into_iter().collect()
    }

    pub fn with(self, c: Capability) -> Capabilities {
        Capabilities(self.0 | c.bit())
    }

    pub fn without(self, c: Capability) -> Capabilities {
        Capabilities(self.0 & !c.bit())
    }

    pub fn has(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The first capability of `self` (a request's needs) that `model` lacks.
    pub fn first_missing(self, model: Capabilities) -> Option<Capability> {
        self.iter().find(|c| !model.has(*c))
    }

    /// The capabilities in the set, in [`Capability::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.has(*c))
    }

    /// The names, comma-separated (`none` for the empty set).
    pub fn names(self) -> String {
        if self.is_empty() {
            return "none".into();
        }
        self.iter()
            .map(Capability::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Capabilities::NONE, |set, c| set.with(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_name_and_find_what_is_missing() {
        for c in Capability::ALL {
            assert_eq!(Capability::parse(c.name()), Some(c));
        }
        assert_eq!(Capability::parse("vision"), None);
        let needs: Capabilities = [Capability::JsonSchema, Capability::Tools]
            .into_iter()
            .collect();
        let model = Capabilities::NONE.with(Capability::Tools);
        assert_eq!(needs.first_missing(model), Some(Capability::JsonSchema));
        assert_eq!(needs.first_missing(Capabilities::all()), None);
        assert_eq!(Capabilities::NONE.first_missing(Capabilities::NONE), None);
        assert_eq!(needs.names(), "tools, json_schema");
        assert_eq!(Capabilities::NONE.names(), "none");
    }
}
