//! `ChatFormat`: a model's chat template (or, when it has none, its architecture's turn
//! format: Gemma's for gemma3, ChatML otherwise) bound to its BOS/EOS texts, turning a conversation into the prompt token ids the model expects. Shared by
//! `edgellm run --chat`, `edgellm chat` and the serving engine, so every front end builds the
//! same prompt for the same messages.

use edgellm_runtime::chat_template::{ChatMessage, ChatTemplate};
use edgellm_runtime::tokenizer::Tokenizer;

use crate::arch::Arch;
use crate::error::ModelError;
use crate::model::Model;

/// Gemma's turn format (Google's `chat_template` of the instruction-tuned Gemma 3, for text
/// messages): a system message is prepended to the first user turn, the assistant's role is
/// called `model`, each turn is `<start_of_turn>ROLE\nCONTENT<end_of_turn>\n`. The base
/// Gemma-3-270M file carries no template, but was trained with these control tokens.
const GEMMA_TEMPLATE: &str = "{{ bos_token }}\
{% if messages[0]['role'] == 'system' %}\
{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}\
{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}\
{% for message in loop_messages %}\
{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + (message['content'] | trim) + '<end_of_turn>\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// The turn format of a model whose file has no chat template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// `<start_of_turn>ROLE ... <end_of_turn>` (gemma3).
    Gemma,
    /// `<|im_start|>ROLE ... <|im_end|>` (every other architecture).
    ChatMl,
}

impl Fallback {
    pub fn for_arch(arch: Arch) -> Fallback {
        match arch {
            Arch::Gemma3 => Fallback::Gemma,
            Arch::Llama | Arch::Qwen2 => Fallback::ChatMl,
        }
    }

    /// For a `general.architecture` name (ChatML for names edgellm does not run).
    pub fn for_arch_name(name: &str) -> Fallback {
        Arch::from_name(name).map_or(Fallback::ChatMl, Fallback::for_arch)
    }

    pub fn name(self) -> &'static str {
        match self {
            Fallback::Gemma => "Gemma",
            Fallback::ChatMl => "ChatML",
        }
    }
}

/// A compiled chat template with the model's BOS/EOS texts.
pub struct ChatFormat {
    template: ChatTemplate,
    bos: String,
    eos: String,
    /// Whether the model ships its own template (false: the architecture's fallback).
    pub own_template: bool,
}

impl ChatFormat {
    /// The model's own `tokenizer.chat_template`, or when it has none its architecture's turn
    /// format (Gemma's for gemma3, ChatML for the others).
    pub fn for_model(model: &Model) -> Result<ChatFormat, ModelError> {
        let (template, own_template) = match &model.chat_template {
            Some(src) => (ChatTemplate::new(src)?, true),
            None => match Fallback::for_arch(model.hparams.arch) {
                Fallback::Gemma => (ChatTemplate::new(GEMMA_TEMPLATE)?, false),
                Fallback::ChatMl => (ChatTemplate::chatml(), false),
            },
        };
        let tok = &model.tokenizer;
        let text = |id: Option<u32>| {
            id.map(|b| String::from_utf8_lossy(tok.piece_special(b)).into_owned())
                .unwrap_or_default()
        };
        Ok(ChatFormat {
            template,
            bos: text(tok.bos()),
            eos: text(tok.eos()),
            own_template,
        })
    }

    /// The rendered conversation followed by the assistant's turn header.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ModelError> {
        Ok(self.template.render(messages, true, &self.bos, &self.eos)?)
    }

    /// Renders `messages` with the generation prompt and tokenizes the result (special-token
    /// texts become their ids; BOS is added when the vocabulary asks for it and the template
    /// did not write it).
    pub fn prompt_ids(
        &self,
        tok: &Tokenizer,
        messages: &[ChatMessage],
    ) -> Result<Vec<u32>, ModelError> {
        let text = self.render(messages)?;
        let add_bos = tok.add_bos() && !(self.bos.is_empty() || text.starts_with(&self.bos));
        let mut ids = Vec::new();
        if add_bos {
            ids.extend(tok.bos());
        }
        ids.extend(tok.encode(&text, false, true)?);
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders_generation_prompt() {
        let f = ChatFormat {
            template: ChatTemplate::chatml(),
            bos: String::new(),
            eos: String::new(),
            own_template: false,
        };
        let text = f.render(&[ChatMessage::new("user", "Hi")]).unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    /// The text Google's Gemma 3 template renders for a system + user + assistant + user
    /// conversation (system folded into the first user turn, `model` role, trimmed content).
    #[test]
    fn gemma_fallback_renders_google_turn_format() {
        let f = ChatFormat {
            template: ChatTemplate::new(GEMMA_TEMPLATE).unwrap(),
            bos: "<bos>".into(),
            eos: "<eos>".into(),
            own_template: false,
        };
        let text = f
            .render(&[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", " Hi "),
                ChatMessage::new("assistant", "Hello!"),
                ChatMessage::new("user", "Capital of France?"),
            ])
            .unwrap();
        assert_eq!(
            text,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nCapital of France?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
        let text = f.render(&[ChatMessage::new("user", "Hi")]).unwrap();
        assert_eq!(
            text,
            "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }
}
