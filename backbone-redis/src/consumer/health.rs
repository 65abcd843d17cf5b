//! [`Tracker`]: what a Redis consumer reports as its [`Health`], shared by its partitions'
//! tasks: the readers say whether their reads succeed and when they last read, the workers
//! count the events held, and the first error that ends the consumer is its reason.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use backbone_core::metadata::now_millis;
use backbone_core::{Health, HealthProbe};

#[derive(Default)]
pub(super) struct Tracker {
    /// Readers whose last read failed.
    failing: AtomicUsize,
    /// The last successful read, ms since the epoch (0: none yet).
    last_read_ms: AtomicU64,
    held: AtomicUsize,
    stopped: Mutex<Option<String>>,
}

impl Tracker {
    /// A reader's read succeeded (`was_failing`: its previous one had failed).
    pub fn read_ok(&self, was_failing: bool) {
        if was_failing {
            self.failing.fetch_sub(1, Ordering::Relaxed);
        }
        self.last_read_ms.fetch_max(now_millis(), Ordering::Relaxed);
    }

    /// A reader's read failed (`was_failing`: its previous one had failed too).
    pub fn read_failed(&self, was_failing: bool) {
        if !was_failing {
            self.failing.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One more event held.
    pub fn hold(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// One event fewer held.
    pub fn release(&self) {
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// The consumer stops because of `reason` (the first one counts).
    pub fn stop(&self, reason: String) {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        stopped.get_or_insert(reason);
    }
}

impl HealthProbe for Tracker {
    fn health(&self) -> Health {
        let last = self.last_read_ms.load(Ordering::Relaxed);
        Health {
            connected: self.failing.load(Ordering::Relaxed) == 0 && last > 0,
            last_read_ms: (last > 0).then_some(last),
            held: self.held.load(Ordering::Relaxed),
            stopped: self
                .stopped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}
