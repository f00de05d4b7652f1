//! Fuzz target: the socket API's request bodies. Every endpoint's parser takes arbitrary bytes
//! and returns a checked request or an `ApiError` (which becomes a 4xx), never panics; what it
//! accepts yields engine parameters the sampler accepts.
//!
//! The first byte picks the endpoint; the rest is the body.
#![no_main]

use edgellm_hal::openai::{
    parse_chat_request, parse_completion_request, parse_detokenize_request,
    parse_tokenize_request, ApiError, Sampling,
};
use libfuzzer_sys::fuzz_target;

fn check_sampling(s: &Sampling) {
    let p = s.generate_params(17, 2048, 42);
    p.sampler
        .validate()
        .expect("an accepted request has valid sampler settings");
    assert!(p.max_tokens <= usize::MAX);
}

fn check_error(e: &ApiError) {
    // The error must render in OpenAI's shape.
    let _ = e.to_string();
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => match parse_chat_request(body) {
            Ok(r) => {
                assert!(!r.messages.is_empty());
                check_sampling(&r.sampling);
            }
            Err(e) => check_error(&e),
        },
        1 => match parse_completion_request(body) {
            Ok(r) => check_sampling(&r.sampling),
            Err(e) => check_error(&e),
        },
        2 => {
            if let Err(e) = parse_tokenize_request(body) {
                check_error(&e);
            }
        }
        _ => {
            if let Err(e) = parse_detokenize_request(body) {
                check_error(&e);
            }
        }
    }
});
