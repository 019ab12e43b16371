//! Dewy's `ErrorLimitingSender` and quiet mode (spec dewy.md 7.4) as decisions without I/O:
//! which failed ticks produce a notification, and which other messages go out at all.

/// The count stops here so an agent failing for years cannot overflow it.
pub const ERROR_COUNT_CAP: u32 = 1000;

/// The count whose notification is the last one, with the warning in front.
const LAST_NOTIFIED: u32 = 3;

/// Counts failed ticks between two successful ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorLimiter {
    count: u32,
}

impl ErrorLimiter {
    pub fn new() -> ErrorLimiter {
        ErrorLimiter::default()
    }

    /// Counts one failed tick and returns the text to send for it: counts 1 and 2 are sent
    /// as they are, count 3 with the warning that nothing more follows, later ones not at all.
    pub fn record(&mut self, err: &str) -> Option<String> {
        if self.count < ERROR_COUNT_CAP {
            self.count += 1;
        }
        let line = format!("Error occurred (count: {}): {err}", self.count);
        match self.count {
            n if n < LAST_NOTIFIED => Some(line),
            LAST_NOTIFIED => Some(format!(
                "⚠️ No more error notifications will be sent until errors are resolved.\n\n{line}"
            )),
            _ => None,
        }
    }

    /// Failed ticks since the last successful one (at most [`ERROR_COUNT_CAP`]).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether every non-error message is held back (Dewy: while the count is above 0).
    pub fn suppressing(&self) -> bool {
        self.count > 0
    }

    /// A successful tick: back to 0. Returns whether there was anything to reset, which is
    /// when Dewy logs `Error count reset`.
    pub fn reset(&mut self) -> bool {
        let was = self.count > 0;
        self.count = 0;
        was
    }
}

/// What kind of message is about to go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `Send`: dropped in quiet mode.
    Normal,
    /// `SendImportant`: sent in quiet mode too.
    Important,
    /// A hook result: in quiet mode only when the hook failed.
    Hook { success: bool },
}

/// Whether a non-error message is sent, given quiet mode and the error limiter. Error
/// notifications are decided by [`ErrorLimiter::record`] alone.
pub fn allowed(class: Class, quiet: bool, limiter: &ErrorLimiter) -> bool {
    if limiter.suppressing() {
        return false;
    }
    match class {
        Class::Normal => !quiet,
        Class::Important => true,
        Class::Hook { success } => !quiet || !success,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_notifications_then_silence() {
        let mut l = ErrorLimiter::new();
        assert!(!l.suppressing());
        assert_eq!(
            l.record("boom").as_deref(),
            Some("Error occurred (count: 1): boom")
        );
        assert!(l.suppressing());
        assert_eq!(
            l.record("boom").as_deref(),
            Some("Error occurred (count: 2): boom")
        );
        assert_eq!(
            l.record("last").as_deref(),
            Some(
                "⚠️ No more error notifications will be sent until errors are resolved.\n\nError occurred (count: 3): last"
            )
        );
        assert_eq!(l.record("boom"), None);
        assert_eq!(l.record("boom"), None);
        assert_eq!(l.count(), 5);
    }

    #[test]
    fn reset_says_whether_there_was_a_count() {
        let mut l = ErrorLimiter::new();
        assert!(!l.reset());
        l.record("x");
        l.record("x");
        assert!(l.reset());
        assert_eq!(l.count(), 0);
        assert!(!l.suppressing());
        assert_eq!(
            l.record("again").as_deref(),
            Some("Error occurred (count: 1): again")
        );
    }

    #[test]
    fn count_is_capped() {
        let mut l = ErrorLimiter::new();
        for _ in 0..1500 {
            l.record("x");
        }
        assert_eq!(l.count(), ERROR_COUNT_CAP);
        assert_eq!(l.record("x"), None);
        assert_eq!(l.count(), ERROR_COUNT_CAP);
    }

    #[test]
    fn quiet_mode_and_suppression() {
        let ok = ErrorLimiter::new();
        let hook_ok = Class::Hook { success: true };
        let hook_failed = Class::Hook { success: false };
        for class in [Class::Normal, Class::Important, hook_ok, hook_failed] {
            assert!(allowed(class, false, &ok), "{class:?}");
        }
        assert!(!allowed(Class::Normal, true, &ok));
        assert!(allowed(Class::Important, true, &ok));
        assert!(!allowed(hook_ok, true, &ok));
        assert!(allowed(hook_failed, true, &ok));

        let mut failing = ErrorLimiter::new();
        failing.record("x");
        for quiet in [false, true] {
            for class in [Class::Normal, Class::Important, hook_ok, hook_failed] {
                assert!(!allowed(class, quiet, &failing), "{class:?} quiet={quiet}");
            }
        }
    }
}
