//! `Shutdown`: the one flag that tells every part of `edgellm serve` to stop (SIGTERM, SIGINT),
//! readable from plain threads (the serial console polls it between reads) and awaitable from
//! the socket server's tokio runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Raises the flag and wakes every waiter. Idempotent.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Resolves once [`trigger`](Self::trigger) has been called (at once if it already was).
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before looking at the flag so a trigger in between is not missed.
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_returns_after_trigger_from_another_thread() {
        let s = Shutdown::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let t = {
            let s = s.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                s.trigger();
            })
        };
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), s.wait())
                .await
                .expect("wait() did not see the trigger");
        });
        t.join().unwrap();
        assert!(s.is_triggered());
        // Already triggered: returns at once.
        rt.block_on(s.wait());
    }
}
