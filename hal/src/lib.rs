//! edgellm-hal: what touches the board.
//!
//! [`board`] loads board configs; [`thermal`] reads the SoC temperature; [`engine`] is the one
//! generation thread both front ends share: the Unix-socket server ([`socket`], OpenAI-compatible
//! HTTP over hyper) and the serial console ([`serial`]). [`shutdown`] is the stop flag they all
//! watch, [`systemd`] the readiness notification.
#![forbid(unsafe_code)]

pub mod board;
pub mod engine;
pub mod memory;
pub mod openai;
pub mod serial;
pub mod shutdown;
pub mod socket;
pub mod systemd;
pub mod thermal;
