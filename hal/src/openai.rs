//! The OpenAI-compatible API's wire shapes: request bodies parsed and validated into what the
//! engine takes ([`Prompt`], [`GenerateParams`]), the response and streaming-chunk objects,
//! and [`ApiError`], OpenAI's error object with its HTTP status.
//!
//! Pure: no I/O, no engine, no HTTP library. The socket server feeds it request bodies; a fuzz
//! target can feed it any bytes. Every `parse_*` entry point takes the raw body and either
//! returns a fully checked request or an [`ApiError`] naming the offending field (`param`).
//!
//! Fields are read one by one from the JSON object so a wrong type names its field; unknown
//! fields are ignored (clients send `user`, `logprobs: false`, `tools: []` and the like).
//!
//! Beam search is an extension ([`BeamRequest`]): `beams` (1, the default, is ordinary
//! decoding), `length_penalty`, and OpenAI's `n` choosing how many of the final beams come
//! back. Like `edgellm run --beams`, a beam search is deterministic: the sampling fields
//! (`temperature`, `top_p`, `seed`, ...) are accepted and ignored, and `stop` is refused.

use edgellm_models::{BeamParams, GenerateParams, StopReason};
use edgellm_runtime::chat_template::ChatMessage;
use edgellm_runtime::sampler::{SamplerConfig, SamplerError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::{BeamChoice, Prompt, Summary};

/// Most stop strings a request may give (OpenAI allows 4; llama.cpp more).
pub const MAX_STOP_STRINGS: usize = 16;

/// An error in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
/// HTTP status it is sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `server_error`, ...
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    /// 400 about one field.
    pub fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }

    /// 400 about the body as a whole.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn new(status: u16, kind: &'static str, code: &'static str, message: String) -> ApiError {
        ApiError {
            status,
            message,
            kind,
            param: None,
            code: Some(code),
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        })
        .unwrap_or_else(|_| {
            String::from(
                r#"{"error":{"message":"error","type":"server_error","param":null,"code":null}}"#,
            )
        })
    }
}

/// A fresh seed for a request that gave none (the process' random hasher keys, the clock and a
/// counter): different every call.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Sampling and stopping fields shared by both completion endpoints, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// `max_tokens` / `max_completion_tokens`; `None`: what the context leaves after the prompt.
    pub max_tokens: Option<usize>,
    /// Every sampler field; `seed` holds the request's seed when `seed` is `Some`.
    pub sampler: SamplerConfig,
    /// The request's seed; `None` (absent or -1): a fresh random one per request.
    pub seed: Option<u64>,
    pub stop: Vec<String>,
}

impl Sampling {
    /// The engine's parameters for a prompt of `prompt_len` tokens in a context of `n_ctx`;
    /// `random_seed` is used when the request gave none.
    pub fn generate_params(
        &self,
        prompt_len: usize,
        n_ctx: usize,
        random_seed: u64,
    ) -> GenerateParams {
        let mut sampler = self.sampler.clone();
        sampler.seed = self.seed.unwrap_or(random_seed);
        GenerateParams {
            max_tokens: self
                .max_tokens
                .unwrap_or_else(|| n_ctx.saturating_sub(prompt_len)),
            sampler,
            stop: self.stop.clone(),
            ignore_eos: false,
            context_shift: None,
        }
    }
}

/// The beam-search fields both completion endpoints share, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamRequest {
    /// `beams`: beams to search with; 1 (the default) is ordinary decoding.
    pub beams: usize,
    /// `length_penalty`: beams rank by `logprob_sum / len^length_penalty` (default as
    /// `edgellm run --beams`: 1).
    pub length_penalty: f32,
    /// `n`: the best `n` beams come back as `choices` (`1..=beams`, default 1).
    pub n: usize,
}

impl Default for BeamRequest {
    fn default() -> Self {
        BeamRequest {
            beams: 1,
            length_penalty: BeamParams::default().length_penalty,
            n: 1,
        }
    }
}

impl BeamRequest {
    /// A beam search, not ordinary decoding.
    pub fn is_beam_search(&self) -> bool {
        self.beams > 1
    }

    /// The search's parameters for a prompt of `prompt_len` tokens in a context of `n_ctx`
    /// (`max_tokens` as [`Sampling::generate_params`] reads it).
    pub fn beam_params(&self, sampling: &Sampling, prompt_len: usize, n_ctx: usize) -> BeamParams {
        BeamParams {
            max_tokens: sampling
                .max_tokens
                .unwrap_or_else(|| n_ctx.saturating_sub(prompt_len)),
            length_penalty: self.length_penalty,
            ignore_eos: false,
        }
    }
}

/// A checked `POST /v1/chat/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Whatever the client named; the one loaded model answers.
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
    pub beams: BeamRequest,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage and no choices.
    pub include_usage: bool,
}

impl ChatRequest {
    pub fn prompt(&self) -> Prompt {
        Prompt::Chat(self.messages.clone())
    }
}

/// The prompt of a `POST /v1/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionPrompt {
    Text(String),
    Ids(Vec<u32>),
}

