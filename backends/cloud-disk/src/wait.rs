//! Waiting for EC2 to finish a change (a volume created, attached, detached, modified):
//! poll with backoff while the call's wait budget lasts, then answer `unavailable` so the
//! CO retries — every operation finds its earlier progress again (by tag, by attachment,
//! by modification), so the retry picks up where this call stopped.

use kit::types::Error;

use crate::context::Ctx;
use crate::retry::POLL;

/// One look at the state being waited for.
pub enum Poll<T> {
    Ready(T),
    /// Not yet; the state it is in, for the message if the budget runs out.
    Pending(String),
}

/// Waits for a change that is now in `state`: sleeps, polls, and repeats until `poll` is
/// ready or fails. `what` describes the change for the message ("volume vol-… to become
/// available").
pub fn until<T>(
    ctx: &Ctx,
    what: &str,
    state: &str,
    mut poll: impl FnMut() -> Result<Poll<T>, Error>,
) -> Result<T, Error> {
    let mut state = state.to_owned();
    let mut attempt = 0;
    loop {
        let delay = POLL.delay(attempt, ctx.platform.random());
        if !ctx.sleep_within_budget(delay) {
            return Err(Error::Unavailable(format!(
                "waited {} ms for {what}; it is still {state}: retry",
                ctx.settings.wait_budget.as_millis()
            )));
        }
        attempt += 1;
        match poll()? {
            Poll::Ready(value) => return Ok(value),
            Poll::Pending(now) => state = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;
    use crate::context::fake::FakePlatform;
    use crate::fake::{FakeEc2, ctx_with};
    use crate::settings::Settings;

    #[test]
    fn polls_until_ready() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let polls = Cell::new(0);
        let value = until(&ctx, "the thing", "creating", || {
            polls.set(polls.get() + 1);
            Ok(if polls.get() == 4 { Poll::Ready("done") } else { Poll::Pending("creating".into()) })
        });
        assert_eq!(value.unwrap(), "done");
        assert_eq!(platform.slept.borrow().len(), 4);
    }

    #[test]
    fn the_budget_ends_the_wait() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let result: Result<(), Error> =
            until(&ctx, "volume vol-1 to become available", "creating", || Ok(Poll::Pending("still-creating".into())));
        let Err(Error::Unavailable(message)) = result else {
            panic!("expected unavailable, got {result:?}");
        };
        assert_eq!(message, "waited 45000 ms for volume vol-1 to become available; it is still still-creating: retry");
        assert!(platform.total_slept() <= Duration::from_secs(45));
        assert!(platform.total_slept() >= Duration::from_secs(35));
    }

    #[test]
    fn errors_end_the_wait() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let result: Result<(), Error> = until(&ctx, "x", "creating", || Err(Error::Internal("broken".into())));
        assert_eq!(result, Err(Error::Internal("broken".into())));
    }
}
