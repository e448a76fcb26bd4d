//! The per-container monitor (the role of conmon or containerd-shim), this binary in another
//! mode. `cri monitor <config>` starts a second stage and returns once the container is
//! created, so the daemon never waits for the container; the second stage detaches (new
//! session), becomes a child subreaper, runs `<runtime> create` with pipes as the container's
//! stdout and stderr, reports the container's pid, then copies both pipes into the CRI log,
//! reaps the container and writes its exit record atomically. Monitors outlive the daemon, so
//! a daemon restart loses no log line and no exit code. A control FIFO takes `reopen` to
//! reopen the log after rotation. The attach socket ([`super::attach`]) copies the output
//! to attached clients and takes their input: the monitor keeps the container's stdin pipe
//! when the container asked for stdin, and for tty containers it receives the terminal's
//! pty master from the runtime (`--console-socket`), writes the terminal's output to the
//! log as stdout, and applies resizes to it.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::attach::{self, Clients, InputSink, Tee};
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
    /// Keep the container's stdin open for attach (ContainerConfig.stdin).
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin when the first attach session's input ends (ContainerConfig.stdin_once).
    #[serde(default)]
    pub stdin_once: bool,
    /// Run the container on a terminal (ContainerConfig.tty).
    #[serde(default)]
    pub tty: bool,
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
    let (pid, stdio) = match created {
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
    let clients = Clients::default();
    let (sources, input): (Vec<OutputSource>, MonitorInput) = match stdio {
        ContainerStdio::Pipes {
            stdout,
            stderr,
            stdin,
        } => (
            vec![
                (Box::new(stdout), Stream::Stdout, attach::STDOUT),
                (Box::new(stderr), Stream::Stderr, attach::STDERR),
            ],
            MonitorInput {
                stdin: Mutex::new(stdin.map(|w| Box::new(w) as Box<dyn Write + Send>)),
                pty: None,
                stdin_once: config.stdin_once,
            },
        ),
        ContainerStdio::Tty(master) => {
            let reader = master.try_clone();
            let writer = master.try_clone();
            match (reader, writer) {
                (Ok(reader), Ok(writer)) => (
                    vec![(Box::new(reader), Stream::Stdout, attach::STDOUT)],
                    MonitorInput {
                        stdin: Mutex::new(
                            config
                                .stdin
                                .then(|| Box::new(writer) as Box<dyn Write + Send>),
                        ),
                        pty: Some(master),
                        stdin_once: false,
                    },
                ),
                _ => {
                    eprintln!("monitor {}: cannot share the terminal", config.id);
                    (Vec::new(), MonitorInput::default())
                }
            }
        }
    };
    // The attach socket exists before the daemon hears of the container, so an Attach right
    // after StartContainer finds it.
    if let Err(e) = attach::serve(&config.bundle, clients.clone(), Arc::new(input)) {
        eprintln!("monitor {}: no attach socket: {e}", config.id);
    }
    print_report(&CreateReport {
        pid: Some(pid),
        monitor_pid: Some(std::process::id()),
        error: None,
    });
    let (done_tx, done_rx) = mpsc::channel();
    let copiers = sources.len();
    for (reader, stream, kind) in sources {
        let log = Arc::clone(&log);
        let done = done_tx.clone();
        let reader = Tee {
            inner: reader,
            kind,
            clients: clients.clone(),
        };
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
    for _ in 0..copiers {
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

/// An output of the container: where it is read, its log stream, its attach kind.
type OutputSource = (Box<dyn Read + Send>, Stream, u8);

/// The container's stdio as the monitor holds it.
enum ContainerStdio {
    /// Pipes, and stdin's write end when the container keeps stdin open.
    Pipes {
        stdout: io::PipeReader,
        stderr: io::PipeReader,
        stdin: Option<io::PipeWriter>,
    },
    /// The terminal's pty master.
    Tty(fs::File),
}

/// Where attach clients' input goes.
#[derive(Default)]
struct MonitorInput {
    stdin: Mutex<Option<Box<dyn Write + Send>>>,
    pty: Option<fs::File>,
    stdin_once: bool,
}

impl InputSink for MonitorInput {
    fn write_input(&self, data: &[u8]) {
        if let Ok(mut guard) = self.stdin.lock()
            && let Some(stdin) = guard.as_mut()
            && stdin.write_all(data).and_then(|()| stdin.flush()).is_err()
        {
            *guard = None;
        }
    }

    fn close_input(&self) {
        if self.stdin_once
            && let Ok(mut guard) = self.stdin.lock()
        {
            *guard = None;
        }
    }

    fn resize(&self, width: u16, height: u16) {
        if let Some(pty) = &self.pty {
            let _ =
                crate::streaming::exec::resize(pty, crate::streaming::TermSize { width, height });
        }
    }
}

/// Waits for the runtime to send the pty master to the console socket.
fn receive_console(
    listener: std::os::unix::net::UnixListener,
) -> std::thread::JoinHandle<io::Result<fs::File>> {
    std::thread::spawn(move || {
        let (stream, _) = listener.accept()?;
        crate::streaming::exec::receive_fd(&stream).map(fs::File::from)
    })
}

fn create(config: &MonitorConfig) -> Result<(u32, ContainerStdio), String> {
    let (stdout_r, stdout_w) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (mut stderr_r, stderr_w) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let bundle = fs::File::open(&config.bundle)
        .map_err(|e| format!("open {}: {e}", config.bundle.display()))?;
    let mut console = None;
    let mut stdin_w = None;
    let status = {
        let mut cmd = Command::new(&config.runtime);
        cmd.arg("--root")
            .arg(&config.runtime_root)
            .arg("create")
            .arg("--bundle")
            .arg(&config.bundle)
            .arg("--pid-file")
            .arg(&config.pid_file);
        if config.tty {
            let path = attach::short_path(&bundle, "console");
            let _ = fs::remove_file(&path);
            let listener = std::os::unix::net::UnixListener::bind(&path)
                .map_err(|e| format!("console socket: {e}"))?;
            console = Some(receive_console(listener));
            cmd.arg("--console-socket").arg(&path);
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
        } else {
            if config.stdin {
                let (r, w) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
                stdin_w = Some(w);
                cmd.stdin(r);
            } else {
                cmd.stdin(Stdio::null());
            }
            cmd.stdout(stdout_w);
        }
        cmd.arg(&config.id).stderr(stderr_w);
        let status = cmd.status();
        drop(cmd);
        status
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
    let stdio = match console {
        Some(receiver) => {
            let master = receiver
                .join()
                .map_err(|_| "the console receiver panicked".to_string())?
                .map_err(|e| format!("receive the terminal: {e}"))?;
            let _ = fs::remove_file(config.bundle.join("console"));
            ContainerStdio::Tty(master)
        }
        None => ContainerStdio::Pipes {
            stdout: stdout_r,
            stderr: stderr_r,
            stdin: stdin_w,
        },
    };
    Ok((pid, stdio))
}

/// `cri exec-tty`: runs `<runtime> exec --detach --tty --console-socket` (the runtime sends
/// the terminal to the socket's owner, the daemon), adopts the detached command as a child
/// subreaper, and exits with the command's exit code (255 when the runtime failed).
pub fn run_tty_exec(
    runtime: &Path,
    root: &Path,
    console_socket: &Path,
    id: &str,
    args: &[String],
) -> ExitCode {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("exec-tty: cannot become a subreaper: {e}");
        return ExitCode::from(255);
    }
    let pid_file = std::env::temp_dir().join(format!(
        "cri-exec-{id}-{}.pid",
        uuid::Uuid::new_v4().simple()
    ));
    let status = Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(["exec", "--detach", "--tty", "--console-socket"])
        .arg(console_socket)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(id)
        .args(args)
        .stdin(Stdio::null())
        .status();
    let pid = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let _ = fs::remove_file(&pid_file);
    match (status, pid) {
        (Ok(status), Some(pid)) if status.success() => {
            ExitCode::from(u8::try_from(reap(pid)).unwrap_or(255))
        }
        (Ok(status), _) => {
            eprintln!("exec-tty: {} exec: {status}", runtime.display());
            ExitCode::from(255)
        }
        (Err(e), _) => {
            eprintln!("exec-tty: cannot run {}: {e}", runtime.display());
            ExitCode::from(255)
        }
    }
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
