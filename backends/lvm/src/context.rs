//! What every operation works with: the parsed settings and the host services.
//!
//! The host services sit behind the [`Platform`] trait so that the operations run unchanged
//! natively in unit tests (the WIT imports only exist inside a component).

use kit::types::{Error, ExecOutput};

use crate::ids::Id;
use crate::settings::Settings;

/// The host services the LVM backend uses (`host.exec`, `host.log`).
pub trait Platform {
    /// Runs a granted program (an absolute path) with an argument vector, no shell.
    fn exec(&self, program: &str, args: &[String]) -> Result<ExecOutput, Error>;
    /// Logs a notable event (a volume or snapshot made, grown or removed).
    fn info(&self, message: &str);
    /// Logs something an operator should look at (an `optional` instance that serves
    /// nothing on this node).
    fn warn(&self, message: &str);
}

pub struct Ctx<'p> {
    pub settings: Settings,
    pub platform: &'p dyn Platform,
}

impl Ctx<'_> {
    /// `<vg>/<lv>`, how lvm commands name an LV.
    pub fn lv_path(&self, lv: &str) -> String {
        format!("{}/{lv}", self.settings.volume_group)
    }

    /// The device node of one of our LVs on this node.
    pub fn device_path(&self, id: &Id) -> String {
        format!("/dev/{}/{id}", self.settings.volume_group)
    }
}

/// A native [`Platform`] with scripted lvm answers, for the unit tests of this crate.
#[cfg(test)]
pub mod fake {
    use std::cell::RefCell;

    use kit::types::{Error, ExecOutput};

    use super::{Ctx, Platform};
    use crate::settings::Settings;

    type Script = Box<dyn Fn(&[String]) -> Result<ExecOutput, Error>>;

    pub struct FakePlatform {
        script: Script,
        pub calls: RefCell<Vec<(String, Vec<String>)>>,
        pub logs: RefCell<Vec<String>>,
        pub warnings: RefCell<Vec<String>>,
    }

    impl FakePlatform {
        /// Answers every command with `script(args)`.
        pub fn new(script: impl Fn(&[String]) -> Result<ExecOutput, Error> + 'static) -> FakePlatform {
            FakePlatform {
                script: Box::new(script),
                calls: RefCell::new(Vec::new()),
                logs: RefCell::new(Vec::new()),
                warnings: RefCell::new(Vec::new()),
            }
        }

        /// A context with these settings.
        pub fn ctx(&self, settings: &[(&str, &str)]) -> Ctx<'_> {
            let params: Vec<(String, String)> = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Ctx { settings: Settings::parse(&params).unwrap(), platform: self }
        }
    }

    impl Platform for FakePlatform {
        fn exec(&self, program: &str, args: &[String]) -> Result<ExecOutput, Error> {
            self.calls.borrow_mut().push((program.to_owned(), args.to_vec()));
            (self.script)(args)
        }

        fn info(&self, message: &str) {
            self.logs.borrow_mut().push(message.to_owned());
        }

        fn warn(&self, message: &str) {
            self.warnings.borrow_mut().push(message.to_owned());
        }
    }

    /// Exit 0 with `stdout`.
    pub fn ok(stdout: &str) -> Result<ExecOutput, Error> {
        Ok(ExecOutput { status: 0, stdout: stdout.as_bytes().to_vec(), stderr: Vec::new() })
    }

    /// Exit `status` with `stderr`.
    pub fn fail(status: i32, stderr: &str) -> Result<ExecOutput, Error> {
        Ok(ExecOutput { status, stdout: Vec::new(), stderr: stderr.as_bytes().to_vec() })
    }
}
