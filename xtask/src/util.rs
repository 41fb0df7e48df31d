//! Shared helpers: errors, progress lines, durations, and a child-process
//! runner that streams output, keeps a copy, and enforces a timeout.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The error type of xtask: a message meant for the user.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Result with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error`] from a message.
pub fn err(msg: impl Into<String>) -> Error {
    msg.into().into()
}

/// Returns early with an [`Error`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => {
        return Err($crate::util::err(format!($($t)*)))
    };
}

/// Prints one progress line, prefixed with `[xtask]` (or `[xtask guest]`).
#[macro_export]
macro_rules! step {
    ($($t:tt)*) => {
        $crate::util::say(&format!($($t)*))
    };
}

/// The prefix of progress lines (set once, by the guest runner).
static PREFIX: OnceLock<&'static str> = OnceLock::new();

/// Sets the prefix of progress lines (once; later calls are ignored).
pub fn set_prefix(prefix: &'static str) {
    let _ = PREFIX.set(prefix);
}

/// Prints a progress line with the prefix and flushes stdout at once, so the
/// line shows up in order with the output of child processes.
pub fn say(msg: &str) {
    let prefix = PREFIX.get().copied().unwrap_or("[xtask]");
    let mut out = std::io::stdout().lock();
    for line in msg.lines() {
        let _ = writeln!(out, "{prefix} {line}");
    }
    let _ = out.flush();
}

/// Formats a duration for humans: `4.2 s`, `3 min 07 s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// Writes a file atomically: into `PATH.tmp`, then renamed over `PATH`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, contents)
        .map_err(|e| err(format!("writing {}: {e}", Path::new(&tmp).display())))?;
    fs::rename(&tmp, path).map_err(|e| err(format!("renaming to {}: {e}", path.display())))?;
    Ok(())
}

/// Quotes a string for a POSIX shell command line.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Returns whether an executable named `name` is found in `PATH`
/// (or, for a name with a slash, exists as a file).
pub fn have_command(name: &str) -> bool {
    find_in_path(name).is_some()
}

/// Finds an executable in `PATH`, falling back to the sbin directories
/// (which a non-root `PATH` often lacks).
pub fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        let p = Path::new(name);
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Runs a command to completion with inherited stdout/stderr and fails
/// unless it exits with status 0.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| err(format!("cannot start {:?}: {e}", cmd.get_program())))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// A short human description of a command line (program and arguments).
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a [`run_streaming`] child finished.
#[derive(Debug)]
pub struct Finished {
    /// Exit status (`None` if it could not be collected).
    pub status: Option<ExitStatus>,
    /// Whether the timeout expired and the process tree was killed.
    pub timed_out: bool,
    /// Everything the child wrote to stdout and stderr, line by line.
    pub output: String,
    /// Wall-clock run time.
    pub duration: Duration,
    /// Whether the child was killed because [`StreamOpts::marker`] did not
    /// appear in its output in time (`timed_out` is then true too).
    pub marker_missed: bool,
}

impl Finished {
    /// True when the child exited by itself with status 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// A short description of how the child ended: `exit status 0`,
    /// `killed by signal 9`, `timed out after 600 s`.
    pub fn describe_end(&self, timeout: Option<Duration>) -> String {
        use std::os::unix::process::ExitStatusExt;
        if self.timed_out {
            return format!(
                "TIMED OUT after {} (killed)",
                fmt_duration(timeout.unwrap_or(self.duration))
            );
        }
        match self.status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => format!("{s}"),
            },
            None => "status unknown".to_string(),
        }
    }
}

/// Options of [`run_streaming`].
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamOpts<'a> {
    /// Kill the child (and its descendants) after this long.
    pub timeout: Option<Duration>,
    /// Echo each output line to our stdout as it arrives.
    pub echo: bool,
    /// Also write the output to this file.
    pub log: Option<&'a Path>,
    /// Put the child in a process group of its own and kill that group
    /// (catching daemons it left behind) when it is done. Only where no
    /// terminal's Ctrl-C needs to reach the child (inside the VM).
    pub own_group: bool,
    /// A line that must appear (as a substring) within this long of the
    /// start, else the child is killed as timed out: a stage that hangs
    /// (a VM that never boots) fails at once, not at the overall timeout.
    pub marker: Option<(&'a str, Duration)>,
}

