//! edgellm-hal: what touches the board.
#![forbid(unsafe_code)]

pub mod board;
