//! Child processes that cannot outlive `fusioninfer up`.
//!
//! * Each child runs in its own process group (so a terminal's Ctrl-C reaches only `up`, which
//!   then stops the children in order) and is stopped by signalling the whole group: SIGTERM,
//!   then SIGKILL after a grace period. A model server command's own children go with it.
//! * On Linux each child also gets `PR_SET_PDEATHSIG` = SIGKILL: if `up` itself is killed
//!   without a chance to clean up (`kill -9`), the kernel kills the children. The signal
//!   fires when the *thread* that spawned the child exits, so a [`Supervisor`] must be used
//!   from a thread that outlives it (the main thread, in `up`, the demo and the benchmark).
//! * [`Supervisor`]'s `Drop` stops whatever still runs, so an early return or a panic does not
//!   leak processes either.
//! * Every child's stdout and stderr go to a log file, whose tail is shown when it fails.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A started child.
#[derive(Debug)]
pub struct Managed {
    /// Name used in messages (`demo-worker-0`, `endpoint picker`, `envoy`).
    pub name: String,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
}

impl Managed {
    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once it has exited and been reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    fn signal_group(&self, signal: libc::c_int) {
        if self.status.is_some() {
            // Reaped: the id may already belong to someone else.
            return;
        }
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals the process group we created for this
        // child; no memory is touched.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// The processes one local stack runs.
#[derive(Debug, Default)]
pub struct Supervisor {
    children: Vec<Managed>,
}

/// What stopping took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopReport {
    /// Children stopped (they were running until now).
    pub stopped: usize,
    /// Of those, how many ignored SIGTERM for the whole grace period and were killed.
    pub killed: Vec<String>,
}

impl Supervisor {
    /// An empty supervisor.
    pub fn new() -> Self {
        Supervisor::default()
    }

    /// Starts `program args` with output appended to `log`, in its own process group, with the
    /// parent-death signal set.
    pub fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> io::Result<&Managed> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("starting {}: {e}", program.display()))
        })?;
        self.children.push(Managed {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
            status: None,
        });
        Ok(self.children.last().expect("just pushed"))
    }

    /// The children, in start order.
    pub fn children(&self) -> &[Managed] {
        &self.children
    }

    /// The first child found to have exited since the last call, if any.
    pub fn exited(&mut self) -> Option<&Managed> {
        let index = self
            .children
            .iter_mut()
            .position(|c| c.status.is_none() && c.poll().is_some())?;
        Some(&self.children[index])
    }

    /// Stops every child still running: SIGTERM to each process group in reverse start order,
    /// then SIGKILL to whatever still runs after `grace` (or at once when `force()` turns
    /// true, e.g. on a second Ctrl-C). Reaps them all.
    pub fn stop(&mut self, grace: Duration, force: &dyn Fn() -> bool) -> StopReport {
        let running: Vec<usize> = (0..self.children.len())
            .filter(|&i| self.children[i].poll().is_none())
            .collect();
        for &i in running.iter().rev() {
            self.children[i].signal_group(libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let mut killed = Vec::new();
        loop {
            let left: Vec<usize> = running
                .iter()
                .copied()
                .filter(|&i| self.children[i].poll().is_none())
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline || force() {
                for i in left {
                    let child = &mut self.children[i];
                    child.signal_group(libc::SIGKILL);
                    let _ = child.child.kill();
                    child.status = child.child.wait().ok();
                    killed.push(child.name.clone());
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        StopReport {
            stopped: running.len(),
            killed,
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3), &|| false);
    }
}

#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl, getppid);
    // nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited during start"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

/// The last `lines` lines of a log file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Termination signals received (SIGINT, SIGTERM, SIGHUP) since [`install_signal_handlers`].
static SIGNALS: AtomicU32 = AtomicU32::new(0);
static LAST_SIGNAL: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only atomics: async-signal-safe.
    LAST_SIGNAL.store(signal as u32, Ordering::SeqCst);
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Routes SIGINT, SIGTERM and SIGHUP to a counter instead of terminating the process, so the
/// caller can stop its children first ([`signals_received`]).
pub fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only touches atomics; sigaction is given a zeroed, then filled,
        // struct.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// How many termination signals arrived since the handlers were installed.
pub fn signals_received() -> u32 {
    SIGNALS.load(Ordering::SeqCst)
}

/// The name of the last termination signal received (`SIGINT`, …).
pub fn last_signal_name() -> &'static str {
    match LAST_SIGNAL.load(Ordering::SeqCst) as libc::c_int {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie still has /proc/PID; look at its state.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
                state != Some("Z")
            })
            .unwrap_or(false)
    }

    #[test]
    fn stop_terminates_the_whole_group_and_drop_too() {
        let dir = std::env::temp_dir().join(format!("fi-proc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut supervisor = Supervisor::new();
        // A shell with a grandchild: both are in the child's process group.
        let grandchild_file = dir.join("grandchild");
        let script = format!("sleep 30 & echo $! > {}; wait", grandchild_file.display());
        let child = supervisor
            .spawn(
                "sleeper",
                Path::new("/bin/sh"),
                &["-c".to_owned(), script],
                &[],
                &dir.join("sleeper.log"),
            )
            .unwrap();
        let pid = child.pid();
        let start = Instant::now();
        let grandchild: u32 = loop {
            if let Ok(text) = std::fs::read_to_string(&grandchild_file)
                && let Ok(pid) = text.trim().parse()
            {
                break pid;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no grandchild");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(alive(pid) && alive(grandchild));
        let report = supervisor.stop(Duration::from_secs(5), &|| false);
        assert_eq!(report.stopped, 1);
        assert!(!alive(pid), "child survived");
        let start = Instant::now();
        while alive(grandchild) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(grandchild), "grandchild survived");

        let mut supervisor = Supervisor::new();
        let pid = supervisor
            .spawn(
                "sleeper",
                Path::new("/bin/sleep"),
                &["30".to_owned()],
                &[],
                &dir.join("sleep.log"),
            )
            .unwrap()
            .pid();
        drop(supervisor);
        assert!(!alive(pid), "drop left the child running");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn exits_are_reported_with_the_log_tail() {
        let dir = std::env::temp_dir().join(format!("fi-proc-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut supervisor = Supervisor::new();
        supervisor
            .spawn(
                "failing",
                Path::new("/bin/sh"),
                &["-c".to_owned(), "echo one; echo two >&2; exit 3".to_owned()],
                &[],
                &dir.join("failing.log"),
            )
            .unwrap();
        let start = Instant::now();
        let exited = loop {
            if let Some(c) = supervisor.exited() {
                break (c.name.clone(), c.status().unwrap().code(), tail(&c.log, 5));
            }
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(exited.0, "failing");
        assert_eq!(exited.1, Some(3));
        assert_eq!(exited.2, "one\ntwo");
        assert!(supervisor.exited().is_none(), "reported once");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