/// A checked `POST /v1/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: CompletionPrompt,
    pub sampling: Sampling,
    pub beams: BeamRequest,
    pub stream: bool,
    pub include_usage: bool,
}

impl CompletionRequest {
    pub fn prompt(&self) -> Prompt {
        match &self.prompt {
            CompletionPrompt::Text(t) => Prompt::Text(t.clone()),
            CompletionPrompt::Ids(ids) => Prompt::Ids(ids.clone()),
        }
    }
}

/// `POST /tokenize` (llama.cpp's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizeRequest {
    pub content: String,
    /// BOS as the vocabulary asks (llama.cpp's default: false).
    pub add_special: bool,
    /// Special-token texts become their ids (llama.cpp's default: true).
    pub parse_special: bool,
}

/// `POST /detokenize` (llama.cpp's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

/// The JSON object of a body; malformed JSON and non-objects are 400s.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::bad_request(format!(
            "the body must be a JSON object, not {}",
            json_kind(&other)
        ))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Field `name` as `T`; absent and `null` are `None`; a wrong type is a 400 naming it.
fn field<T: DeserializeOwned>(
    obj: &Map<String, Value>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|_| {
            ApiError::invalid(
                name,
                format!("'{name}' must be {expected}, not {}", json_kind(v)),
            )
        }),
    }
}

fn non_negative_int(obj: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    field::<u64>(obj, name, "a non-negative integer")
}

/// A number field, kept as f32 (what the sampler uses); values too large for f32 become
/// infinite and fail validation with their field named.
fn number(obj: &Map<String, Value>, name: &str) -> Result<Option<f32>, ApiError> {
    Ok(field::<f64>(obj, name, "a number")?.map(|v| v as f32))
}

/// Reads the fields both completion endpoints (and the serial console's json mode) share.
/// `n` is read by [`parse_beams`].
pub fn parse_sampling(obj: &Map<String, Value>) -> Result<Sampling, ApiError> {
    let max_completion = non_negative_int(obj, "max_completion_tokens")?;
    let max_tokens = non_negative_int(obj, "max_tokens")?;
    let (max_name, max) = match (max_completion, max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    if max == Some(0) {
        return Err(ApiError::invalid(
            max_name,
            format!("{max_name} = 0: must be at least 1"),
        ));
    }
    let defaults = SamplerConfig::default();
    let sampler = SamplerConfig {
        temperature: number(obj, "temperature")?.unwrap_or(defaults.temperature),
        top_k: non_negative_int(obj, "top_k")?.map_or(defaults.top_k, saturate),
        top_p: number(obj, "top_p")?.unwrap_or(defaults.top_p),
        min_p: number(obj, "min_p")?.unwrap_or(defaults.min_p),
        repeat_penalty: number(obj, "repeat_penalty")?.unwrap_or(defaults.repeat_penalty),
        repeat_last_n: non_negative_int(obj, "repeat_last_n")?
            .map_or(defaults.repeat_last_n, saturate),
        frequency_penalty: number(obj, "frequency_penalty")?.unwrap_or(defaults.frequency_penalty),
        presence_penalty: number(obj, "presence_penalty")?.unwrap_or(defaults.presence_penalty),
        seed: 0,
    };
    sampler.validate().map_err(|e| match &e {
        SamplerError::InvalidField { field, .. } => ApiError::invalid(field, e.to_string()),
        SamplerError::InvalidVocab(_) => ApiError::bad_request(e.to_string()),
    })?;
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64() == Some(-1) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(v) => {
            return Err(ApiError::invalid(
                "seed",
                format!("'seed' must be a non-negative integer (or -1 for a random one), not {v}"),
            ))
        }
    };
    let stop = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::invalid(
                    "stop",
                    format!("'stop' items must be strings, not {}", json_kind(other)),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "'stop' must be a string or an array of strings, not {}",
                    json_kind(other)
                ),
            ))
        }
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "{} stop strings given; at most {MAX_STOP_STRINGS} are allowed",
                stop.len()
            ),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop strings must not be empty"));
    }
    Ok(Sampling {
        max_tokens: max.map(saturate),
        sampler,
        seed,
        stop,
    })
}

/// Reads `beams`, `length_penalty` and `n`, checked against each other and against the
/// sampling fields already read (`stop` does not apply to a beam search).
pub fn parse_beams(obj: &Map<String, Value>, sampling: &Sampling) -> Result<BeamRequest, ApiError> {
    let defaults = BeamRequest::default();
    let beams = field::<u64>(obj, "beams", "a positive integer")?.map_or(defaults.beams, saturate);
    if beams == 0 {
        return Err(ApiError::invalid(
            "beams",
            "beams = 0: must be at least 1 (1 is ordinary decoding)",
        ));
    }
    let length_penalty = number(obj, "length_penalty")?.unwrap_or(defaults.length_penalty);
    if !length_penalty.is_finite() {
        return Err(ApiError::invalid(
            "length_penalty",
            format!("length_penalty = {length_penalty}: must be a finite number"),
        ));
    }
    let n = match field::<i64>(obj, "n", "an integer")? {
        None => defaults.n,
        Some(n) if n < 1 => {
            return Err(ApiError::invalid(
                "n",
                format!("n = {n}: must be at least 1"),
            ))
        }
        Some(n) if n as u64 > beams as u64 => {
            return Err(ApiError::invalid(
                "n",
                if beams == 1 {
                    format!("n = {n}: more than one choice needs beam search (`beams`: N with N >= n; the choices are the N best beams)")
                } else {
                    format!("n = {n}: at most beams ({beams}) choices")
                },
            ))
        }
        Some(n) => n as usize,
    };
    if beams > 1 && !sampling.stop.is_empty() {
        return Err(ApiError::invalid(
            "stop",
            "stop strings do not apply to beam search (beams > 1)",
        ));
    }
    Ok(BeamRequest {
        beams,
        length_penalty,
        n,
    })
}

