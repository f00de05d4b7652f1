//! `ChatFormat`: a model's chat template (or ChatML when it has none) bound to its BOS/EOS
//! texts, turning a conversation into the prompt token ids the model expects. Shared by
//! `edgellm run --chat`, `edgellm chat` and the serving engine, so every front end builds the
//! same prompt for the same messages.

use edgellm_runtime::chat_template::{ChatMessage, ChatTemplate};
use edgellm_runtime::tokenizer::Tokenizer;

use crate::error::ModelError;
use crate::model::Model;

/// A compiled chat template with the model's BOS/EOS texts.
pub struct ChatFormat {
    template: ChatTemplate,
    bos: String,
    eos: String,
    /// Whether the model ships its own template (false: the ChatML fallback).
    pub own_template: bool,
}

impl ChatFormat {
    /// The model's own `tokenizer.chat_template`, or ChatML when it has none.
    pub fn for_model(model: &Model) -> Result<ChatFormat, ModelError> {
        let (template, own_template) = match &model.chat_template {
            Some(src) => (ChatTemplate::new(src)?, true),
            None => (ChatTemplate::chatml(), false),
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
}
