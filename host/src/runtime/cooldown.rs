//! A backend that keeps misbehaving is slowed down, so it cannot take the node's CPU and
//! memory bandwidth from the other backends by failing fast and often.
//!
//! Every call is bounded on its own (deadline, memory caps), but a call that is stopped
//! early is cheap to repeat: a component that fills its memory cap and traps, over and over
//! with a few calls in flight, keeps both cores of a small node busy faulting in and
//! zeroing pages. So calls that end in a trap, a timeout or a memory cap count as
//! misbehaviour; after `n` such calls in a row, the instance's next calls wait
//! `BASE << (n - 1)`, at most [`MAX`] (and never past their own deadline) before they
//! start. One call that ends any other way (an answer, or an error the backend chose)
//! resets the count. A well-behaved backend never waits.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The wait after the first misbehaving call, and the longest wait.
const BASE: Duration = Duration::from_millis(50);
const MAX: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Cooldown {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Misbehaving calls in a row.
    strikes: u32,
    /// Calls wait until then.
    until: Option<Instant>,
}

impl Cooldown {
    /// How long a call starting at `now` waits first (zero for a well-behaved backend).
    pub fn wait_at(&self, now: Instant) -> Duration {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.until.map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    /// Records how a call that ended at `now` went; answers the new wait after a strike.
    pub fn record_at(&self, now: Instant, misbehaved: bool) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !misbehaved {
            *state = State::default();
            return None;
        }
        state.strikes = state.strikes.saturating_add(1);
        let wait = BASE.saturating_mul(1 << (state.strikes - 1).min(16)).min(MAX);
        state.until = Some(now + wait);
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_in_a_row_double_the_wait_up_to_the_cap_and_an_answer_resets_them() {
        let cooldown = Cooldown::default();
        let t0 = Instant::now();
        assert_eq!(cooldown.wait_at(t0), Duration::ZERO);
        assert_eq!(cooldown.record_at(t0, false), None);
        assert_eq!(cooldown.wait_at(t0), Duration::ZERO, "a good call never waits");

        assert_eq!(cooldown.record_at(t0, true), Some(Duration::from_millis(50)));
        assert_eq!(cooldown.wait_at(t0 + Duration::from_millis(20)), Duration::from_millis(30));
        assert_eq!(cooldown.record_at(t0, true), Some(Duration::from_millis(100)));
        assert_eq!(cooldown.record_at(t0, true), Some(Duration::from_millis(200)));
        for _ in 0..40 {
            cooldown.record_at(t0, true);
        }
        assert_eq!(cooldown.wait_at(t0), MAX);
        assert_eq!(cooldown.wait_at(t0 + MAX), Duration::ZERO, "the wait is over once its time passed");

        assert_eq!(cooldown.record_at(t0, false), None);
        assert_eq!(cooldown.wait_at(t0), Duration::ZERO);
        assert_eq!(cooldown.record_at(t0, true), Some(Duration::from_millis(50)), "counting starts over");
    }
}
