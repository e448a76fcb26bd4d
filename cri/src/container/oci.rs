//! The OCI runtime behind a narrow trait: create (through a monitor), start, kill, delete,
//! exec, update. [`Runc`] drives any binary with runc's command line (runc, crun, youki).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::monitor::{CreateReport, MonitorConfig};

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The runtime binary could not be run at all.
    #[error("cannot run OCI runtime {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime ran and failed.
    #[error("{0}")]
    Failed(String),
    /// An exec ran past its timeout and was killed.
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
}

/// A created container.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    /// Its init process.
    pub pid: u32,
    /// Its monitor.
    pub monitor_pid: u32,
}

/// The output of a finished exec.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
}

/// The operations the runtime service needs from an OCI runtime.
#[async_trait]
pub trait OciRuntime: Send + Sync {
    /// The runtime's name and version, for CRI Version.
    async fn version(&self) -> Result<String, OciError>;
    /// The monitor config for a container whose bundle and files live in `dir`.
    fn monitor_config(
        &self,
        id: &str,
        dir: &Path,
        log_path: Option<PathBuf>,
        memory_cgroup: Option<PathBuf>,
    ) -> MonitorConfig;
    /// Creates the container of the monitor config at `config_path` under a monitor.
    async fn create(&self, config_path: &Path) -> Result<Created, OciError>;
    /// Starts a created container.
    async fn start(&self, id: &str) -> Result<(), OciError>;
    /// Sends `signal` to the container's init (or all its processes).
    async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), OciError>;
    /// Deletes the container (forcefully); a missing one is fine.
    async fn delete(&self, id: &str) -> Result<(), OciError>;
    /// Runs `args` in the container and collects its output.
    async fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, OciError>;
    /// Updates the container's resources (`resources` is OCI LinuxResources JSON).
    async fn update(&self, id: &str, resources: &serde_json::Value) -> Result<(), OciError>;
    /// The command that runs `args` in the container with the caller's stdio, or on a
    /// terminal sent to `console_socket`; `None` when this runtime cannot stream exec.
    fn exec_command(
        &self,
        id: &str,
        args: &[String],
        console_socket: Option<&Path>,
    ) -> Option<Command> {
        let _ = (id, args, console_socket);
        None
    }
}

/// A runc-compatible runtime binary.
#[derive(Debug, Clone)]
pub struct Runc {
    /// The binary.
    pub binary: PathBuf,
    /// Its state root.
    pub root: PathBuf,
    /// This program, run as the monitor.
    pub monitor: PathBuf,
}

impl Runc {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Result<std::process::Output, OciError> {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| OciError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })
    }

    fn failure(&self, what: &str, out: &std::process::Output) -> OciError {
        OciError::Failed(format!(
            "{} {what}: {}: {}",
            self.binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn is_missing(out: &std::process::Output) -> bool {
    let err = String::from_utf8_lossy(&out.stderr);
    err.contains("does not exist") || err.contains("not found")
}

#[async_trait]
impl OciRuntime for Runc {
    fn monitor_config(
        &self,
        id: &str,
        dir: &Path,
        log_path: Option<PathBuf>,
        memory_cgroup: Option<PathBuf>,
    ) -> MonitorConfig {
        MonitorConfig {
            id: id.to_string(),
            bundle: dir.to_path_buf(),
            runtime: self.binary.clone(),
            runtime_root: self.root.clone(),
            log_path,
            exit_file: dir.join("exit.json"),
            pid_file: dir.join("init.pid"),
            memory_cgroup,
            control: dir.join("control"),
            monitor_log: dir.join("monitor.log"),
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }

    async fn version(&self) -> Result<String, OciError> {
        let out = self.run(&["--version"]).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().next().unwrap_or("unknown").trim().to_string())
    }

    async fn create(&self, config_path: &Path) -> Result<Created, OciError> {
        let out = Command::new(&self.monitor)
            .arg("monitor")
            .arg(config_path)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| OciError::Spawn {
                binary: self.monitor.display().to_string(),
                source,
            })?;
        let line = String::from_utf8_lossy(&out.stdout);
        let report: CreateReport = serde_json::from_str(line.trim()).map_err(|e| {
            OciError::Failed(format!(
                "monitor reported {line:?} ({e}); stderr: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
        match report {
            CreateReport {
                pid: Some(pid),
                monitor_pid: Some(monitor_pid),
                ..
            } => Ok(Created { pid, monitor_pid }),
            CreateReport { error, .. } => Err(OciError::Failed(
                error.unwrap_or_else(|| "monitor failed".into()),
            )),
        }
    }

    async fn start(&self, id: &str) -> Result<(), OciError> {
        let out = self.run(&["start", id]).await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failure("start", &out))
        }
    }

    async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), OciError> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal]);
        let out = self.run(&args).await?;
        if out.status.success()
            || is_missing(&out)
            || String::from_utf8_lossy(&out.stderr).contains("not running")
        {
            Ok(())
        } else {
            Err(self.failure("kill", &out))
        }
    }

    async fn delete(&self, id: &str) -> Result<(), OciError> {
        let out = self.run(&["delete", "--force", id]).await?;
        if out.status.success() || is_missing(&out) {
            Ok(())
        } else {
            Err(self.failure("delete", &out))
        }
    }

    async fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, OciError> {
        let pid_file = tempfile_path(id);
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|source| OciError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        })?;
        let waited = match timeout {
            Some(t) => tokio::time::timeout(t, child.wait_with_output()).await,
            None => Ok(child.wait_with_output().await),
        };
        let result = match waited {
            Ok(Ok(out)) => {
                let exit_code = out.status.code().unwrap_or(255);
                // runc reports its own failures to start the process with 255 and a message.
                if exit_code == 255 && String::from_utf8_lossy(&out.stderr).contains("exec failed")
                {
                    Err(self.failure("exec", &out))
                } else {
                    Ok(ExecOutput {
                        stdout: out.stdout,
                        stderr: out.stderr,
                        exit_code,
                    })
                }
            }
            Ok(Err(source)) => Err(OciError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            }),
            Err(_) => {
                // The process inside outlives its runc parent: kill it by pid.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Err(OciError::Timeout(timeout.unwrap_or_default()))
            }
        };
        let _ = std::fs::remove_file(&pid_file);
        result
    }

    fn exec_command(
        &self,
        id: &str,
        args: &[String],
        console_socket: Option<&Path>,
    ) -> Option<Command> {
        let mut cmd = match console_socket {
            // runc hands out the terminal only when it detaches, so a subreaper of ours
            // (`cri exec-tty`) runs it and waits for the command to learn its exit code.
            Some(socket) => {
                let mut cmd = Command::new(&self.monitor);
                cmd.arg("exec-tty")
                    .arg("--runtime")
                    .arg(&self.binary)
                    .arg("--root")
                    .arg(&self.root)
                    .arg("--console-socket")
                    .arg(socket)
                    .arg(id)
                    .arg("--")
                    .kill_on_drop(true);
                cmd
            }
            None => {
                let mut cmd = self.command();
                cmd.arg("exec").arg(id);
                cmd
            }
        };
        cmd.args(args);
        Some(cmd)
    }

    async fn update(&self, id: &str, resources: &serde_json::Value) -> Result<(), OciError> {
        let mut child = self
            .command()
            .args(["update", "--resources", "-", id])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| OciError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(resources.to_string().as_bytes()).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| OciError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failure("update", &out))
        }
    }
}

fn tempfile_path(id: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "cri-exec-{id}-{}.pid",
        uuid::Uuid::new_v4().simple()
    ))
}
