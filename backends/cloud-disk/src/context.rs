//! What every operation works with: the parsed settings, the host services (secrets, node
//! id, time, logging), the HTTP transport, and the call's wait budget.
//!
//! Host services and HTTP sit behind traits so that the operations run unchanged natively
//! in unit tests, against a fake EC2 and a clock that advances when slept on instead of
//! sleeping.

use std::time::{Duration, SystemTime};

use crate::settings::Settings;
use crate::transport::Transport;

/// The host services cloud-disk uses.
pub trait Platform {
    /// `host.secret`: from the CSI request's `secrets`, else the instance's granted env.
    fn secret(&self, name: &str) -> Option<String>;
    /// `host.node-id`: the node this host runs on (an instance id or a node name, see
    /// `node::instance_id`).
    fn node_id(&self) -> String;
    /// Wall-clock time: SigV4 dates and the wait budget.
    fn now(&self) -> SystemTime;
    /// Blocks for `duration` (backoff between retries and polls).
    fn sleep(&self, duration: Duration);
    /// A random number for jitter (not for anything secret).
    fn random(&self) -> u64;
    /// Logs a notable event (a volume made, attached, removed).
    fn info(&self, message: &str);
    /// Logs a problem that does not fail the call (a retried throttle).
    fn warn(&self, message: &str);
}

pub struct Ctx<'p> {
    pub settings: Settings,
    pub platform: &'p dyn Platform,
    pub transport: &'p dyn Transport,
    /// When this call stops waiting for state changes and retries.
    deadline: SystemTime,
}

impl<'p> Ctx<'p> {
    pub fn new(settings: Settings, platform: &'p dyn Platform, transport: &'p dyn Transport) -> Ctx<'p> {
        let deadline = platform.now() + settings.wait_budget;
        Ctx { settings, platform, transport, deadline }
    }

    /// Sleeps for `delay` when the wait budget still allows it; false (without sleeping)
    /// when it does not, so the caller answers instead of overrunning the host's deadline.
    pub fn sleep_within_budget(&self, delay: Duration) -> bool {
        let fits = self.deadline.duration_since(self.platform.now()).is_ok_and(|remaining| remaining >= delay);
        if fits {
            self.platform.sleep(delay);
        }
        fits
    }
}

/// The test credentials and node, and (unit tests only) a native [`Platform`] whose clock
/// only moves when slept on.
#[cfg(any(test, feature = "fake"))]
pub mod fake {
    #[cfg(test)]
    use std::cell::{Cell, RefCell};
    #[cfg(test)]
    use std::collections::BTreeMap;
    #[cfg(test)]
    use std::time::{Duration, SystemTime};

    #[cfg(test)]
    use super::Platform;

    pub const ACCESS_KEY_ID: &str = "AKIDEXAMPLE0000000001";
    pub const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    pub const SESSION_TOKEN: &str = "FQoGZXIvYXdzEXAMPLEsessionTOKEN//////////wEaDPd";
    pub const NODE_ID: &str = "i-0123456789abcdef0";

    #[cfg(test)]
    pub struct FakePlatform {
        pub secrets: RefCell<BTreeMap<String, String>>,
        pub now: Cell<SystemTime>,
        pub slept: RefCell<Vec<Duration>>,
        pub logs: RefCell<Vec<String>>,
        pub node_id: String,
    }

    #[cfg(test)]
    impl FakePlatform {
        /// Credentials granted (with a session token), the clock at 2015-08-30T12:36:00Z.
        pub fn new() -> FakePlatform {
            let secrets = [
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
                ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
                ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            ];
            FakePlatform {
                secrets: RefCell::new(secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                now: Cell::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)),
                slept: RefCell::new(Vec::new()),
                logs: RefCell::new(Vec::new()),
                node_id: NODE_ID.into(),
            }
        }

        /// The same platform on another node.
        pub fn with_node_id(mut self, node_id: &str) -> FakePlatform {
            self.node_id = node_id.into();
            self
        }

        pub fn total_slept(&self) -> Duration {
            self.slept.borrow().iter().sum()
        }
    }

    #[cfg(test)]
    impl Platform for FakePlatform {
        fn secret(&self, name: &str) -> Option<String> {
            self.secrets.borrow().get(name).cloned()
        }

        fn node_id(&self) -> String {
            self.node_id.clone()
        }

        fn now(&self) -> SystemTime {
            self.now.get()
        }

        fn sleep(&self, duration: Duration) {
            self.slept.borrow_mut().push(duration);
            self.now.set(self.now.get() + duration);
        }

        /// The middle of the range: jitter is deterministic in tests.
        fn random(&self) -> u64 {
            u64::MAX / 2
        }

        fn info(&self, message: &str) {
            self.logs.borrow_mut().push(message.to_owned());
        }

        fn warn(&self, message: &str) {
            self.logs.borrow_mut().push(format!("WARN {message}"));
        }
    }
}
