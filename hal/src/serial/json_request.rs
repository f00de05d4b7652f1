//! The console's json mode on the wire: one request per line in (`{"prompt": ...}` or
//! `{"messages": [...]}`, parsed and checked by the socket API's own parsers in
//! [`crate::openai`] so both speak the same fields with the same rules, or `{"mode": ...}`),
//! JSON lines out (`{"token"}`, `{"done"}`, `{"error"}`, `{"mode"}`).
//!
//! Beam search (`"beams"` above 1, or `"n"` above 1) is checked like a socket request and then
//! refused: the console runs ordinary decoding only.

use serde_json::Value;

use crate::engine::{Prompt, Summary};
use crate::openai::{self, BeamRequest, Sampling};

/// What a json-mode line asks for.
#[derive(Debug)]
pub enum JsonCommand {
    Generate { prompt: Prompt, sampling: Sampling },
    Mode(String),
}

/// Parses one line; the error is the message for an `{"error"}` reply.
pub fn parse_line(line: &str) -> Result<JsonCommand, String> {
    let obj = openai::json_object(line.as_bytes()).map_err(|e| e.message)?;
    let has = |k: &str| !matches!(obj.get(k), None | Some(Value::Null));
    match (has("prompt"), has("messages"), obj.get("mode")) {
        (false, false, Some(Value::String(mode))) => Ok(JsonCommand::Mode(mode.clone())),
        (_, _, Some(Value::String(_))) => Err("\"mode\" cannot be combined with a prompt".into()),
        (_, _, Some(_)) => Err("\"mode\" must be \"human\" or \"json\"".into()),
        (true, true, None) => Err("give \"prompt\" or \"messages\", not both".into()),
        (false, false, None) => {
            Err("a request needs \"prompt\" or \"messages\" (or \"mode\")".into())
        }
        (true, false, None) => {
            let r = openai::parse_completion_request(line.as_bytes()).map_err(|e| e.message)?;
            refuse_beams(&r.beams)?;
            Ok(JsonCommand::Generate {
                prompt: r.prompt(),
                sampling: r.sampling,
            })
        }
        (false, true, None) => {
            let r = openai::parse_chat_request(line.as_bytes()).map_err(|e| e.message)?;
            refuse_beams(&r.beams)?;
            Ok(JsonCommand::Generate {
                prompt: r.prompt(),
                sampling: r.sampling,
            })
        }
    }
}

/// The console decodes one answer at a time: a valid beam request is still refused.
fn refuse_beams(b: &BeamRequest) -> Result<(), String> {
    if b.is_beam_search() {
        return Err(format!(
            "beams = {}: beam search is served on the socket API, not on the serial console",
            b.beams
        ));
    }
    Ok(())
}

/// `{"token": "..."}`
pub fn token_line(text: &str) -> String {
    serde_json::json!({ "token": text }).to_string()
}

/// `{"done": true, "stop_reason": "...", "usage": {...}}`
pub fn done_line(s: &Summary) -> String {
    serde_json::json!({
        "done": true,
        "stop_reason": s.stop_reason.name(),
        "usage": {
            "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens,
            "cached_tokens": s.reused_tokens,
        }
    })
    .to_string()
}

/// `{"error": "..."}`
pub fn error_line(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// `{"mode": "..."}`: the acknowledgement of a mode switch.
pub fn mode_line(mode: &str) -> String {
    serde_json::json!({ "mode": mode }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgellm_runtime::chat_template::ChatMessage;

    fn generate(line: &str) -> (Prompt, Sampling) {
        match parse_line(line).unwrap() {
            JsonCommand::Generate { prompt, sampling } => (prompt, sampling),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prompt_and_messages_requests() {
        let (p, s) = generate(r#"{"prompt": "Hi", "max_tokens": 8, "temperature": 0}"#);
        assert!(matches!(p, Prompt::Text(ref t) if t == "Hi"));
        let params = s.generate_params(3, 512, 1);
        assert_eq!(params.max_tokens, 8);
        assert_eq!(params.sampler.temperature, 0.0);
        assert_eq!(params.sampler.top_k, 40);

        let (p, s) = generate(
            r#"{"messages": [{"role": "user", "content": "Hi"}], "stop": "\n", "seed": 7}"#,
        );
        match p {
            Prompt::Chat(m) => assert_eq!(m, [ChatMessage::new("user", "Hi")]),
            other => panic!("{other:?}"),
        }
        let params = s.generate_params(12, 512, 1);
        assert_eq!(params.stop, ["\n"]);
        assert_eq!(params.sampler.seed, 7);
        // No max_tokens: the rest of the context.
        assert_eq!(params.max_tokens, 500);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let err = |line: &str| parse_line(line).unwrap_err();
        assert!(err("not json").contains("not valid JSON"));
        assert!(err(r#"{"prompt": 5}"#).contains("prompt"));
        assert!(err(r#"{}"#).contains("\"prompt\" or \"messages\""));
        assert!(err(r#"{"prompt": "a", "messages": []}"#).contains("not both"));
        assert!(err(r#"{"prompt": "a", "mode": "human"}"#).contains("mode"));
        assert!(err(r#"{"prompt": "a", "top_p": 1.5}"#).contains("top_p"));
        assert!(err(r#"{"prompt": "a", "max_tokens": 0}"#).contains("max_tokens"));
        assert!(err(r#"{"prompt": "a", "stop": [""]}"#).contains("stop"));
        // Checked by the socket API's rules, then refused: the console has no beam caches.
        assert!(err(r#"{"prompt": "a", "beams": 0}"#).contains("beams = 0"));
        assert!(err(r#"{"prompt": "a", "beams": "4"}"#).contains("'beams'"));
        assert!(err(r#"{"prompt": "a", "beams": 4}"#).contains("serial console"));
        assert!(err(r#"{"prompt": "a", "n": 2}"#).contains("n = 2"));
        assert!(matches!(
            parse_line(r#"{"prompt": "a", "beams": 1, "n": 1}"#),
            Ok(JsonCommand::Generate { .. })
        ));
    }

    #[test]
    fn mode_request() {
        assert!(matches!(
            parse_line(r#"{"mode": "human"}"#).unwrap(),
            JsonCommand::Mode(m) if m == "human"
        ));
    }
}
