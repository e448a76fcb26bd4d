//! Crash-loop back-off as upstream kubelet keeps it: per container, the first restart is
//! immediate, then each restart waits twice as long as the one before (10 s doubling to
//! 5 min), measured from when the container last finished; an entry untouched for twice the
//! maximum (10 min) starts over.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

/// The first back-off.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest back-off.
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Timestamp,
}

/// Back-off entries keyed by container name (one table per pod).
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

fn since(later: Timestamp, earlier: Timestamp) -> Duration {
    Duration::try_from(later.duration_since(earlier)).unwrap_or_default()
}

impl Backoff {
    /// When a container that finished at `finished_at` may restart, if it must wait (`None`
    /// when it may restart now).
    pub fn wait_until(
        &self,
        key: &str,
        finished_at: Timestamp,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let entry = self.entries.get(key)?;
        if since(finished_at, entry.last_update) > 2 * MAX {
            return None;
        }
        let until = finished_at + entry.backoff;
        (now < until).then_some(until)
    }

    /// Records a restart of a container that finished at `finished_at`.
    pub fn record_restart(&mut self, key: &str, finished_at: Timestamp) {
        let next = match self.entries.get(key) {
            Some(e) if since(finished_at, e.last_update) <= 2 * MAX => (e.backoff * 2).min(MAX),
            _ => INITIAL,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff: next,
                last_update: finished_at,
            },
        );
    }

    /// The current back-off of a container (for messages).
    pub fn current(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(INITIAL, |e| e.backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_doubles_to_five_minutes() {
        let mut b = Backoff::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(b.wait_until("c", t0, t0), None);
        b.record_restart("c", t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.wait_until("c", t1, t1), Some(t1 + INITIAL));
        b.record_restart("c", t1);
        assert_eq!(b.current("c"), Duration::from_secs(20));
        let mut t = t1;
        for _ in 0..10 {
            t += Duration::from_secs(1);
            b.record_restart("c", t);
        }
        assert_eq!(b.current("c"), MAX);
    }

    #[test]
    fn a_long_quiet_time_starts_over() {
        let mut b = Backoff::default();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        b.record_restart("c", t0);
        b.record_restart("c", t0);
        let later = t0 + Duration::from_secs(11 * 60);
        assert_eq!(b.wait_until("c", later, later), None);
        b.record_restart("c", later);
        assert_eq!(b.current("c"), INITIAL);
    }
}
