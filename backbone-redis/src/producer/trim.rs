//! The background trim of a producer built with `max_len`: every so many sends, one safe
//! [`StreamAdmin::trim`] at a time, never in the way of a send.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::admin::StreamAdmin;

/// The background trim of a producer with `max_len`.
#[derive(Debug)]
pub(super) struct Trimmer {
    admin: StreamAdmin,
    max_len: u64,
    every: u64,
    sends: AtomicU64,
    running: Arc<AtomicBool>,
}

/// Clears the running flag when the trim task ends, even by a panic.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Trimmer {
    /// Trims to about `max_len` entries every `max(max_len / 10, 1)` sends.
    pub fn new(admin: StreamAdmin, max_len: u64) -> Self {
        Trimmer {
            admin,
            max_len,
            every: (max_len / 10).max(1),
            sends: AtomicU64::new(0),
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Counts a send; every `every` sends, starts a trim unless one is running.
    pub fn on_send(self: &Arc<Self>) {
        let sends = self.sends.fetch_add(1, Ordering::Relaxed) + 1;
        if !sends.is_multiple_of(self.every) || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let running = Running(self.running.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                stream = self.admin.keys().stream(),
                "no Tokio runtime: cannot trim in the background"
            );
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let _running = running;
            let stream = this.admin.keys().stream();
            match this.admin.trim(this.max_len).await {
                Ok(report) => tracing::debug!(stream, max_len = this.max_len, ?report, "trimmed"),
                Err(e) => tracing::warn!(stream, max_len = this.max_len, error = %e,
                    "background trim failed"),
            }
        });
    }
}
