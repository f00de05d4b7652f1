//! Memory limits of this process and whether a model fits them, checked before the KV cache is
//! allocated so that `edgellm serve` refuses at start, naming the figure it needs, instead of
//! being killed by the OOM killer mid-answer.
//!
//! Limits read: the cgroup's `memory.max` (v2, what systemd's `MemoryMax=` sets) or
//! `memory.limit_in_bytes` (v1), and `RLIMIT_AS` (what `prlimit --as` and `ulimit -v` set).
//! `MemAvailable` is only advisory: the weights are file-backed and the page cache can give them
//! back, so a shortfall there is a warning, not a refusal.

use std::path::{Path, PathBuf};

use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

/// What a model needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// The mapped model file.
    pub weights: u64,
    /// KV cache.
    pub kv: u64,
    /// KV caches of the beams beyond the first (`serve --max-beams`; their one-row scratch
    /// counts in `scratch`).
    pub beam_kv: u64,
    /// Activations, logits, tokenizer tables and the rest allocated once at load.
    pub scratch: u64,
    /// Threads' stacks, the server's buffers, allocator slack.
    pub overhead: u64,
}

impl MemoryNeed {
    pub fn total(&self) -> u64 {
        self.weights + self.anonymous()
    }
    /// What is not mapped from the file (anonymous memory).
    pub fn anonymous(&self) -> u64 {
        self.kv + self.beam_kv + self.scratch + self.overhead
    }
    /// Every KV cache: what grows with the context.
    fn all_kv(&self) -> u64 {
        self.kv + self.beam_kv
    }
    /// `, beam KV caches X` when there are any.
    fn beam_part(&self) -> String {
        if self.beam_kv > 0 {
            format!(", beam KV caches {}", mib(self.beam_kv))
        } else {
            String::new()
        }
    }
}

/// A limit that refuses the model; the message names the limit, the need and what would fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MemoryShortfall(pub String);

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

/// Checks `need` against the cgroup limit and RLIMIT_AS. `context_fitting(room)` (the largest
/// context whose KV caches, the beams' included, take at most `room` bytes) lets the error say
/// which context would fit.
pub fn check(
    need: MemoryNeed,
    context_fitting: &dyn Fn(u64) -> usize,
) -> Result<(), MemoryShortfall> {
    check_with(need, context_fitting, cgroup_limit(), address_space_room())
}

fn check_with(
    need: MemoryNeed,
    context_fitting: &dyn Fn(u64) -> usize,
    cgroup: Option<(u64, String)>,
    address_space: Option<(u64, u64)>,
) -> Result<(), MemoryShortfall> {
    let hint = |room_for_kv: u64| {
        let fit = context_fitting(room_for_kv);
        if fit >= 16 {
            format!("; lower --ctx to at most {fit} or raise the limit")
        } else {
            "; raise the limit or use a smaller model".to_string()
        }
    };
    if let Some((limit, name)) = cgroup {
        if need.total() > limit {
            let fixed = need.total() - need.all_kv();
            return Err(MemoryShortfall(format!(
                "the cgroup limit ({name}) is {} but the model needs {} (weights {}, KV cache {}{}, scratch {}, overhead {}){}",
                mib(limit),
                mib(need.total()),
                mib(need.weights),
                mib(need.kv),
                need.beam_part(),
                mib(need.scratch),
                mib(need.overhead),
                hint(limit.saturating_sub(fixed))
            )));
        }
    }
    // RLIMIT_AS counts address space: the weights are already mapped by now, so what matters
    // is the room left for the anonymous part.
    if let Some((limit, used)) = address_space {
        let room = limit.saturating_sub(used);
        if need.anonymous() > room {
            return Err(MemoryShortfall(format!(
                "RLIMIT_AS leaves {} of address space ({} limit, {} in use with the weights mapped) but the model needs {} more (KV cache {}{}, scratch {}, overhead {}){}",
                mib(room),
                mib(limit),
                mib(used),
                mib(need.anonymous()),
                mib(need.kv),
                need.beam_part(),
                mib(need.scratch),
                mib(need.overhead),
                hint(room.saturating_sub(need.anonymous() - need.all_kv()))
            )));
        }
    }
    Ok(())
}

/// `MemAvailable` from /proc/meminfo.
pub fn available_bytes() -> Option<u64> {
    meminfo_field("MemAvailable:")
}

