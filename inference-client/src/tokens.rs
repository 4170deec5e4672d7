//! Token estimates, for context budgets and admission.
//!
//! No tokenizer is loaded: a text's tokens are estimated as one per four
//! bytes, rounded up (OpenAI's rule of thumb for English; BPE vocabularies of
//! Llama-3 or Qwen-2 class models land within about 25% of it on chat text,
//! and over-count rather than under-count non-Latin scripts, which is the
//! safe side for a budget). A chat adds four tokens per message for the
//! template's role markers, and three for opening the assistant's turn.

use crate::openai::ChatMessage;

/// Tokens of template overhead per chat message.
pub const PER_MESSAGE: u32 = 4;
/// Tokens that open the assistant's reply.
pub const REPLY_PRIMER: u32 = 3;

/// Estimated tokens of `text`: `ceil(bytes / 4)`.
pub fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

/// Estimated tokens of a chat prompt, template overhead included.
pub fn count_prompt_tokens(messages: &[ChatMessage]) -> u32 {
    messages
        .iter()
        .map(|m| count_tokens(&m.content).saturating_add(PER_MESSAGE))
        .fold(REPLY_PRIMER, u32::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::Role;

    #[test]
    fn estimates() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("a"), 1);
        assert_eq!(count_tokens("abcd"), 1);
        assert_eq!(count_tokens("abcde"), 2);
        assert_eq!(count_tokens(&"word ".repeat(100)), 125);
        let m = [
            ChatMessage::new(Role::System, "abcd"),
            ChatMessage::new(Role::User, "abcdefgh"),
        ];
        assert_eq!(count_prompt_tokens(&m), 3 + (1 + 4) + (2 + 4));
    }
}
