//! The time the verification rules and the expiry sweep read: the system clock in production,
//! a clock the test moves by hand in tests.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// A source of Unix milliseconds.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.manual.is_some() { "Clock(manual)" } else { "Clock(system)" })
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that shows `start_ms` until moved with [`Clock::advance`] or [`Clock::set`].
    pub fn manual(start_ms: i64) -> Clock {
        Clock { manual: Some(Arc::new(AtomicI64::new(start_ms))) }
    }

    /// Unix milliseconds, now.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(time) => time.load(Ordering::SeqCst),
            None => clawx_common::time::now_ms(),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, milliseconds: i64) {
        if let Some(time) = &self.manual {
            time.fetch_add(milliseconds, Ordering::SeqCst);
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set(&self, ms: i64) {
        if let Some(time) = &self.manual {
            time.store(ms, Ordering::SeqCst);
        }
    }
}
