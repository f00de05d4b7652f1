//! systemd readiness notification (`Type=notify`): `READY=1`, `STOPPING=1` and `STATUS=` lines
//! sent as datagrams to `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`). Without
//! that variable (not started by systemd) every call is a no-op.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1\nSTATUS=serving"`) to systemd. Returns whether it was sent;
/// failures are logged, never fatal: the service works without the notification.
pub fn notify(state: &str) -> bool {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let target = target.to_string_lossy().into_owned();
    match send(&target, state) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("systemd notify to {target}: {e}");
            false
        }
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let path = std::env::temp_dir().join(format!("edgellm-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_file(&path).unwrap();
    }
}
