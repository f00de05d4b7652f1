//! Fuzz target: hostile chat templates, as a model file could carry them. Compiling and
//! rendering never panic, always end (minijinja's fuel and recursion limits), never produce
//! more than `MAX_OUTPUT_BYTES`. (That templates cannot reach files, since the environment has
//! no loader, is a unit test in runtime/src/chat_template.rs.)
//!
//! Input: the template source, then optionally `\0` and a message content.
#![no_main]

use edgellm_runtime::chat_template::{ChatMessage, ChatTemplate, MAX_OUTPUT_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's panic hook aborts even on panics our code catches (ChatTemplate turns a
    // panic inside minijinja into an error); what must never happen is a panic escaping, which
    // libfuzzer-sys still reports as a crash.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, content) = text.split_once('\0').unwrap_or((text, "hello"));
    let Ok(t) = ChatTemplate::new(source) else {
        return;
    };
    let messages = [
        ChatMessage::new("system", "be brief"),
        ChatMessage::new("user", content),
        ChatMessage::new("assistant", content),
    ];
    if let Ok(out) = t.render(&messages, true, "<s>", "</s>") {
        assert!(out.len() <= MAX_OUTPUT_BYTES);
    }
});
