//! The serial device under the console: opened with the `serialport` crate (path, baud, flow
//! control from [`SerialOptions`]), and reopened when it disappears (a USB gadget unplugged, a
//! pty torn down) — polled about once a second, while the shutdown flag is watched. It knows
//! nothing of what is said over the port; that is [`Session`]'s.

use std::time::{Duration, Instant};

use super::console::{Session, SessionOptions};
use super::{SerialError, SerialOptions};
use crate::board::FlowControl;
use crate::engine::EngineHandle;
use crate::shutdown::Shutdown;

/// The port's read timeout: how long the console waits for a byte before it looks at the
/// engine's events and the shutdown flag again (bounds the latency of streamed tokens).
const READ_TIMEOUT: Duration = Duration::from_millis(20);
/// How often a missing device is looked for.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// How often the shutdown flag is checked while waiting for the device.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Opens the device as the options say.
pub fn open(opts: &SerialOptions) -> Result<Box<dyn serialport::SerialPort>, serialport::Error> {
    let flow = match opts.flow_control {
        FlowControl::None => serialport::FlowControl::None,
        FlowControl::Software => serialport::FlowControl::Software,
        FlowControl::Hardware => serialport::FlowControl::Hardware,
    };
    serialport::new(opts.device.to_string_lossy(), opts.baud)
        .flow_control(flow)
        .timeout(READ_TIMEOUT)
        .open()
}

/// Serves the console on `opts.device` until `shutdown` triggers, reopening the device
/// whenever it goes away. Only bad options are an error: a missing device is waited for.
pub fn run_console(
    opts: SerialOptions,
    engine: EngineHandle,
    shutdown: Shutdown,
) -> Result<(), SerialError> {
    let limits = super::line_editor::MIN_LINE_BYTES..=super::line_editor::MAX_LINE_BYTES;
    if !limits.contains(&opts.line_buffer) {
        return Err(SerialError::LineBuffer {
            bytes: opts.line_buffer,
        });
    }
    if opts.baud == 0 {
        return Err(SerialError::Baud);
    }
    let device = opts.device.display().to_string();
    let mut session = Session::new(
        engine,
        shutdown.clone(),
        &SessionOptions {
            line_buffer: opts.line_buffer,
            board: opts.board.clone(),
        },
    );
    // Whether "cannot open" was already logged for this absence (say it once, not every second).
    let mut reported_missing = false;
    while !shutdown.is_triggered() {
        match open(&opts) {
            Ok(mut port) => {
                reported_missing = false;
                log::info!("serial console open on {device} at {} baud", opts.baud);
                match session.run(&mut port) {
                    Ok(()) => break,
                    Err(_) if shutdown.is_triggered() => break,
                    Err(e) => log::warn!(
                        "serial device {device} went away ({e}); reopening it when it returns"
                    ),
                }
            }
            Err(e) => {
                if !reported_missing {
                    log::warn!("cannot open serial device {device}: {e}; retrying every second");
                    reported_missing = true;
                } else {
                    log::debug!("serial device {device} still unavailable: {e}");
                }
            }
        }
        wait(&shutdown, REOPEN_INTERVAL);
    }
    log::info!("serial console on {device} stopped");
    Ok(())
}

/// Sleeps for `period`, or less when shutdown triggers.
fn wait(shutdown: &Shutdown, period: Duration) {
    let end = Instant::now() + period;
    while !shutdown.is_triggered() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(SHUTDOWN_POLL));
    }
}
