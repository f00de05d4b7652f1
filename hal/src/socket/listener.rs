//! The socket file and who may connect to it: binding (a stale file from a crashed run is
//! replaced, a live one or a non-socket path refused), the file's mode and group, and the
//! optional SO_PEERCRED allow-list of peer uids/gids.
//!
//! Must never delete anything but a socket that nobody answers on.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use nix::unistd::{chown, Group};

use super::SocketError;

/// Binds a listening Unix socket at `path` (mode and group applied), in non-blocking mode
/// for tokio.
pub fn bind_unix(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener, SocketError> {
    // Resolve the group first: a typo should not leave a socket file behind.
    let gid = match group {
        None => None,
        Some(name) => Some(
            Group::from_name(name)
                .map_err(|e| SocketError::Group {
                    name: name.to_string(),
                    reason: e.to_string(),
                })?
                .ok_or_else(|| SocketError::Group {
                    name: name.to_string(),
                    reason: "no such group".into(),
                })?
                .gid,
        ),
    };
    clear_stale(path)?;
    let listener = UnixListener::bind(path).map_err(|e| SocketError::Bind {
        path: path.to_path_buf(),
        source: e,
    })?;
    let applied = (|| {
        if let Some(gid) = gid {
            chown(path, None, Some(gid)).map_err(|e| SocketError::Permissions {
                path: path.to_path_buf(),
                source: e.into(),
            })?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            SocketError::Permissions {
                path: path.to_path_buf(),
                source: e,
            }
        })?;
        listener.set_nonblocking(true).map_err(SocketError::Io)
    })();
    if let Err(e) = applied {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(listener)
}

/// Removes a socket file nobody listens on; refuses a live socket and anything not a socket.
fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(SocketError::Bind {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            log::warn!(
                "replacing stale socket {} (from a run that did not stop cleanly)",
                path.display()
            );
            std::fs::remove_file(path).map_err(|e| SocketError::Bind {
                path: path.to_path_buf(),
                source: e,
            })
        }
        Err(e) => Err(SocketError::Bind {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The SO_PEERCRED allow-list. Empty lists on both sides (the default) allow every peer the
/// socket file's mode lets in.
///
/// There is no implicit exception, not even for root: an allow-list means exactly what it
/// lists. Root can edit the configuration anyway, and a list that silently admits more than
/// it says is harder to audit.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub uids: Option<Vec<u32>>,
    pub gids: Option<Vec<u32>>,
}

impl PeerPolicy {
    /// Whether a peer running as `uid` with primary group `gid` may talk to the server. A
    /// peer passes when its uid is on the uid list or its gid is on the gid list (SO_PEERCRED
    /// reports the primary group only, not supplementary ones).
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        if self.uids.is_none() && self.gids.is_none() {
            return true;
        }
        self.uids.as_ref().is_some_and(|l| l.contains(&uid))
            || self.gids.as_ref().is_some_and(|l| l.contains(&gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_has_no_implicit_members() {
        let open = PeerPolicy::default();
        assert!(open.allows(1000, 1000));
        let uids = PeerPolicy {
            uids: Some(vec![1000]),
            gids: None,
        };
        assert!(uids.allows(1000, 5));
        assert!(!uids.allows(0, 0));
        let gids = PeerPolicy {
            uids: Some(vec![]),
            gids: Some(vec![44]),
        };
        assert!(gids.allows(7, 44));
        assert!(!gids.allows(7, 45));
    }
}
