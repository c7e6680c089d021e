//! Wall-clock time as Unix milliseconds, behind a [`Clock`] so that code
//! which decides by time (window ages, lease days, round deadlines) can be
//! handed a fixed or stepped clock in tests.

use std::fmt::Debug;

/// A source of the current time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Current time, Unix ms.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// Current wall-clock time, Unix ms (0 before 1970, saturating far ahead).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
