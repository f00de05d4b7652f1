//! Chat prompts: renders a model's `tokenizer.chat_template` (Jinja) into the prompt text,
//! as transformers' `apply_chat_template` and llama.cpp do.
//!
//! Owns the sandboxed minijinja environment: the template is compiled once in
//! [`ChatTemplate::new`]; it cannot read files (no loader: `include`/`import`/`extends` of
//! anything but the template itself fail), rendering is stopped by a fuel limit (instructions) and a
//! recursion limit, and fails when the output exceeds [`MAX_OUTPUT_BYTES`]. Like transformers
//! it uses `trim_blocks` + `lstrip_blocks`, no autoescaping, `loopcontrols`, Python string
//! methods (minijinja-contrib's pycompat), `raise_exception(msg)` (becomes
//! [`TemplateError::Raised`]), `strftime_now(fmt)` (UTC) and a `tojson` that writes what
//! Python's `json.dumps(..., ensure_ascii=False)` writes.
//!
//! Known limit: minijinja bounds string repetition (`"a" * n`) but not repeated `~`
//! concatenation, so a hostile template can still build a large string in memory within its
//! fuel; the output limit only bounds what is written.

use std::fmt::Write as _;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{context, AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;
use thiserror::Error;

/// Largest rendered prompt accepted, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// Instruction budget of one render. A 1000-message conversation with a tools-heavy template
/// uses well under a tenth of it; an endless loop exhausts it in a fraction of a second.
pub const FUEL: u64 = 5_000_000;
/// Deepest nesting of macro calls / includes.
pub const RECURSION_LIMIT: usize = 64;
/// Deepest nesting `tojson` accepts.
const MAX_JSON_DEPTH: usize = 128;

const TEMPLATE_NAME: &str = "chat_template";

/// Errors of compiling or rendering a chat template.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("chat template: syntax error: {0}")]
    Syntax(String),
    #[error("chat template: raise_exception: {0}")]
    Raised(String),
    #[error("chat template: ran out of fuel ({FUEL} instructions): endless or huge loop?")]
    OutOfFuel,
    #[error("chat template: output exceeds {MAX_OUTPUT_BYTES} bytes")]
    OutputTooLarge,
    #[error("chat template: render failed: {0}")]
    Render(String),
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

/// ChatML, the fallback when a model has no template (and SmolLM2's format, minus its default
/// system prompt).
const CHATML: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

impl ChatTemplate {
    /// Compiles `source` in the sandboxed environment.
    pub fn new(source: &str) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_function("strftime_now", |fmt: String| strftime(&fmt, unix_now()));
        // A model file's template is hostile input: a panic inside the template engine
        // becomes an error, not the end of the process.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            env.add_template_owned(TEMPLATE_NAME, source.to_owned())
        }))
        .map_err(|_| TemplateError::Syntax("the template engine failed on this template".into()))?
        .map_err(|e| TemplateError::Syntax(e.to_string()))?;
        Ok(ChatTemplate { env })
    }

    /// The ChatML template (`<|im_start|>{role}\n{content}<|im_end|>\n` per message,
    /// generation prompt `<|im_start|>assistant\n`).
    pub fn chatml() -> ChatTemplate {
        match ChatTemplate::new(CHATML) {
            Ok(t) => t,
            // The constant above is covered by tests; it cannot fail to compile.
            Err(e) => unreachable!("built-in ChatML template: {e}"),
        }
    }

    /// Pins `strftime_now` to `unix_seconds` (reproducible prompts, tests).
    pub fn with_fixed_time(mut self, unix_seconds: i64) -> ChatTemplate {
        self.env.add_function("strftime_now", move |fmt: String| {
            strftime(&fmt, unix_seconds)
        });
        self
    }

    /// Renders the conversation. `add_generation_prompt` appends the assistant turn header.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, TemplateError> {
        self.render_ctx(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        })
    }

    /// Like [`render`](Self::render), with tool definitions (OpenAI-style JSON objects) passed
    /// to the template as `tools`, as transformers does.
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[serde_json::Value],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, TemplateError> {
        self.render_ctx(context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        })
    }

    fn render_ctx(&self, ctx: Value) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(e.to_string()))?;
        let mut out = LimitedWriter {
            buf: Vec::new(),
            overflowed: false,
        };
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            template.render_captured_to(ctx, &mut out)
        }))
        .map_err(|_| TemplateError::Render("the template engine failed on this template".into()))?;
        match rendered {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|e| TemplateError::Render(format!("output is not UTF-8: {e}"))),
            Err(_) if out.overflowed => Err(TemplateError::OutputTooLarge),
            Err(e) => Err(classify(&e)),
        }
    }
}

