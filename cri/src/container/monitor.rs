//! The per-container monitor (the role of conmon or containerd-shim), this binary in another
//! mode. `cri monitor <config>` starts a second stage and returns once the container is
//! created, so the daemon never waits for the container; the second stage detaches (new
//! session), becomes a child subreaper, runs `<runtime> create` with pipes as the container's
//! stdout and stderr, reports the container's pid, then copies both pipes into the CRI log,
//! reaps the container and writes its exit record atomically. Monitors outlive the daemon, so
//! a daemon restart loses no log line and no exit code. A control FIFO takes `reopen` to
//! reopen the log after rotation.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::log::{LogFile, Stream, copy_lines};

/// What a monitor needs, written by the daemon next to the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// Container id.
    pub id: String,
    /// The OCI bundle directory.
    pub bundle: PathBuf,
    /// The OCI runtime binary.
    pub runtime: PathBuf,
    /// The runtime's state root (`--root`).
    pub runtime_root: PathBuf,
    /// The CRI log path, if any.
    pub log_path: Option<PathBuf>,
    /// Where the exit record goes.
    pub exit_file: PathBuf,
    /// Where the runtime writes the container pid.
    pub pid_file: PathBuf,
    /// The container's memory cgroup directory (cgroup v1), for OOM kills.
    pub memory_cgroup: Option<PathBuf>,
    /// The control FIFO.
    pub control: PathBuf,
    /// The monitor's own diagnostics.
    pub monitor_log: PathBuf,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code; 128 + signal when killed by a signal.
    pub exit_code: i32,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// What the first stage prints: the container and monitor pids, or why creation failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateReport {
    /// Container init pid.
    pub pid: Option<u32>,
    /// The long-lived monitor's pid.
    pub monitor_pid: Option<u32>,
    /// The runtime's error.
    pub error: Option<String>,
}

fn load(config: &Path) -> io::Result<MonitorConfig> {
    crate::persist::read_json(config)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is missing", config.display()),
        )
    })
}