fn saturate(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// `stream` and `stream_options.include_usage`.
fn streaming(obj: &Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = field::<bool>(obj, "stream", "a boolean")?.unwrap_or(false);
    let include_usage = match obj.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(ApiError::invalid(
                    "stream_options.include_usage",
                    format!(
                        "'stream_options.include_usage' must be a boolean, not {}",
                        json_kind(other)
                    ),
                ))
            }
        },
        Some(other) => {
            return Err(ApiError::invalid(
                "stream_options",
                format!(
                    "'stream_options' must be an object, not {}",
                    json_kind(other)
                ),
            ))
        }
    };
    Ok((stream, include_usage))
}

fn model_name(obj: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    field::<String>(obj, "model", "a string")
}

/// One message's `content`: a string or an array of `{"type": "text", "text": ...}` parts.
#[derive(Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: Option<MessageContent>,
}

/// Roles the chat template knows; `developer` (OpenAI's newer name) is sent as `system`.
fn template_role(role: &str) -> Option<&'static str> {
    match role {
        "system" | "developer" => Some("system"),
        "user" => Some("user"),
        "assistant" => Some("assistant"),
        _ => None,
    }
}

/// Parses and checks a `POST /v1/chat/completions` body.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let obj = json_object(body)?;
    let raw = match obj.get("messages") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("messages", "'messages' is required"))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::invalid(
                "messages",
                format!("'messages' must be an array, not {}", json_kind(other)),
            ))
        }
    };
    if raw.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "'messages' must not be empty",
        ));
    }
    let mut messages = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let param = format!("messages[{i}]");
        let m = WireMessage::deserialize(v).map_err(|e| {
            ApiError::invalid(
                &param,
                format!("{param} must be an object with 'role' and 'content': {e}"),
            )
        })?;
        let role = template_role(&m.role).ok_or_else(|| {
            ApiError::invalid(
                &format!("{param}.role"),
                format!(
                    "{param}.role = {:?}: must be system, developer, user or assistant",
                    m.role
                ),
            )
        })?;
        let content = match m.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t,
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.into_iter().enumerate() {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                &format!("{param}.content[{j}]"),
                                format!(
                                    "{param}.content[{j}] has type {kind:?}: only text parts are supported"
                                ),
                            ))
                        }
                    }
                }
                text
            }
        };
        messages.push(ChatMessage::new(role, content));
    }
    if messages.iter().all(|m| m.content.is_empty()) {
        return Err(ApiError::invalid(
            "messages",
            "every message is empty: the prompt is empty",
        ));
    }
    let sampling = parse_sampling(&obj)?;
    let beams = parse_beams(&obj, &sampling)?;
    let (stream, include_usage) = streaming(&obj)?;
    Ok(ChatRequest {
        model: model_name(&obj)?,
        messages,
        sampling,
        beams,
        stream,
        include_usage,
    })
}

/// Parses and checks a `POST /v1/completions` body. `prompt` is a string, token ids, or a
/// one-element array of either (more prompts would be more choices: 400).
pub fn parse_completion_request(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let obj = json_object(body)?;
    let prompt = match obj.get("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("prompt", "'prompt' is required"))
        }
        Some(v) => completion_prompt(v)?,
    };
    let empty = match &prompt {
        CompletionPrompt::Text(t) => t.is_empty(),
        CompletionPrompt::Ids(ids) => ids.is_empty(),
    };
    if empty {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    if field::<bool>(&obj, "echo", "a boolean")? == Some(true) {
        return Err(ApiError::invalid("echo", "echo is not supported"));
    }
    let sampling = parse_sampling(&obj)?;
    let beams = parse_beams(&obj, &sampling)?;
    let (stream, include_usage) = streaming(&obj)?;
    Ok(CompletionRequest {
        model: model_name(&obj)?,
        prompt,
        sampling,
        beams,
        stream,
        include_usage,
    })
}

