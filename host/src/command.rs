//! Runs a program as an argument vector — never a shell string — with a cleared
//! environment, a deadline and a cap on captured output.
//!
//! Used for a backend's granted commands and for the host's own tools. It blocks, so
//! callers run it on a blocking thread, never on an async worker.
//!
//! A program can leave processes behind that its process group does not hold (a daemon
//! started with `setsid`): they would keep the call waiting on its output pipes and outlive
//! the call. The host process is therefore the subreaper of everything it runs
//! ([`adopt_orphans`]): such a stray is reparented to the host instead of init, and every run
//! ends by killing and reaping the host's children that no run is waiting for.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, mpsc};
use std::thread;
use std::time::Instant;

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// Children started by [`run`] that their run still waits for. Locked while a child is
/// spawned, so a sweep never takes a child that is being started for a stray.
static RUNNING: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Set once the host is the subreaper of what it runs ([`adopt_orphans`]).
static ADOPTING: AtomicBool = AtomicBool::new(false);
/// Sweeps per run: each kills a generation of strays (a killed stray's own children are
/// reparented to the host and found by the next sweep).
const MAX_SWEEPS: usize = 64;

/// Makes this process the subreaper of every program it runs, so descendants that leave
/// their process group are still killed when their run ends. The host calls it once at
/// start-up; every process the host then spawns must go through [`run`].
pub fn adopt_orphans() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    ADOPTING.store(true, Ordering::SeqCst);
    Ok(())
}

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
    let mut child = {
        let mut running = running();
        let child = command.spawn()?;
        running.insert(child.id() as i32);
        child
    };
    let pid = child.id() as i32;

    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    thread::spawn(move || {
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
    let waited = match rx.recv_timeout(timeout) {
        Ok(status) => status.map(|s| (s, false)),
        Err(_) => {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            match rx.recv() {
                Ok(status) => status.map(|s| (s, true)),
                Err(_) => Err(std::io::Error::other("waiter thread vanished")),
            }
        }
    };
    running().remove(&pid);
    sweep_strays();
    let (status, killed) = waited?;
    // Strays are gone now, so the pipes close; without a subreaper (tests of other crates)
    // a pipe a stray still holds is abandoned at the deadline instead of waited for.
    let (stdout, out_open) = collected(&stdout, deadline);
    let (stderr, err_open) = collected(&stderr, deadline);
    Ok(Output { code: status.code(), stdout, stderr, timed_out: killed || out_open || err_open })
}

fn running() -> MutexGuard<'static, BTreeSet<i32>> {
    RUNNING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kills and reaps the host's children that no run waits for: what programs left behind.
fn sweep_strays() {
    if !ADOPTING.load(Ordering::SeqCst) {
        return;
    }
    let running = running();
    for _ in 0..MAX_SWEEPS {
        let strays: Vec<i32> = own_children().into_iter().filter(|pid| !running.contains(pid)).collect();
        if strays.is_empty() {
            return;
        }
        for &pid in &strays {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for &pid in &strays {
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        tracing::warn!(?strays, "killed processes that a finished program left behind");
    }
    tracing::error!("processes left behind by programs keep multiplying; gave up killing them");
}

/// The children of this process, from each thread's `/proc/self/task/<tid>/children`
/// (orphans are reparented to some thread of the subreaper).
fn own_children() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(text.split_whitespace().filter_map(|pid| pid.parse::<i32>().ok()));
        }
    }
    children
}

/// What a capture thread kept, waiting for it until `deadline`; `true` when its pipe was
/// still open then.
fn collected(capture: &mpsc::Receiver<Vec<u8>>, deadline: Instant) -> (Vec<u8>, bool) {
    match capture.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(kept) => (kept, false),
        Err(_) => (Vec::new(), true),
    }
}

fn capture(mut pipe: impl Read + Send + 'static, cap: usize) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
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
        let _ = tx.send(kept);
    });
    rx
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

    /// The pid a shell prints, once `run` returned: whether that process still exists.
    fn alive(stdout: &[u8]) -> bool {
        let pid = String::from_utf8_lossy(stdout).trim().to_owned();
        assert!(!pid.is_empty(), "the shell printed its pid");
        // A killed stray was reaped by the sweep, so its /proc entry is gone.
        Path::new("/proc").join(pid).exists()
    }

    #[test]
    fn strays_that_leave_the_process_group_are_killed() {
        adopt_orphans().unwrap();
        // The shell starts a daemon in a session of its own (out of reach of the process
        // group kill), prints its pid once the daemon told it, and goes on: the daemon keeps
        // the output pipe stderr open for 30 s unless the host kills it.
        let daemon = "setsid -f sh -c 'echo $$; exec sleep 30 >/dev/null'";
        let shell = |then: &str| vec!["-c".to_string(), format!("pid=$({daemon}); echo $pid; {then}")];
        let started = Instant::now();
        let out = run(Path::new("/bin/sh"), &shell("exit 0"), b"", soon(20_000), 1024).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "the run waited {:?} for its stray", started.elapsed());
        assert_eq!(out.code, Some(0));
        assert!(!alive(&out.stdout), "the stray survived its run");

        // At the deadline too, while the shell itself still runs.
        let started = Instant::now();
        let out = run(Path::new("/bin/sh"), &shell("sleep 30"), b"", soon(1500), 1024).unwrap();
        assert!(out.timed_out);
        assert!(started.elapsed() < Duration::from_secs(10), "the run took {:?}", started.elapsed());
        assert!(!alive(&out.stdout), "the stray survived the deadline");
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
