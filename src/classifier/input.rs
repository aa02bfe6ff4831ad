//! What the classifier reads of a conversation.
//!
//! The last user turn: it is what the answer must address, and in a chat app the system prompt
//! is the same for every request (it would only blur the embedding) while earlier turns are
//! mostly answered already. A conversation without a user turn is read from its last message.

use crate::api::Role;

/// The text the classifier scores for a conversation.
pub fn text_of(messages: &[(Role, String)]) -> &str {
    messages
        .iter()
        .rev()
        .find(|(role, text)| *role == Role::User && !text.trim().is_empty())
        .or_else(|| messages.last())
        .map(|(_, text)| text.as_str())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_user_turn() {
        let m = vec![
            (Role::System, "be brief".to_string()),
            (Role::User, "first".to_string()),
            (Role::Assistant, "answer".to_string()),
            (Role::User, "second".to_string()),
        ];
        assert_eq!(text_of(&m), "second");
        assert_eq!(text_of(&m[..1]), "be brief");
        assert_eq!(text_of(&[]), "");
    }
}
