//! The process's malloc arenas: glibc gives each thread that allocates an arena of its own,
//! reserving 64 MiB of address space apiece, which no memory figure of edgellm counts.
//! [`limit_malloc_arenas`] keeps one for all threads.

/// Makes glibc's malloc keep one arena for every thread. By default each thread that allocates
/// gets its own arena, and each arena reserves 64 MiB of address space: five threads reserve
/// 256 MiB that serve's memory check does not count, which breaks an `RLIMIT_AS` budget (a
/// thread created after the check fails to get its stack) and costs a 32-bit board a quarter
/// of its address space. edgellm's threads allocate at load and per request, never per token,
/// so one arena costs no speed. Call it first thing, before any thread starts. Other C
/// libraries: no-op.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a tunable of glibc's allocator; M_ARENA_MAX with a positive
        // value is documented for use at any time, and existing allocations are unaffected.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        if ok != 1 {
            log::debug!("mallopt(M_ARENA_MAX, 1) refused");
        }
    }
}
