//! Runs a program as an argument vector — never a shell string — with a cleared
//! environment, a deadline and a cap on captured output.
//!
//! Used for a backend's granted commands and for the host's own tools. It blocks, so
//! callers run it on a blocking thread, never on an async worker.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Runs granted commands for backends. The host uses [`System`]; the backend testkit
/// substitutes a recording fake.
pub trait Executor: Send + Sync {
    fn run(
        &self,
        program: &Path,
        args: &[String],
        stdin: &[u8],
        deadline: Instant,
        cap: usize,
    ) -> std::io::Result<Output>;
}

/// Really runs the program (see [`run`]).
pub struct System;

impl Executor for System {
    fn run(
        &self,
        program: &Path,
        args: &[String],
        stdin: &[u8],
        deadline: Instant,
        cap: usize,
    ) -> std::io::Result<Output> {
        run(program, args, stdin, deadline, cap)
    }
}

/// What a finished (or killed) run produced.
#[derive(Debug)]
pub struct Output {
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The deadline passed and the process group was killed.
    pub timed_out: bool,
}

/// Runs `program args…`, feeding `stdin`, until it exits or `deadline` passes.
/// Each of stdout and stderr keeps at most `cap` bytes; the rest is read and dropped so
/// the child never blocks on a full pipe.
pub fn run(program: &Path, args: &[String], stdin: &[u8], deadline: Instant, cap: usize) -> std::io::Result<Output> {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: only an async-signal-safe syscall runs between fork and exec.
    unsafe {
        // A tool must not outlive a host killed mid-call: its retry would race the orphan.
        command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
    let mut child = command.spawn()?;
    let pgid = Pid::from_raw(child.id() as i32);

    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        // A child that exits without reading its input is not an error of ours.
        let _ = input.write_all(&stdin);
    });
    let stdout = capture(child.stdout.take().expect("stdout is piped"), cap);
    let stderr = capture(child.stderr.take().expect("stderr is piped"), cap);

    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let timeout = deadline.saturating_duration_since(Instant::now());
    let (status, timed_out) = match rx.recv_timeout(timeout) {
        Ok(status) => (status?, false),
        Err(_) => {
            let _ = killpg(pgid, Signal::SIGKILL);
            let status = rx.recv().map_err(|_| std::io::Error::other("waiter thread vanished"))??;
            (status, true)
        }
    };
    let _ = writer.join();
    Ok(Output {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        timed_out,
    })
}

fn capture(mut pipe: impl Read + Send + 'static, cap: usize) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn captures_output_and_exit_code_without_a_shell() {
        let out = run(Path::new("/bin/echo"), &["a b".into(), "$HOME;".into()], b"", soon(5000), 1024).unwrap();
        assert_eq!(out.code, Some(0));
        assert_eq!(out.stdout, b"a b $HOME;\n");
        let out = run(Path::new("/bin/cat"), &[], b"fed", soon(5000), 2).unwrap();
        assert_eq!(out.stdout, b"fe", "output is capped");
    }

    #[test]
    fn environment_is_cleared() {
        // SAFETY: tests in this module do not read the environment concurrently.
        unsafe { std::env::set_var("WASMCSI_SECRET_PROBE", "leak") };
        let out = run(Path::new("/usr/bin/env"), &[], b"", soon(5000), 4096).unwrap();
        assert!(!String::from_utf8_lossy(&out.stdout).contains("leak"));
    }

    #[test]
    fn deadline_kills_the_process_group() {
        let started = Instant::now();
        let out = run(Path::new("/bin/sleep"), &["30".into()], b"", soon(200), 1024).unwrap();
        assert!(out.timed_out);
        assert_eq!(out.code, None);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