fn meminfo_field(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// (RLIMIT_AS soft limit, current address-space size), when a limit is set.
fn address_space_room() -> Option<(u64, u64)> {
    let (soft, _) = getrlimit(Resource::RLIMIT_AS).ok()?;
    if soft == RLIM_INFINITY {
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let vm = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kb: u64 = vm.split_whitespace().nth(1)?.parse().ok()?;
    // rlim_t is u32 on 32-bit Arm (armhf), u64 on the 64-bit targets.
    #[allow(clippy::useless_conversion)]
    Some((soft.into(), kb * 1024))
}

/// This process's cgroup memory limit and the file it came from.
fn cgroup_limit() -> Option<(u64, String)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_in(Path::new("/sys/fs/cgroup"), &own)
}

/// The tightest `memory.max` from this process's cgroup up to the root (v2), or the v1 memory
/// controller's `memory.limit_in_bytes`.
fn cgroup_limit_in(root: &Path, proc_self_cgroup: &str) -> Option<(u64, String)> {
    let mut best: Option<(u64, String)> = None;
    let mut consider = |file: PathBuf| {
        let value = std::fs::read_to_string(&file).ok()?;
        let bytes: u64 = value.trim().parse().ok()?; // "max" does not parse: no limit
                                                     // v1 reports "no limit" as a huge page-rounded number.
        if bytes >= 1 << 60 {
            return None;
        }
        if best.as_ref().is_none_or(|(b, _)| bytes < *b) {
            best = Some((bytes, file.display().to_string()));
        }
        Some(())
    };
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            // cgroup v2: walk from our group up to the root.
            let mut dir = root.join(rel);
            loop {
                consider(dir.join("memory.max"));
                if dir == root || !dir.pop() || !dir.starts_with(root) {
                    break;
                }
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            consider(root.join("memory").join(rel).join("memory.limit_in_bytes"));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache that grows by `b` bytes per token (no sliding window).
    fn per_token(b: u64) -> impl Fn(u64) -> usize {
        move |room| (room / b) as usize
    }

    const NEED: MemoryNeed = MemoryNeed {
        weights: 100 << 20,
        kv: 48 << 20,
        beam_kv: 0,
        scratch: 10 << 20,
        overhead: 32 << 20,
    };

    #[test]
    fn fits_without_limits() {
        assert_eq!(check_with(NEED, &per_token(24576), None, None), Ok(()));
    }

    #[test]
    fn cgroup_too_small_names_the_figures_and_a_context_that_fits() {
        let e = check_with(
            NEED,
            &per_token(24576),
            Some((170 << 20, "memory.max".into())),
            None,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("is 170.0 MiB"), "{msg}");
        assert!(msg.contains("needs 190.0 MiB"), "{msg}");
        // 170 - 142 = 28 MiB of room for KV at 24 KiB a token.
        assert!(msg.contains("at most 1194"), "{msg}");
    }

    #[test]
    fn beam_caches_count_and_shrink_the_context_that_fits() {
        // Three more caches of 48 MiB: 334 MiB in all; at 4 x 24 KiB a token, the 190 MiB limit
        // leaves 190 - 142 = 48 MiB of KV room: 512 tokens.
        let need = MemoryNeed {
            beam_kv: 3 * (48 << 20),
            ..NEED
        };
        assert_eq!(need.total(), 334 << 20);
        let e = check_with(
            need,
            &per_token(4 * 24576),
            Some((190 << 20, "memory.max".into())),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs 334.0 MiB"), "{e}");
        assert!(e.contains("beam KV caches 144.0 MiB"), "{e}");
        assert!(e.contains("at most 512"), "{e}");
        assert_eq!(
            check_with(NEED, &per_token(24576), Some((190 << 20, "m".into())), None),
            Ok(())
        );
    }

    #[test]
    fn address_space_counts_only_what_is_not_mapped_yet() {
        // 200 MiB limit, 120 MiB in use (weights mapped): 80 MiB room, 90 MiB needed.
        let e =
            check_with(NEED, &per_token(24576), None, Some((200 << 20, 120 << 20))).unwrap_err();
        assert!(e.to_string().contains("RLIMIT_AS"), "{e}");
        assert_eq!(
            check_with(NEED, &per_token(24576), None, Some((300 << 20, 120 << 20))),
            Ok(())
        );
    }

    #[test]
    fn cgroup_v2_walks_up_and_keeps_the_tightest() {
        let root = std::env::temp_dir().join(format!("edgellm-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let leaf = root.join("system.slice/edgellm.service");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        std::fs::write(root.join("system.slice/memory.max"), "268435456\n").unwrap();
        let got = cgroup_limit_in(&root, "0::/system.slice/edgellm.service\n").unwrap();
        assert_eq!(got.0, 268435456);
        assert!(got.1.ends_with("system.slice/memory.max"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
