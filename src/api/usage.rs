//! Token counts of one request, as the OpenAI wire format's `usage` object carries them.

use serde::Deserialize;

/// Token counts of one request: the `usage` object of a `chat.completion` or of the last
/// `chat.completion.chunk` of a stream (OpenAI API reference, "The chat completion object").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Tokens of the prompt (`usage.prompt_tokens`).
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated (`usage.completion_tokens`).
    #[serde(default)]
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt and completion tokens together.
    pub fn total(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}