/// Maps a minijinja failure to our error, looking through the error's source chain for a
/// `raise_exception` call (it may be wrapped by an include or macro call).
fn classify(err: &minijinja::Error) -> TemplateError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<RaisedException>() {
            return TemplateError::Raised(r.0.clone());
        }
        if let Some(m) = e.downcast_ref::<minijinja::Error>() {
            if m.kind() == ErrorKind::OutOfFuel {
                return TemplateError::OutOfFuel;
            }
        }
        cur = e.source();
    }
    TemplateError::Render(err.to_string())
}

/// `io::Write` into memory that refuses to grow past [`MAX_OUTPUT_BYTES`].
struct LimitedWriter {
    buf: Vec<u8>,
    overflowed: bool,
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("chat template output limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The message a template passed to `raise_exception`, carried as the error's source.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("raise_exception: {message}"),
    )
    .with_source(RaisedException(message)))
}

fn unix_now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Gregorian (year, month 1-12, day 1-31) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// C `strftime` in UTC for the specifiers chat templates use:
/// `%Y %y %m %d %e %H %I %M %S %p %b %h %B %a %A %j %F %T %%`.
fn strftime(fmt: &str, unix_seconds: i64) -> Result<String, minijinja::Error> {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let month = MONTHS[(m - 1) as usize];
    let wday = WEEKDAYS[weekday];
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // `write!` into a String cannot fail.
        let _ = match chars.next() {
            Some('Y') => write!(out, "{y}"),
            Some('y') => write!(out, "{:02}", y.rem_euclid(100)),
            Some('m') => write!(out, "{m:02}"),
            Some('d') => write!(out, "{d:02}"),
            Some('e') => write!(out, "{d:2}"),
            Some('H') => write!(out, "{hh:02}"),
            Some('I') => write!(out, "{:02}", (hh + 11) % 12 + 1),
            Some('M') => write!(out, "{mm:02}"),
            Some('S') => write!(out, "{ss:02}"),
            Some('p') => write!(out, "{}", if hh < 12 { "AM" } else { "PM" }),
            Some('b') | Some('h') => write!(out, "{}", &month[..3]),
            Some('B') => write!(out, "{month}"),
            Some('a') => write!(out, "{}", &wday[..3]),
            Some('A') => write!(out, "{wday}"),
            Some('j') => write!(out, "{yday:03}"),
            Some('F') => write!(out, "{y}-{m:02}-{d:02}"),
            Some('T') => write!(out, "{hh:02}:{mm:02}:{ss:02}"),
            Some('%') => write!(out, "%"),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported specifier %{}",
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        };
    }
    Ok(out)
}

/// Days since 1970-01-01 of a Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`, so `", "` / `": "` separators, no HTML escaping.
fn tojson(
    value: &Value,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<String, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(v.as_usize().ok_or_else(|| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: indent must be an integer",
            )
        })?),
    };
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let mut w = PyJsonWriter {
        out: String::new(),
        indent,
        ensure_ascii,
        sort_keys,
    };
    w.value(value, 0)?;
    Ok(w.out)
}

struct PyJsonWriter {
    out: String,
    indent: Option<usize>,
    ensure_ascii: bool,
    sort_keys: bool,
}