/// Runs a child with stdin from /dev/null and its stdout and stderr piped:
/// each line is echoed (optionally), logged (optionally) and collected. On
/// timeout the child and all its descendants get SIGKILL.
pub fn run_streaming(cmd: &mut Command, opts: StreamOpts<'_>) -> Result<Finished> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if opts.own_group {
        cmd.process_group(0);
    }
    let mut log = match opts.log {
        Some(p) => {
            Some(File::create(p).map_err(|e| err(format!("creating {}: {e}", p.display())))?)
        }
        None => None,
    };
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot start {}: {e}", describe(cmd))))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let pipes: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().expect("piped stdout")),
        Box::new(child.stderr.take().expect("piped stderr")),
    ];
    for pipe in pipes {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(buf.clone()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);

    let mut output = String::new();
    let seen_marker = std::cell::Cell::new(opts.marker.is_none());
    let mut handle = |raw: Vec<u8>| {
        let text = String::from_utf8_lossy(&raw);
        let line = text.trim_end_matches(['\n', '\r']);
        if opts.echo {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        if let Some((m, _)) = opts.marker {
            if line.contains(m) {
                seen_marker.set(true);
            }
        }
        output.push_str(line);
        output.push('\n');
    };

    let deadline = opts.timeout.map(|t| start + t);
    let mut status: Option<ExitStatus> = None;
    let mut timed_out = false;
    let mut marker_missed = false;
    let mut exited_at: Option<Instant> = None;
    let mut pipes_open = true;
    loop {
        if pipes_open {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    handle(line);
                    // Drain what is already there before checking the child.
                    while let Ok(line) = rx.try_recv() {
                        handle(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => pipes_open = false,
            }
        } else {
            thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            if let Some(s) = child.try_wait()? {
                status = Some(s);
                exited_at = Some(Instant::now());
            } else if deadline.is_some_and(|d| Instant::now() >= d)
                || opts
                    .marker
                    .is_some_and(|(_, within)| !seen_marker.get() && start.elapsed() >= within)
            {
                timed_out = true;
                marker_missed = !seen_marker.get();
                kill_tree(pid);
                status = Some(child.wait()?);
                exited_at = Some(Instant::now());
            }
        }
        if status.is_some() {
            if !pipes_open {
                break;
            }
            // Exited, but something it started still holds the pipes open.
            if exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
                break;
            }
        }
    }
    while let Ok(line) = rx.try_recv() {
        handle(line);
    }
    if opts.own_group {
        // Leftover daemons (e.g. a compositor a test forgot to stop).
        if let Some(pgid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
    Ok(Finished {
        status,
        timed_out,
        output,
        duration: start.elapsed(),
        marker_missed,
    })
}

/// Parses the parent pid out of the contents of `/proc/PID/stat`.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    // "pid (comm) state ppid ..." where comm may contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// All descendants of `root`, from a map pid -> parent pid.
pub fn descendants(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut found = Vec::new();
    let mut seen = HashSet::from([root]);
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (&child, &parent) in parents {
            if parent == p && seen.insert(child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Sends SIGKILL to a process and all its descendants (found via /proc):
/// the deepest first, so each parent that is still alive reaps its children
/// (nothing is left to init as a zombie), then, after a short grace time,
/// the process itself.
pub fn kill_tree(root: u32) {
    use rustix::process::{kill_process, Pid, Signal};
    let mut parents = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = fs::read_to_string(entry.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat_ppid)
            {
                parents.insert(pid, ppid);
            }
        }
    }
    let kill = |pid: u32| {
        if let Some(pid) = Pid::from_raw(pid as i32) {
            let _ = kill_process(pid, Signal::KILL);
        }
    };
    let below = descendants(root, &parents);
    for &pid in below.iter().rev() {
        kill(pid);
    }
    if !below.is_empty() {
        thread::sleep(Duration::from_millis(500));
    }
    kill(root);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_millis(4230)), "4.2 s");
        assert_eq!(fmt_duration(Duration::from_secs(187)), "3 min 07 s");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/work/main/target/x"), "/work/main/target/x");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn stat_ppid() {
        assert_eq!(parse_stat_ppid("123 (qemu) S 77 123 1 0"), Some(77));
        assert_eq!(parse_stat_ppid("9 (a) b) c) R 4 9"), Some(4));
        assert_eq!(parse_stat_ppid("garbage"), None);
    }

    #[test]
    fn process_tree() {
        let parents = HashMap::from([(2, 1), (3, 2), (4, 3), (5, 1), (6, 99)]);
        let mut d = descendants(2, &parents);
        d.sort();
        assert_eq!(d, vec![3, 4]);
    }

    #[test]
    fn streaming_collects_and_times_out() {
        let done = run_streaming(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            StreamOpts::default(),
        )
        .unwrap();
        assert!(!done.timed_out);
        assert_eq!(done.status.unwrap().code(), Some(3));
        assert!(done.output.contains("out\n") && done.output.contains("err\n"));

        let slow = run_streaming(
            Command::new("sh").args(["-c", "echo start; sleep 30"]),
            StreamOpts {
                timeout: Some(Duration::from_millis(300)),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(slow.timed_out);
        assert!(slow.duration < Duration::from_secs(10));
        assert!(slow.output.contains("start"));
        assert!(!slow.marker_missed);

        // A stage marker that never comes ends the run early.
        let hung = run_streaming(
            Command::new("sh").args(["-c", "echo booting; sleep 30; echo BOOTED"]),
            StreamOpts {
                timeout: Some(Duration::from_secs(60)),
                marker: Some(("BOOTED", Duration::from_millis(300))),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(hung.timed_out && hung.marker_missed);
        assert!(hung.duration < Duration::from_secs(10));
        let fine = run_streaming(
            Command::new("sh").args(["-c", "echo BOOTED; sleep 1; echo done"]),
            StreamOpts {
                timeout: Some(Duration::from_secs(60)),
                marker: Some(("BOOTED", Duration::from_millis(500))),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(fine.success() && !fine.marker_missed);
        assert!(fine.output.contains("done"));
    }
}
