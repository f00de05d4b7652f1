//! Fuzz target: the serial console's input handling on arbitrary bytes. The line editor never
//! panics, never holds more than its limit, echoes only complete UTF-8 characters, and every
//! line it hands over is valid UTF-8 within the limit; each line, parsed as a json-mode request,
//! gives a command or an error message, never a panic.
//!
//! The first two bytes pick the line limit (64..=65536, as board configs allow).
#![no_main]

use edgellm_hal::serial::json_request::{parse_line, JsonCommand};
use edgellm_hal::serial::line_editor::{Edit, LineEditor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, input)) = data.split_first_chunk::<2>() else {
        return;
    };
    let limit = 64 + (u16::from_le_bytes(*head) as usize) % (65536 - 64 + 1);
    let mut editor = LineEditor::new(limit);
    for &b in input {
        for edit in editor.feed(b).iter() {
            match edit {
                Edit::Echo(bytes) => {
                    let s = std::str::from_utf8(bytes).expect("echo is complete UTF-8");
                    assert_eq!(s.chars().count(), 1);
                }
                Edit::Line { text, .. } => {
                    assert!(text.len() <= limit);
                    match parse_line(text) {
                        Ok(JsonCommand::Generate { sampling, .. }) => {
                            sampling
                                .sampler
                                .validate()
                                .expect("accepted sampling is valid");
                        }
                        Ok(JsonCommand::Mode(_)) => {}
                        Err(message) => assert!(!message.is_empty()),
                    }
                }
                Edit::Overlong { limit: l } => assert_eq!(*l, limit),
                Edit::Erase | Edit::Interrupt | Edit::Invalid(_) => {}
            }
        }
        assert!(editor.line().len() <= limit);
    }
});