fn completion_prompt(v: &Value) -> Result<CompletionPrompt, ApiError> {
    let wrong = || {
        ApiError::invalid(
            "prompt",
            format!(
                "'prompt' must be a string or an array of token ids, not {}",
                json_kind(v)
            ),
        )
    };
    match v {
        Value::String(s) => Ok(CompletionPrompt::Text(s.clone())),
        Value::Array(items) => match items.first() {
            None => Ok(CompletionPrompt::Ids(Vec::new())),
            Some(Value::Number(_)) => token_ids(items, "prompt").map(CompletionPrompt::Ids),
            Some(first @ (Value::String(_) | Value::Array(_))) => {
                if items.len() > 1 {
                    return Err(ApiError::invalid(
                        "prompt",
                        format!(
                            "{} prompts given: one per request is supported",
                            items.len()
                        ),
                    ));
                }
                match first {
                    Value::String(s) => Ok(CompletionPrompt::Text(s.clone())),
                    Value::Array(ids) => token_ids(ids, "prompt").map(CompletionPrompt::Ids),
                    _ => Err(wrong()),
                }
            }
            Some(_) => Err(wrong()),
        },
        _ => Err(wrong()),
    }
}

fn token_ids(items: &[Value], param: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        param,
                        format!("token ids must be integers in 0..2^32, not {v}"),
                    )
                })
        })
        .collect()
}

/// Parses a `POST /tokenize` body.
pub fn parse_tokenize_request(body: &[u8]) -> Result<TokenizeRequest, ApiError> {
    let obj = json_object(body)?;
    let content = field::<String>(&obj, "content", "a string")?
        .ok_or_else(|| ApiError::invalid("content", "'content' is required"))?;
    Ok(TokenizeRequest {
        content,
        add_special: field::<bool>(&obj, "add_special", "a boolean")?.unwrap_or(false),
        parse_special: field::<bool>(&obj, "parse_special", "a boolean")?.unwrap_or(true),
    })
}

/// Parses a `POST /detokenize` body.
pub fn parse_detokenize_request(body: &[u8]) -> Result<DetokenizeRequest, ApiError> {
    let obj = json_object(body)?;
    let tokens = match obj.get("tokens") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("tokens", "'tokens' is required"))
        }
        Some(Value::Array(items)) => token_ids(items, "tokens")?,
        Some(other) => {
            return Err(ApiError::invalid(
                "tokens",
                format!(
                    "'tokens' must be an array of token ids, not {}",
                    json_kind(other)
                ),
            ))
        }
    };
    Ok(DetokenizeRequest { tokens })
}

// ----- responses -----

/// `usage`, with the prompt tokens found in the cache under `prompt_tokens_details`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn of(s: &Summary) -> Usage {
        Usage {
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            total_tokens: s.prompt_tokens + s.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: s.reused_tokens,
            },
        }
    }
}

/// llama.cpp's `timings` extension.
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
    pub predicted_per_second: f64,
}

impl Timings {
    pub fn of(s: &Summary) -> Timings {
        Timings {
            prompt_n: s.prompt_tokens - s.reused_tokens,
            prompt_ms: s.prompt_ms,
            prompt_per_second: s.prompt_tokens_per_s,
            predicted_n: s.completion_tokens,
            predicted_ms: s.gen_ms,
            predicted_per_second: s.gen_tokens_per_s,
        }
    }
}

/// What every response object starts with.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    /// `chatcmpl-N` or `cmpl-N`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The loaded model's name.
    pub model: String,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// One answer of a response: the text, why it ended and, for a beam, its score.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub text: &'a str,
    pub stop_reason: StopReason,
    /// The beam's length-penalized log-probability (`beam_score`, an extension).
    pub beam_score: Option<f64>,
}

impl<'a> Answer<'a> {
    /// The answer of an ordinary job.
    pub fn single(text: &'a str, s: &Summary) -> [Answer<'a>; 1] {
        [Answer {
            text,
            stop_reason: s.stop_reason,
            beam_score: None,
        }]
    }

    /// The answers of a beam job, best first.
    pub fn of_beams(beams: &'a [BeamChoice]) -> Vec<Answer<'a>> {
        beams
            .iter()
            .map(|b| Answer {
                text: &b.text,
                stop_reason: b.stop_reason,
                beam_score: Some(b.score),
            })
            .collect()
    }
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    beam_score: Option<f64>,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChatChoice<'a>>,
    usage: Usage,
    timings: Timings,
}

/// A `chat.completion` object with one choice per answer (in order).
pub fn chat_completion(meta: &ResponseMeta, answers: &[Answer<'_>], s: &Summary) -> Value {
    json_value(&ChatCompletion {
        id: &meta.id,
        object: "chat.completion",
        created: meta.created,
        model: &meta.model,
        choices: answers
            .iter()
            .zip(0..)
            .map(|(a, index)| ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content: a.text,
                },
                logprobs: None,
                finish_reason: finish_reason(a.stop_reason),
                beam_score: a.beam_score,
            })
            .collect(),
        usage: Usage::of(s),
        timings: Timings::of(s),
    })
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    beam_score: Option<f64>,
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<TextChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings: Option<Timings>,
}

