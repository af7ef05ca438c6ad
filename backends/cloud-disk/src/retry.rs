//! Trying an EC2 call again: throttling (`RequestLimitExceeded`, `Throttling`), AWS-side
//! failures (5xx) and timeouts are retried with jittered exponential backoff, at most
//! [`MAX_ATTEMPTS`] times and never past the call's wait budget; every other failure is
//! final at once. An action that is not idempotent is retried only when throttled: after a
//! timeout or a 5xx it may have happened, and sending it again could do it twice.

use std::time::Duration;

use crate::context::Ctx;
use crate::errors::Failure;

pub const MAX_ATTEMPTS: u32 = 5;

/// Between retries of one request.
pub const RETRY: Backoff = Backoff { base: Duration::from_millis(250), cap: Duration::from_secs(4) };

/// Between polls of a state change (a volume becoming available, an attachment attached).
pub const POLL: Backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(8) };

/// Exponential backoff with "equal jitter": the n-th delay is half of `base·2ⁿ` (capped)
/// plus a random part of up to the other half, so callers that failed together spread out.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// The delay after failed try number `attempt` (from 0).
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let doubled = self.base.saturating_mul(2u32.saturating_pow(attempt.min(16)));
        let full = u64::try_from(doubled.min(self.cap).as_millis()).unwrap_or(u64::MAX);
        let half = full / 2;
        Duration::from_millis(half + random % (full - half + 1))
    }
}

/// Runs `call` until it succeeds or fails for good; a retryable failure that outlasts the
/// attempts or the budget is returned, noting how often it was tried.
pub fn run<T>(
    ctx: &Ctx,
    action: &str,
    idempotent: bool,
    mut call: impl FnMut() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let mut attempt = 0;
    loop {
        let failure = match call() {
            Ok(value) => return Ok(value),
            Err(failure) if failure.throttled() || (idempotent && failure.retryable()) => failure,
            Err(failure) => return Err(failure),
        };
        attempt += 1;
        let delay = RETRY.delay(attempt - 1, ctx.platform.random());
        if attempt == MAX_ATTEMPTS || !ctx.sleep_within_budget(delay) {
            return Err(failure.gave_up(attempt));
        }
        ctx.platform.warn(&format!("{action} will be retried ({attempt}/{MAX_ATTEMPTS}): {failure}"));
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use kit::types::Error;

    use super::*;
    use crate::context::fake::FakePlatform;
    use crate::credentials::Credentials;
    use crate::errors::AwsError;
    use crate::fake::{FakeEc2, ctx_with};
    use crate::settings::Settings;

    fn throttled(platform: &FakePlatform) -> Failure {
        let credentials = Credentials::load(platform).unwrap();
        let error = AwsError {
            code: "RequestLimitExceeded".into(),
            message: "Request limit exceeded.".into(),
            request_id: None,
        };
        Failure::aws("DescribeVolumes", 503, error, &credentials)
    }

    #[test]
    fn delays_grow_to_the_cap_with_jitter_inside_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(RETRY.delay(0, 0), ms(125));
        assert_eq!(RETRY.delay(0, u64::MAX), ms(125 + u64::MAX % 126));
        assert_eq!(RETRY.delay(1, 0), ms(250));
        assert_eq!(RETRY.delay(4, 0), ms(2000));
        assert_eq!(RETRY.delay(40, 0), ms(2000));
        for random in [0, 1, 77, u64::MAX / 3, u64::MAX] {
            for attempt in 0..10 {
                let delay = POLL.delay(attempt, random);
                assert!(delay >= POLL.delay(attempt, 0) && delay <= Duration::from_secs(8), "{delay:?}");
            }
        }
    }

    #[test]
    fn retries_until_success() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let calls = Cell::new(0);
        let result = run(&ctx, "DescribeVolumes", true, || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 { Err(throttled(&platform)) } else { Ok(7) }
        });
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.get(), 3);
        assert_eq!(platform.slept.borrow().len(), 2);
        assert_eq!(platform.logs.borrow().len(), 2);
    }

    #[test]
    fn attempts_are_bounded() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let calls = Cell::new(0);
        let result: Result<(), _> = run(&ctx, "DescribeVolumes", true, || {
            calls.set(calls.get() + 1);
            Err(throttled(&platform))
        });
        let error: Error = result.unwrap_err().into();
        assert!(matches!(&error, Error::Unavailable(m) if m.contains("gave up after 5 attempts")), "{error:?}");
        assert_eq!(calls.get(), MAX_ATTEMPTS);
    }

    #[test]
    fn the_budget_bounds_retries() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let mut settings = Settings::for_tests();
        settings.wait_budget = Duration::from_millis(500);
        let ctx = ctx_with(&platform, &ec2, settings);
        let calls = Cell::new(0);
        let result: Result<(), _> = run(&ctx, "DescribeVolumes", true, || {
            calls.set(calls.get() + 1);
            Err(throttled(&platform))
        });
        assert!(result.unwrap_err().retryable());
        assert!(platform.total_slept() <= Duration::from_millis(500));
        assert!(calls.get() < MAX_ATTEMPTS);
    }

    #[test]
    fn an_action_that_is_not_idempotent_is_retried_only_when_throttled() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let credentials = Credentials::load(&platform).unwrap();
        let calls = Cell::new(0);
        let result = run(&ctx, "CreateSnapshot", false, || {
            calls.set(calls.get() + 1);
            match calls.get() {
                1 => Err(throttled(&platform)),
                _ => {
                    let error = AwsError { code: "InternalError".into(), message: String::new(), request_id: None };
                    Err::<(), _>(Failure::aws("CreateSnapshot", 500, error, &credentials))
                }
            }
        });
        assert!(result.unwrap_err().is("InternalError"));
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn final_failures_are_not_retried() {
        let platform = FakePlatform::new();
        let ec2 = FakeEc2::new();
        let ctx = ctx_with(&platform, &ec2, Settings::for_tests());
        let credentials = Credentials::load(&platform).unwrap();
        let calls = Cell::new(0);
        let result: Result<(), _> = run(&ctx, "DeleteVolume", true, || {
            calls.set(calls.get() + 1);
            let error = AwsError { code: "VolumeInUse".into(), message: String::new(), request_id: None };
            Err(Failure::aws("DeleteVolume", 400, error, &credentials))
        });
        assert!(result.unwrap_err().is("VolumeInUse"));
        assert_eq!(calls.get(), 1);
        assert!(platform.slept.borrow().is_empty());
    }
}
