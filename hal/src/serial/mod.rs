//! The serial console of `edgellm serve`: a person at a terminal (or a microcontroller on a
//! UART) talks to the engine over a serial device.
//!
//! bytes ─[`line_editor`]─▶ lines ─[`console::Session`]─▶ `Job` ─engine─▶ events ─▶ port.
//! [`device`] opens the device and reopens it when it disappears; [`json_request`] is the json
//! mode's wire format. [`run_console`] is what `edgellm serve` starts on its own thread.

pub mod console;
pub mod device;
pub mod json_request;
pub mod line_editor;

use std::path::PathBuf;

use crate::board::FlowControl;

pub use console::{Mode, Session, SessionOptions};
pub use device::run_console;

/// What `edgellm serve` passes to the serial console.
#[derive(Debug, Clone)]
pub struct SerialOptions {
    pub device: PathBuf,
    pub baud: u32,
    pub flow_control: FlowControl,
    /// Longest input line in bytes (64..=65536).
    pub line_buffer: usize,
    /// Board name, shown in the banner.
    pub board: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "serial line buffer of {bytes} bytes: must be between {} and {}",
        line_editor::MIN_LINE_BYTES,
        line_editor::MAX_LINE_BYTES
    )]
    LineBuffer { bytes: usize },
    #[error("serial baud rate 0: must be positive")]
    Baud,
}