/// A `text_completion` object with one choice per answer (in order).
pub fn text_completion(meta: &ResponseMeta, answers: &[Answer<'_>], s: &Summary) -> Value {
    json_value(&TextCompletion {
        id: &meta.id,
        object: "text_completion",
        created: meta.created,
        model: &meta.model,
        choices: answers
            .iter()
            .zip(0..)
            .map(|(a, index)| TextChoice {
                text: a.text,
                index,
                logprobs: None,
                finish_reason: Some(finish_reason(a.stop_reason)),
                beam_score: a.beam_score,
            })
            .collect(),
        usage: Some(Some(Usage::of(s))),
        timings: Some(Timings::of(s)),
    })
}

pub fn finish_reason(r: StopReason) -> &'static str {
    r.finish_reason()
}

/// Which streaming object an endpoint sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `chat.completion.chunk`
    Chat,
    /// `text_completion`
    Text,
}

/// What one streamed chunk carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkPart<'a> {
    /// The first chat chunk: `delta.role`.
    Role,
    /// Generated text.
    Content(&'a str),
    /// The last chunk with choices: `finish_reason`, empty delta.
    Finish(StopReason),
    /// A streamed beam job's choice `index`: its whole text (and, past the first choice, its
    /// role) with its `beam_score`.
    BeamContent {
        index: u32,
        text: &'a str,
        beam_score: f64,
    },
    /// A streamed beam job's choice `index` ended.
    BeamFinish { index: u32, reason: StopReason },
    /// `stream_options.include_usage`: no choices, the usage.
    Usage(&'a Summary),
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    beam_score: Option<f64>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    /// Present (null until the last chunk) only when the client asked for usage, as OpenAI.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings: Option<Timings>,
}

/// One streamed chunk object of `kind`.
pub fn stream_chunk(
    kind: StreamKind,
    meta: &ResponseMeta,
    part: &ChunkPart<'_>,
    include_usage: bool,
) -> Value {
    let usage_field = |u: Option<Usage>| include_usage.then_some(u);
    match kind {
        StreamKind::Chat => {
            let (choices, usage, timings) = match part {
                ChunkPart::Role => (
                    vec![chunk_choice(0, Some("assistant"), Some(""), None)],
                    usage_field(None),
                    None,
                ),
                ChunkPart::Content(t) => (
                    vec![chunk_choice(0, None, Some(t), None)],
                    usage_field(None),
                    None,
                ),
                ChunkPart::Finish(r) => (
                    vec![chunk_choice(0, None, None, Some(finish_reason(*r)))],
                    usage_field(None),
                    None,
                ),
                ChunkPart::BeamContent {
                    index,
                    text,
                    beam_score,
                } => {
                    // The first chunk gave choice 0 its role; the others get theirs here.
                    let role = (*index > 0).then_some("assistant");
                    let mut c = chunk_choice(*index, role, Some(text), None);
                    c.beam_score = Some(*beam_score);
                    (vec![c], usage_field(None), None)
                }
                ChunkPart::BeamFinish { index, reason } => (
                    vec![chunk_choice(
                        *index,
                        None,
                        None,
                        Some(finish_reason(*reason)),
                    )],
                    usage_field(None),
                    None,
                ),
                ChunkPart::Usage(s) => (Vec::new(), Some(Some(Usage::of(s))), Some(Timings::of(s))),
            };
            json_value(&ChatChunk {
                id: &meta.id,
                object: "chat.completion.chunk",
                created: meta.created,
                model: &meta.model,
                choices,
                usage,
                timings,
            })
        }
        StreamKind::Text => {
            let (choices, usage, timings) = match part {
                ChunkPart::Role => (Vec::new(), usage_field(None), None),
                ChunkPart::Content(t) => (
                    vec![TextChoice {
                        text: t,
                        index: 0,
                        logprobs: None,
                        finish_reason: None,
                        beam_score: None,
                    }],
                    usage_field(None),
                    None,
                ),
                ChunkPart::Finish(r) => (
                    vec![TextChoice {
                        text: "",
                        index: 0,
                        logprobs: None,
                        finish_reason: Some(finish_reason(*r)),
                        beam_score: None,
                    }],
                    usage_field(None),
                    None,
                ),
                ChunkPart::BeamContent {
                    index,
                    text,
                    beam_score,
                } => (
                    vec![TextChoice {
                        text,
                        index: *index,
                        logprobs: None,
                        finish_reason: None,
                        beam_score: Some(*beam_score),
                    }],
                    usage_field(None),
                    None,
                ),
                ChunkPart::BeamFinish { index, reason } => (
                    vec![TextChoice {
                        text: "",
                        index: *index,
                        logprobs: None,
                        finish_reason: Some(finish_reason(*reason)),
                        beam_score: None,
                    }],
                    usage_field(None),
                    None,
                ),
                ChunkPart::Usage(s) => (Vec::new(), Some(Some(Usage::of(s))), Some(Timings::of(s))),
            };
            json_value(&TextCompletion {
                id: &meta.id,
                object: "text_completion",
                created: meta.created,
                model: &meta.model,
                choices,
                usage,
                timings,
            })
        }
    }
}

fn chunk_choice<'a>(
    index: u32,
    role: Option<&'static str>,
    content: Option<&'a str>,
    finish: Option<&'static str>,
) -> ChunkChoice<'a> {
    ChunkChoice {
        index,
        delta: Delta { role, content },
        logprobs: None,
        finish_reason: finish,
        beam_score: None,
    }
}