impl PyJsonWriter {
    fn value(&mut self, v: &Value, depth: usize) -> Result<(), minijinja::Error> {
        if depth > MAX_JSON_DEPTH {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: value nested too deeply",
            ));
        }
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.number(v),
            ValueKind::String | ValueKind::Plain => {
                let s = v.to_string();
                self.string(&s);
            }
            ValueKind::Bytes => {
                let s = String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned();
                self.string(&s);
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container('[', ']', items.len(), depth, |w, i, d| {
                    w.value(&items[i], d)
                })?;
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                if self.sort_keys {
                    keys.sort_by_key(|k| k.to_string());
                }
                self.container('{', '}', keys.len(), depth, |w, i, d| {
                    let k = &keys[i];
                    match k.as_str() {
                        Some(s) => w.string(s),
                        None if k.is_none() => w.string("null"),
                        None => {
                            let mut key = String::new();
                            let outer = std::mem::take(&mut w.out);
                            w.value(k, d)?;
                            key.push_str(&std::mem::replace(&mut w.out, outer));
                            w.string(&key);
                        }
                    }
                    w.out.push_str(": ");
                    w.value(&v.get_item(k)?, d)
                })?;
            }
            ValueKind::Invalid => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: invalid value",
                ))
            }
            // ValueKind is non-exhaustive; anything new is written as its string form.
            _ => {
                let s = v.to_string();
                self.string(&s);
            }
        }
        Ok(())
    }

    /// Writes `open item sep item ... close` with Python's layout for `indent`.
    fn container(
        &mut self,
        open: char,
        close: char,
        n: usize,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize, usize) -> Result<(), minijinja::Error>,
    ) -> Result<(), minijinja::Error> {
        self.out.push(open);
        if n == 0 {
            self.out.push(close);
            return Ok(());
        }
        for i in 0..n {
            match self.indent {
                None => {
                    if i > 0 {
                        self.out.push_str(", ");
                    }
                }
                Some(ind) => {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.out.push('\n');
                    self.push_spaces(ind * (depth + 1));
                }
            }
            item(self, i, depth + 1)?;
        }
        if let Some(ind) = self.indent {
            self.out.push('\n');
            self.push_spaces(ind * depth);
        }
        self.out.push(close);
        Ok(())
    }

    fn push_spaces(&mut self, n: usize) {
        self.out.extend(std::iter::repeat_n(' ', n));
    }

    fn number(&mut self, v: &Value) {
        if v.is_integer() {
            let _ = write!(self.out, "{v}");
            return;
        }
        let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
        if f.is_nan() {
            self.out.push_str("NaN");
        } else if f.is_infinite() {
            self.out
                .push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        } else {
            // Rust's `{:?}` and Python's `repr` agree (shortest round-trip digits, `.0` on
            // integral values, exponent from 1e16 / below 1e-4) except that Python writes
            // the exponent with a sign and at least two digits.
            let s = format!("{f:?}");
            match s.split_once('e') {
                Some((mant, exp)) => {
                    let (sign, digits) = match exp.strip_prefix('-') {
                        Some(d) => ('-', d),
                        None => ('+', exp),
                    };
                    let _ = write!(self.out, "{mant}e{sign}{digits:0>2}");
                }
                None => self.out.push_str(&s),
            }
        }
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{08}' => self.out.push_str("\\b"),
                '\u{0C}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && (c as u32) > 0x7E) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        let _ = write!(self.out, "\\u{u:04x}");
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tokenizer.chat_template` of SmolLM2-135M-Instruct (from the GGUF; see
    /// `shared/reference/smollm2_gguf_dump.txt`).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// Meta-Llama-3-8B-Instruct's template.
    const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    /// Gemma (1.x / 2) instruct template.
    const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

    /// Qwen2.5-Instruct's template (with its tool-calling branches).
    const QWEN25: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

    fn conversation() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "You are terse."),
            ChatMessage::new("user", "Hi!"),
            ChatMessage::new("assistant", "Hello. "),
            ChatMessage::new("user", " What is 2+2?\n"),
        ]
    }

    /// ChatML built by hand from the messages.
    fn chatml_by_hand(messages: &[ChatMessage], generation_prompt: bool) -> String {
        let mut s = String::new();
        for m in messages {
            s += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
        }
        if generation_prompt {
            s += "<|im_start|>assistant\n";
        }
        s
    }

    #[test]
    fn smollm2_template_renders_chatml() {
        let t = ChatTemplate::new(SMOLLM2).unwrap();
        let msgs = conversation();
        let got = t.render(&msgs, true, "", "<|im_end|>").unwrap();
        assert_eq!(got, chatml_by_hand(&msgs, true));
        // Without a system message the template inserts SmolLM's default one.
        let got = t.render(&msgs[1..2], false, "", "").unwrap();
        let mut want = vec![ChatMessage::new(
            "system",
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        )];
        want.push(msgs[1].clone());
        assert_eq!(got, chatml_by_hand(&want, false));
    }

    #[test]
    fn smollm2_template_matches_the_model_file() {
        let path = crate::default_model_path();
        let file = crate::mmap::MappedFile::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}: run `make model` to fetch it", path.display()));
        let gguf = crate::gguf::Gguf::parse(file.bytes()).unwrap();
        let source = gguf.get_str("tokenizer.chat_template").unwrap();
        assert_eq!(source, Some(SMOLLM2));
    }

    #[test]
    fn chatml_fallback() {
        let msgs = conversation();
        let got = ChatTemplate::chatml().render(&msgs, true, "", "").unwrap();
        assert_eq!(got, chatml_by_hand(&msgs, true));
    }

    #[test]
    fn llama3_template() {
        let t = ChatTemplate::new(LLAMA3).unwrap();
        let got = t
            .render(&conversation(), true, "<|begin_of_text|>", "<|eot_id|>")
            .unwrap();
        let want = "<|begin_of_text|>\
<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>\
<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>\
<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>\
<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
<|start_header_id|>assistant<|end_header_id|>\n\n";
        assert_eq!(got, want);
    }

    #[test]
    fn gemma_template_and_its_exceptions() {
        let t = ChatTemplate::new(GEMMA).unwrap();
        let msgs = &conversation()[1..];
        let got = t.render(msgs, true, "<bos>", "<eos>").unwrap();
        let want = "<bos><start_of_turn>user\nHi!<end_of_turn>\n\
<start_of_turn>model\nHello.<end_of_turn>\n\
<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n\
<start_of_turn>model\n";
        assert_eq!(got, want);
        assert_eq!(
            t.render(&conversation(), true, "<bos>", ""),
            Err(TemplateError::Raised("System role not supported".into()))
        );
        let two_users = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        assert!(matches!(
            t.render(&two_users, true, "<bos>", ""),
            Err(TemplateError::Raised(m)) if m.starts_with("Conversation roles must alternate")
        ));
    }

    #[test]
    fn qwen25_template() {
        let t = ChatTemplate::new(QWEN25).unwrap();
        let msgs = conversation();
        assert_eq!(
            t.render(&msgs, true, "", "").unwrap(),
            chatml_by_hand(&msgs, true)
        );
        let got = t.render(&msgs[1..2], true, "", "").unwrap();
        let want = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n";
        assert_eq!(got, want);
    }

    #[test]
    fn qwen25_tools_use_python_tojson() {
        let t = ChatTemplate::new(QWEN25).unwrap();
        // Keys already in sorted order, so serde_json's map order equals insertion order.
        let tool = serde_json::json!({
            "function": {
                "description": "Weather in a city, e.g. \"Zürich\"",
                "name": "get_weather",
                "parameters": {
                    "properties": {"city": {"type": "string"}, "days": {"maximum": 7.5, "type": "integer"}},
                    "required": ["city"],
                    "type": "object"
                }
            },
            "type": "function"
        });
        let got = t
            .render_with_tools(
                &[ChatMessage::new("user", "Weather?")],
                &[tool],
                true,
                "",
                "",
            )
            .unwrap();
        // The tool line as Python's json.dumps(tool, ensure_ascii=False) writes it.
        let tool_json = r#"{"function": {"description": "Weather in a city, e.g. \"Zürich\"", "name": "get_weather", "parameters": {"properties": {"city": {"type": "string"}, "days": {"maximum": 7.5, "type": "integer"}}, "required": ["city"], "type": "object"}}, "type": "function"}"#;
        let want = format!(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n\
# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tool_json}\n</tools>\n\n\
For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call><|im_end|>\n\
<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ {'a': [1, 2.5, none, true], 'b': {}, 'c': [], 's': 'é\"\\\\\n\t', 'f': 1e20, 'g': 0.00001} | tojson }}\n\
             {{ {'a': [1, {'b': 'x'}], 'z': []} | tojson(indent=2) }}\n\
             {{ 'é😀' | tojson(ensure_ascii=true) }}\n\
             {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}",
        )
        .unwrap();
        let got = t.render(&[], false, "", "").unwrap();
        // Each line is what CPython 3 prints for the same json.dumps call.
        let want = r#"{"a": [1, 2.5, null, true], "b": {}, "c": [], "s": "é\"\\\n\t", "f": 1e+20, "g": 1e-05}
{
  "a": [
    1,
    {
      "b": "x"
    }
  ],
  "z": []
}
"\u00e9\ud83d\ude00"
{"a": 2, "b": 1}"#;
        assert_eq!(got, want);
    }

    #[test]
    fn python_string_methods_and_loop_controls() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.content.startswith('skip') %}{% continue %}{% endif %}\
             [{{ m.content.strip().upper() }}|{{ m.content.split(',') | length }}]\
             {% if loop.index > 2 %}{% break %}{% endif %}{% endfor %}",
        )
        .unwrap();
        let msgs = [
            ChatMessage::new("user", "  a,b "),
            ChatMessage::new("user", "skip me"),
            ChatMessage::new("user", "c"),
            ChatMessage::new("user", "d"),
        ];
        assert_eq!(t.render(&msgs, false, "", "").unwrap(), "[A,B|2][C|1]");
    }

    #[test]
    fn strftime_now_is_utc_strftime() {
        // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
        let t = ChatTemplate::new("{{ strftime_now('%d %b %Y|%A %B %j %F %T %I%p|%e|%%') }}")
            .unwrap()
            .with_fixed_time(1_722_085_509 - 86_400);
        assert_eq!(
            t.render(&[], false, "", "").unwrap(),
            "26 Jul 2024|Friday July 208 2024-07-26 13:05:09 01PM|26|%"
        );
        for (secs, want) in [
            (0, "1970-01-01 Thu"),
            (951_782_400, "2000-02-29 Tue"),
            (-86_400, "1969-12-31 Wed"),
        ] {
            let t = ChatTemplate::new("{{ strftime_now('%F %a') }}")
                .unwrap()
                .with_fixed_time(secs);
            assert_eq!(t.render(&[], false, "", "").unwrap(), want);
        }
        let t = ChatTemplate::new("{{ strftime_now('%Q') }}").unwrap();
        assert!(
            matches!(t.render(&[], false, "", ""), Err(TemplateError::Render(m)) if m.contains("%Q"))
        );
    }

    /// Found by the chat_template fuzzer (a timeout under its instrumentation): an 80 MB string
    /// repetition inside arithmetic. Not bounded by fuel (one operation), but by minijinja's
    /// size checks and the output limit: it ends in well under a second without
    /// instrumentation, with an error.
    #[test]
    fn huge_repetition_in_arithmetic_ends_with_an_error() {
        let src = "{{ 3339*1}}{{ 01989**1}}{{ 01988*1}}499999999*1}{{ 'xnr' * 26666666-----------1\
                   -----------1-----------------------------6666--------------------66666666666666\
                   <0* 20** ----------------66666666666666<0* 20** 20*000* 20*00}}o0}}o99_9999";
        let start = std::time::Instant::now();
        let r = ChatTemplate::new(src)
            .and_then(|t| t.render(&[ChatMessage::new("user", "hi")], true, "", ""));
        assert!(r.is_err(), "{r:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn hostile_templates_fail_cleanly() {
        let render = |src: &str| {
            ChatTemplate::new(src).and_then(|t| t.render(&conversation(), true, "", ""))
        };
        assert!(matches!(
            render("{% for m in messages %}"),
            Err(TemplateError::Syntax(_))
        ));
        // Endless work: nested loops of 10^5 x 10^5 iterations.
        assert_eq!(
            render(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
            ),
            Err(TemplateError::OutOfFuel)
        );
        // Unbounded recursion through a macro.
        assert!(matches!(
            render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            Err(TemplateError::Render(m)) if m.contains("recursion")
        ));
        // No loader: nothing can be included, imported or extended; self-inclusion hits the
        // recursion limit.
        for src in [
            "{% include '/etc/passwd' %}",
            "{% import 'x.j2' as x %}",
            "{% include 'chat_template' %}",
            "{% extends '/etc/passwd' %}",
            "{% from '/etc/passwd' import x %}",
            // Found by the chat_template fuzzer: panicked in minijinja's import compiler.
            "{% import '/etc/passwd' as -p %}{{ p }}orl",
        ] {
            let result = ChatTemplate::new(src)
                .and_then(|t| t.render(&[ChatMessage::new("user", "hi")], true, "", ""));
            assert!(
                matches!(
                    result,
                    Err(TemplateError::Syntax(_) | TemplateError::Render(_))
                ),
                "{src}: {result:?}"
            );
        }
        // 2 MB of output in 20 writes of 100 kB.
        assert_eq!(
            render("{% for i in range(20) %}{{ 'x' * 100000 }}{% endfor %}"),
            Err(TemplateError::OutputTooLarge)
        );
        assert!(matches!(
            render("{{ raise_exception('no tools here') }}"),
            Err(TemplateError::Raised(m)) if m == "no tools here"
        ));
        // raise_exception from inside a macro is still recognised.
        assert_eq!(
            render("{% macro check() %}{{ raise_exception('deep') }}{% endmacro %}{{ check() }}"),
            Err(TemplateError::Raised("deep".into()))
        );
    }
}