fn print_report(report: &CreateReport) {
    let line = serde_json::to_string(report).unwrap_or_else(|_| "{}".into());
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// First stage: start the detached second stage and relay its report.
pub fn run_first_stage(config_path: &Path) -> ExitCode {
    let result = (|| -> io::Result<String> {
        let config = load(config_path)?;
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.monitor_log)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("monitor-stage2")
            .arg(config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        if line.trim().is_empty() {
            let status = child.wait()?;
            return Err(io::Error::other(format!(
                "monitor exited ({status}) without a report"
            )));
        }
        Ok(line)
    })();
    match result {
        Ok(line) => {
            print!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_report(&CreateReport {
                pid: None,
                monitor_pid: None,
                error: Some(e.to_string()),
            });
            ExitCode::from(1)
        }
    }
}

fn oom_kills(memory_cgroup: Option<&Path>) -> u64 {
    memory_cgroup
        .and_then(|dir| fs::read_to_string(dir.join("memory.oom_control")).ok())
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Second stage: create, report, copy logs, reap, record the exit.
pub fn run_second_stage(config_path: &Path) -> ExitCode {
    let config = match load(config_path) {
        Ok(c) => c,
        Err(e) => {
            print_report(&CreateReport {
                pid: None,
                monitor_pid: None,
                error: Some(e.to_string()),
            });
            return ExitCode::from(1);
        }
    };
    let _ = nix::unistd::setsid();
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("monitor {}: cannot become a subreaper: {e}", config.id);
    }
    let log = match config.log_path.as_deref().map(LogFile::open).transpose() {
        Ok(l) => Arc::new(Mutex::new(l)),
        Err(e) => {
            let error = format!(
                "open log {}: {e}",
                config
                    .log_path
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            );
            print_report(&CreateReport {
                pid: None,
                monitor_pid: None,
                error: Some(error),
            });
            return ExitCode::from(1);
        }
    };
    let created = create(&config);
    let (pid, stdout_r, stderr_r) = match created {
        Ok(v) => v,
        Err(e) => {
            print_report(&CreateReport {
                pid: None,
                monitor_pid: None,
                error: Some(e),
            });
            return ExitCode::from(1);
        }
    };
    print_report(&CreateReport {
        pid: Some(pid),
        monitor_pid: Some(std::process::id()),
        error: None,
    });

    let (done_tx, done_rx) = mpsc::channel();
    for (reader, stream) in [(stdout_r, Stream::Stdout), (stderr_r, Stream::Stderr)] {
        let log = Arc::clone(&log);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let _ = copy_lines(
                BufReader::with_capacity(64 * 1024, reader),
                stream,
                |entry| {
                    if let Ok(mut guard) = log.lock()
                        && let Some(file) = guard.as_mut()
                    {
                        // A full disk loses lines, never the container.
                        let _ = file.write_entry(&entry);
                    }
                    Ok(())
                },
            );
            let _ = done.send(());
        });
    }
    drop(done_tx);
    spawn_control(&config.control, Arc::clone(&log));

    let oom_before = oom_kills(config.memory_cgroup.as_deref());
    let exit_code = reap(pid);
    // Let the copiers drain what the container wrote before it ended.
    for _ in 0..2 {
        if done_rx.recv_timeout(Duration::from_secs(2)).is_err() {
            break;
        }
    }
    let oom_killed = oom_kills(config.memory_cgroup.as_deref()) > oom_before;
    let record = ExitRecord {
        exit_code,
        finished_at: jiff::Timestamp::now().as_nanosecond() as i64,
        oom_killed,
    };
    if let Err(e) = crate::persist::write_json(&config.exit_file, &record) {
        eprintln!("monitor {}: cannot write exit record: {e}", config.id);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

type Pipes = (u32, io::PipeReader, io::PipeReader);

fn create(config: &MonitorConfig) -> Result<Pipes, String> {
    let (stdout_r, stdout_w) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (mut stderr_r, stderr_w) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let status = {
        let mut cmd = Command::new(&config.runtime);
        cmd.arg("--root")
            .arg(&config.runtime_root)
            .arg("create")
            .arg("--bundle")
            .arg(&config.bundle)
            .arg("--pid-file")
            .arg(&config.pid_file)
            .arg(&config.id)
            .stdin(Stdio::null())
            .stdout(stdout_w)
            .stderr(stderr_w);
        cmd.status()
    };
    let status =
        status.map_err(|e| format!("cannot run OCI runtime {}: {e}", config.runtime.display()))?;
    if !status.success() {
        let mut text = String::new();
        let _ = stderr_r.read_to_string(&mut text);
        return Err(format!(
            "{} create: {status}: {}",
            config.runtime.display(),
            text.trim()
        ));
    }
    let pid = fs::read_to_string(&config.pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            format!(
                "{} create left no pid in {}",
                config.runtime.display(),
                config.pid_file.display()
            )
        })?;
    Ok((pid, stdout_r, stderr_r))
}

/// Waits for `pid` (reaping any other orphan on the way); returns its exit code.
fn reap(pid: u32) -> i32 {
    let target = Pid::from_raw(pid as i32);
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(p, code)) if p == target => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == target => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // Not our child (the runtime did not hand it over): poll until it is gone.
                while nix::sys::signal::kill(target, None).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return 255;
            }
        }
    }
}

fn spawn_control(path: &Path, log: Arc<Mutex<Option<LogFile>>>) {
    let _ = fs::remove_file(path);
    if nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).is_err() {
        return;
    }
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        loop {
            let Ok(fifo) = fs::File::open(&path) else {
                return;
            };
            for line in BufReader::new(fifo).lines().map_while(Result::ok) {
                if line.trim() == "reopen"
                    && let Ok(mut guard) = log.lock()
                    && let Some(file) = guard.as_mut()
                {
                    let _ = file.reopen();
                }
            }
        }
    });
}

/// Asks the monitor behind `control` to reopen its log. Fails when no monitor listens.
pub fn request_reopen(control: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut fifo = fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(control)?;
    fifo.write_all(b"reopen\n")
}