/// Serializes a response shape; these are plain structs of strings and numbers, which
/// `serde_json` always serializes (non-finite floats become `null`).
fn json_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chat(extra: &str) -> Result<ChatRequest, ApiError> {
        let body =
            format!(r#"{{"model":"x","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#);
        parse_chat_request(body.as_bytes())
    }

    #[test]
    fn defaults_are_llama_cpp_servers() {
        let r = chat("").unwrap();
        assert_eq!(r.messages, vec![ChatMessage::new("user", "hi")]);
        assert_eq!(r.sampling.sampler.temperature, 0.8);
        assert_eq!(r.sampling.sampler.top_k, 40);
        assert_eq!(r.sampling.sampler.top_p, 0.95);
        assert_eq!(r.sampling.sampler.min_p, 0.05);
        assert_eq!(r.sampling.seed, None);
        assert_eq!(r.sampling.max_tokens, None);
        assert!(!r.stream && !r.include_usage);
        let p = r.sampling.generate_params(10, 1024, 7);
        assert_eq!(p.max_tokens, 1014);
        assert_eq!(p.sampler.seed, 7);
    }

    #[test]
    fn every_field_is_read() {
        let r = chat(
            r#","max_completion_tokens":5,"max_tokens":9,"temperature":0,"top_p":0.5,"top_k":3,
            "min_p":0.1,"repeat_penalty":1.1,"frequency_penalty":0.5,"presence_penalty":-0.5,
            "seed":42,"stop":["a","b"],"n":1,"stream":true,"stream_options":{"include_usage":true}"#,
        )
        .unwrap();
        let s = &r.sampling;
        assert_eq!(s.max_tokens, Some(5));
        assert_eq!(s.sampler.temperature, 0.0);
        assert_eq!(s.sampler.top_p, 0.5);
        assert_eq!(s.sampler.top_k, 3);
        assert_eq!(s.sampler.min_p, 0.1);
        assert_eq!(s.sampler.repeat_penalty, 1.1);
        assert_eq!(s.sampler.frequency_penalty, 0.5);
        assert_eq!(s.sampler.presence_penalty, -0.5);
        assert_eq!(s.seed, Some(42));
        assert_eq!(s.stop, vec!["a", "b"]);
        assert!(r.stream && r.include_usage);
        assert_eq!(s.generate_params(3, 100, 1).sampler.seed, 42);
    }

    #[test]
    fn bad_values_name_their_field() {
        for (extra, param) in [
            (r#","temperature":-1"#, "temperature"),
            (r#","temperature":1e300"#, "temperature"),
            (r#","temperature":"hot""#, "temperature"),
            (r#","top_p":0"#, "top_p"),
            (r#","top_p":1.5"#, "top_p"),
            (r#","min_p":2"#, "min_p"),
            (r#","repeat_penalty":0"#, "repeat_penalty"),
            (r#","frequency_penalty":3"#, "frequency_penalty"),
            (r#","n":2"#, "n"),
            (r#","max_tokens":0"#, "max_tokens"),
            (r#","max_tokens":-4"#, "max_tokens"),
            (r#","seed":-2"#, "seed"),
            (r#","stop":[1]"#, "stop"),
            (r#","stop":"""#, "stop"),
            (r#","stream":"yes""#, "stream"),
            (
                r#","stream_options":{"include_usage":1}"#,
                "stream_options.include_usage",
            ),
            (r#","model":3"#, "model"),
        ] {
            let e = chat(extra).expect_err(extra);
            assert_eq!(e.status, 400, "{extra}");
            assert_eq!(e.param.as_deref(), Some(param), "{extra}: {}", e.message);
        }
    }

    #[test]
    fn beam_fields() {
        let r = chat("").unwrap();
        assert_eq!(r.beams, BeamRequest::default());
        assert!(!r.beams.is_beam_search());
        let r = chat(r#","beams":4,"length_penalty":0.5,"n":2,"max_tokens":7,"temperature":1.5"#)
            .unwrap();
        assert_eq!(
            r.beams,
            BeamRequest {
                beams: 4,
                length_penalty: 0.5,
                n: 2
            }
        );
        let p = r.beams.beam_params(&r.sampling, 10, 100);
        assert_eq!(
            (p.max_tokens, p.length_penalty, p.ignore_eos),
            (7, 0.5, false)
        );
        // No max_tokens: what the context leaves, as for ordinary decoding.
        let r = chat(r#","beams":3,"length_penalty":-1,"n":3"#).unwrap();
        assert_eq!(r.beams.beam_params(&r.sampling, 10, 100).max_tokens, 90);
        assert_eq!(r.beams.length_penalty, -1.0);
        // One beam is ordinary decoding, stop strings and all.
        assert_eq!(
            chat(r#","beams":1,"stop":"x""#).unwrap().sampling.stop,
            ["x"]
        );
        for (extra, param, says) in [
            (r#","beams":0"#, "beams", "at least 1"),
            (r#","beams":-2"#, "beams", "positive integer"),
            (r#","beams":2.5"#, "beams", "positive integer"),
            (r#","beams":"4""#, "beams", "not a string"),
            (r#","beams":1e30"#, "beams", "positive integer"),
            (
                r#","beams":4,"length_penalty":1e300"#,
                "length_penalty",
                "finite",
            ),
            (
                r#","beams":4,"length_penalty":"x""#,
                "length_penalty",
                "a number",
            ),
            (r#","beams":4,"n":5"#, "n", "at most beams (4)"),
            (r#","n":2"#, "n", "beam search"),
            (r#","beams":4,"n":0"#, "n", "at least 1"),
            (r#","beams":4,"stop":["x"]"#, "stop", "beam search"),
        ] {
            let e = chat(extra).expect_err(extra);
            assert_eq!(e.status, 400, "{extra}");
            assert_eq!(e.param.as_deref(), Some(param), "{extra}: {}", e.message);
            assert!(e.message.contains(says), "{extra}: {}", e.message);
        }
    }

    #[test]
    fn beam_answers_are_choices_with_scores() {
        let meta = ResponseMeta {
            id: "cmpl-1".into(),
            created: 5,
            model: "m".into(),
        };
        let beams = [
            BeamChoice {
                text: "Paris.".into(),
                completion_tokens: 3,
                stop_reason: StopReason::Eos,
                logprob_sum: -0.9,
                score: -0.3,
            },
            BeamChoice {
                text: "The capital".into(),
                completion_tokens: 2,
                stop_reason: StopReason::MaxTokens,
                logprob_sum: -1.0,
                score: -0.5,
            },
        ];
        let answers = Answer::of_beams(&beams);
        let v = chat_completion(&meta, &answers, &summary());
        assert_eq!(v["choices"][1]["index"], 1);
        assert_eq!(v["choices"][0]["message"]["content"], "Paris.");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["choices"][1]["finish_reason"], "length");
        assert_eq!(v["choices"][1]["beam_score"], -0.5);
        let t = text_completion(&meta, &answers, &summary());
        assert_eq!(t["choices"][1]["text"], "The capital");
        assert_eq!(t["choices"][0]["beam_score"], -0.3);
        // Ordinary answers carry no beam_score.
        let one = chat_completion(&meta, &Answer::single("x", &summary()), &summary());
        assert!(one["choices"][0].get("beam_score").is_none());

        let part = ChunkPart::BeamContent {
            index: 1,
            text: "The capital",
            beam_score: -0.5,
        };
        let c = stream_chunk(StreamKind::Chat, &meta, &part, false);
        assert_eq!(c["choices"][0]["index"], 1);
        assert_eq!(
            c["choices"][0]["delta"],
            serde_json::json!({"role": "assistant", "content": "The capital"})
        );
        assert_eq!(c["choices"][0]["beam_score"], -0.5);
        let f = stream_chunk(
            StreamKind::Text,
            &meta,
            &ChunkPart::BeamFinish {
                index: 1,
                reason: StopReason::MaxTokens,
            },
            false,
        );
        assert_eq!(f["choices"][0]["index"], 1);
        assert_eq!(f["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn malformed_bodies_are_400() {
        for body in [
            &b"{"[..],
            b"",
            b"[]",
            b"{\"messages\": []}",
            b"{\"messages\": \"hi\"}",
            b"{\"messages\": [{\"role\": \"user\", \"content\": \"\"}]}",
            b"{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}",
            b"{\"messages\": [{\"content\": \"x\"}]}",
            b"{\"temperature\": NaN, \"messages\": [{\"role\":\"user\",\"content\":\"x\"}]}",
        ] {
            let e = parse_chat_request(body).expect_err(&String::from_utf8_lossy(body));
            assert_eq!(e.status, 400);
            assert!(serde_json::from_str::<Value>(&e.to_json()).is_ok());
        }
    }

    #[test]
    fn content_parts_and_developer_role() {
        let r = parse_chat_request(
            br#"{"messages":[{"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.messages,
            vec![
                ChatMessage::new("system", "be brief"),
                ChatMessage::new("user", "ab")
            ]
        );
        let e = parse_chat_request(
            br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    }

    #[test]
    fn completion_prompts() {
        let p = |b: &str| parse_completion_request(b.as_bytes()).map(|r| r.prompt);
        assert_eq!(
            p(r#"{"prompt":"x"}"#),
            Ok(CompletionPrompt::Text("x".into()))
        );
        assert_eq!(
            p(r#"{"prompt":["x"]}"#),
            Ok(CompletionPrompt::Text("x".into()))
        );
        assert_eq!(
            p(r#"{"prompt":[1,2]}"#),
            Ok(CompletionPrompt::Ids(vec![1, 2]))
        );
        assert_eq!(
            p(r#"{"prompt":[[1,2]]}"#),
            Ok(CompletionPrompt::Ids(vec![1, 2]))
        );
        for bad in [
            r#"{"prompt":""}"#,
            r#"{"prompt":[]}"#,
            r#"{"prompt":["a","b"]}"#,
            r#"{"prompt":[-1]}"#,
            r#"{"prompt":[1.5]}"#,
            r#"{"prompt":{}}"#,
            r#"{}"#,
            r#"{"prompt":"x","echo":true}"#,
        ] {
            assert_eq!(p(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn tokenize_shapes() {
        let t = parse_tokenize_request(br#"{"content":"hi"}"#).unwrap();
        assert!(!t.add_special && t.parse_special);
        let t =
            parse_tokenize_request(br#"{"content":"hi","add_special":true,"parse_special":false}"#)
                .unwrap();
        assert!(t.add_special && !t.parse_special);
        assert!(parse_tokenize_request(br#"{"content":1}"#).is_err());
        assert_eq!(
            parse_detokenize_request(br#"{"tokens":[1,2,3]}"#)
                .unwrap()
                .tokens,
            vec![1, 2, 3]
        );
        assert!(parse_detokenize_request(br#"{"tokens":[4294967296]}"#).is_err());
    }

    fn summary() -> Summary {
        Summary {
            stop_reason: StopReason::MaxTokens,
            prompt_tokens: 10,
            reused_tokens: 4,
            completion_tokens: 3,
            prompt_ms: 1.0,
            gen_ms: 2.0,
            prompt_tokens_per_s: 6000.0,
            gen_tokens_per_s: 1000.0,
        }
    }

    #[test]
    fn response_shapes_are_openais() {
        let meta = ResponseMeta {
            id: "chatcmpl-1".into(),
            created: 5,
            model: "m".into(),
        };
        let v = chat_completion(&meta, &Answer::single("hello", &summary()), &summary());
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], "hello");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 13);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

        let first = stream_chunk(StreamKind::Chat, &meta, &ChunkPart::Role, false);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(first.get("usage").is_none());
        let mid = stream_chunk(StreamKind::Chat, &meta, &ChunkPart::Content("a"), true);
        assert_eq!(
            mid["choices"][0]["delta"],
            serde_json::json!({"content": "a"})
        );
        assert_eq!(mid["usage"], Value::Null);
        let last = stream_chunk(
            StreamKind::Chat,
            &meta,
            &ChunkPart::Finish(StopReason::Eos),
            true,
        );
        assert_eq!(last["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        let s = summary();
        let usage = stream_chunk(StreamKind::Chat, &meta, &ChunkPart::Usage(&s), true);
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 3);

        let t = text_completion(&meta, &Answer::single("x", &summary()), &summary());
        assert_eq!(t["object"], "text_completion");
        assert_eq!(t["choices"][0]["text"], "x");
        let tc = stream_chunk(StreamKind::Text, &meta, &ChunkPart::Content("y"), false);
        assert_eq!(tc["choices"][0]["text"], "y");
        assert_eq!(tc["choices"][0]["finish_reason"], Value::Null);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            for r in [
                parse_chat_request(&body).err(),
                parse_completion_request(&body).err(),
                parse_tokenize_request(&body).err(),
                parse_detokenize_request(&body).err(),
            ].into_iter().flatten() {
                prop_assert_eq!(r.status, 400);
            }
        }

        #[test]
        fn valid_sampling_values_round_trip(
            temperature in 0.0f32..5.0,
            top_p in 0.001f32..=1.0,
            top_k in 0u64..1000,
            seed in any::<u64>(),
            max_tokens in 1u64..100_000,
            stop in proptest::collection::vec("[a-z]{1,4}", 0..4),
        ) {
            let body = serde_json::json!({
                "messages": [{"role": "user", "content": "q"}],
                "temperature": temperature, "top_p": top_p, "top_k": top_k,
                "seed": seed, "max_tokens": max_tokens, "stop": stop,
            });
            let r = parse_chat_request(body.to_string().as_bytes()).unwrap();
            prop_assert_eq!(r.sampling.sampler.temperature, temperature);
            prop_assert_eq!(r.sampling.sampler.top_p, top_p);
            prop_assert_eq!(r.sampling.sampler.top_k as u64, top_k);
            prop_assert_eq!(r.sampling.seed, Some(seed));
            prop_assert_eq!(r.sampling.max_tokens, Some(max_tokens as usize));
            prop_assert_eq!(&r.sampling.stop, &stop);
        }

        #[test]
        fn top_p_outside_the_unit_interval_is_refused(top_p in prop_oneof![-10.0f64..=0.0, 1.0001f64..10.0]) {
            let body = serde_json::json!({"prompt": "q", "top_p": top_p});
            let e = parse_completion_request(body.to_string().as_bytes()).unwrap_err();
            prop_assert_eq!(e.param.as_deref(), Some("top_p"));
        }

        #[test]
        fn stop_string_equals_one_element_array(s in "[ -~]{1,8}") {
            let one = serde_json::json!({"prompt": "q", "stop": s});
            let arr = serde_json::json!({"prompt": "q", "stop": [s]});
            prop_assert_eq!(
                parse_completion_request(one.to_string().as_bytes()).unwrap().sampling,
                parse_completion_request(arr.to_string().as_bytes()).unwrap().sampling
            );
        }
    }
}
