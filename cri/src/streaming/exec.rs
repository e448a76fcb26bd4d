//! Exec sessions: `<runtime> exec` in the container, with pipes for stdin, stdout and
//! stderr, or, for a terminal, `--tty --console-socket`: the runtime sends the pty master
//! over a unix socket (SCM_RIGHTS), which then carries input and output, and resizes are
//! applied to it with TIOCSWINSZ. The command's exit code is the session's outcome.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use k8s_cri::v1 as cri;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{SessionIo, StreamingError, TermSize, io_error};
use crate::container::oci::OciRuntime;

/// How long output may still drain after the command exited (background processes can keep
/// the pipes open forever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Runs `request`'s command in container `id` (already checked to run) through `oci`.
pub async fn exec(
    oci: &Arc<dyn OciRuntime>,
    id: &str,
    request: &cri::ExecRequest,
    io: SessionIo,
) -> Result<i32, StreamingError> {
    if request.cmd.is_empty() {
        return Err(StreamingError::Invalid("exec needs a command".into()));
    }
    if request.tty {
        exec_tty(oci, id, &request.cmd, io).await
    } else {
        exec_pipes(oci, id, &request.cmd, io).await
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

fn pipe_if(wanted: bool) -> Stdio {
    if wanted {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

/// Copies a reader into an output channel until end of file or until nobody listens.
fn pump_output<R>(
    reader: Option<R>,
    sink: Option<mpsc::Sender<Bytes>>,
) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let (Some(mut reader), Some(sink)) = (reader, sink) else {
            return;
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sink.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

async fn exec_pipes(
    oci: &Arc<dyn OciRuntime>,
    id: &str,
    cmd: &[String],
    io: SessionIo,
) -> Result<i32, StreamingError> {
    let mut command = oci
        .exec_command(id, cmd, None)
        .ok_or_else(|| StreamingError::Invalid("this OCI runtime cannot stream exec".into()))?;
    command
        .stdin(pipe_if(io.stdin.is_some()))
        .stdout(pipe_if(io.stdout.is_some()))
        .stderr(pipe_if(io.stderr.is_some()));
    let mut child = command
        .spawn()
        .map_err(io_error(format!("run exec in container {id}")))?;
    let stdin_task = match (io.stdin, child.stdin.take()) {
        (Some(mut input), Some(mut pipe)) => Some(tokio::spawn(async move {
            while let Some(data) = input.recv().await {
                if pipe.write_all(&data).await.is_err() {
                    return;
                }
            }
            // Dropping the pipe is the command's end of input.
        })),
        _ => None,
    };
    let stdout = pump_output(child.stdout.take(), io.stdout);
    let stderr = pump_output(child.stderr.take(), io.stderr);
    let status = child
        .wait()
        .await
        .map_err(io_error(format!("wait for exec in container {id}")))?;
    let _ = tokio::time::timeout(OUTPUT_DRAIN, async {
        let _ = stdout.await;
        let _ = stderr.await;
    })
    .await;
    if let Some(task) = stdin_task {
        task.abort();
    }
    Ok(exit_code(status))
}

/// A unix socket path short enough for `sun_path`, unique to this exec.
fn console_socket_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "cri-console-{}.sock",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Receives one file descriptor sent with SCM_RIGHTS on `stream`.
pub fn receive_fd(stream: &std::os::unix::net::UnixStream) -> std::io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(std::io::Error::other("no file descriptor was sent"))
}

/// Sets the terminal size of the pty behind `fd`.
pub fn resize(fd: &std::fs::File, size: TermSize) -> std::io::Result<()> {
    rustix::termios::tcsetwinsize(
        fd,
        rustix::termios::Winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .map_err(std::io::Error::from)
}

/// Accepts the runtime's connection on `listener` and takes the pty master from it.
async fn accept_console(
    listener: &tokio::net::UnixListener,
    path: &Path,
) -> Result<std::fs::File, StreamingError> {
    let (stream, _) = listener.accept().await.map_err(io_error(format!(
        "accept on the console socket {}",
        path.display()
    )))?;
    let stream = stream
        .into_std()
        .map_err(io_error("take the console connection"))?;
    stream
        .set_nonblocking(false)
        .map_err(io_error("take the console connection"))?;
    let fd = tokio::task::spawn_blocking(move || receive_fd(&stream))
        .await
        .map_err(|e| StreamingError::Invalid(format!("console receiver: {e}")))?
        .map_err(io_error("receive the pty master"))?;
    Ok(std::fs::File::from(fd))
}

/// A pty master connected to a session: output and input as tasks on the non-blocking
/// master, resizes applied as they come. Dropping it stops everything, so a terminal whose
/// slave never closes cannot hold the session.
pub struct PtySession {
    output: tokio::task::JoinHandle<()>,
    others: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PtySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PtySession")
    }
}

impl PtySession {
    /// Connects `pty` (a master) to the session's streams.
    pub fn start(
        pty: std::fs::File,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: Option<mpsc::Sender<Bytes>>,
        resizes: Option<mpsc::Receiver<TermSize>>,
    ) -> Result<PtySession, StreamingError> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        use tokio::net::unix::pipe;
        let flags = fcntl(&pty, FcntlArg::F_GETFL).map_err(|e| StreamingError::Io {
            what: "read the pty's flags".into(),
            source: e.into(),
        })?;
        fcntl(
            &pty,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(|e| StreamingError::Io {
            what: "make the pty non-blocking".into(),
            source: e.into(),
        })?;
        // tokio's pipe ends drive any non-blocking descriptor that epoll can watch.
        let clone = || pty.try_clone().map_err(io_error("clone the pty"));
        let mut reader =
            pipe::Receiver::from_file_unchecked(clone()?).map_err(io_error("watch the pty"))?;
        let output = tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                // EIO once the last slave is closed: the terminal's end of file.
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if let Some(out) = &stdout
                            && out.send(Bytes::copy_from_slice(&buf[..n])).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut others = Vec::new();
        if let Some(mut input) = stdin {
            let mut writer =
                pipe::Sender::from_file_unchecked(clone()?).map_err(io_error("watch the pty"))?;
            others.push(tokio::spawn(async move {
                while let Some(data) = input.recv().await {
                    if writer.write_all(&data).await.is_err() {
                        return;
                    }
                }
            }));
        }
        if let Some(mut resizes) = resizes {
            others.push(tokio::spawn(async move {
                while let Some(size) = resizes.recv().await {
                    if let Err(e) = resize(&pty, size) {
                        tracing::debug!(error = %e, "terminal resize failed");
                    }
                }
            }));
        }
        Ok(PtySession { output, others })
    }

    /// Waits up to `limit` for the terminal's output to end.
    pub async fn drain(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, &mut self.output).await;
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        self.output.abort();
        for task in &self.others {
            task.abort();
        }
    }
}

async fn exec_tty(
    oci: &Arc<dyn OciRuntime>,
    id: &str,
    cmd: &[String],
    io: SessionIo,
) -> Result<i32, StreamingError> {
    let path = console_socket_path();
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(io_error(format!("listen on {}", path.display())))?;
    let command = oci.exec_command(id, cmd, Some(&path));
    let Some(mut command) = command else {
        let _ = std::fs::remove_file(&path);
        return Err(StreamingError::Invalid(
            "this OCI runtime cannot stream exec".into(),
        ));
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(io_error(format!("run exec in container {id}"))(e));
        }
    };
    let mut runtime_stderr = child.stderr.take();
    let console = tokio::select! {
        console = accept_console(&listener, &path) => console,
        status = child.wait() => {
            let mut text = String::new();
            if let Some(err) = runtime_stderr.as_mut() {
                let _ = err.read_to_string(&mut text).await;
            }
            Err(StreamingError::Invalid(format!(
                "exec in container {id} ended before it had a terminal ({}): {}",
                status.map(|s| s.to_string()).unwrap_or_default(),
                text.trim()
            )))
        }
    };
    let _ = std::fs::remove_file(&path);
    drop(listener);
    let pty = console?;
    let mut session = PtySession::start(pty, io.stdin, io.stdout, io.resize)?;
    let status = child
        .wait()
        .await
        .map_err(io_error(format!("wait for exec in container {id}")))?;
    session.drain(OUTPUT_DRAIN).await;
    drop(session);
    // The helper exits 255 with the runtime's message when the command could not start.
    let mut text = String::new();
    if let Some(err) = runtime_stderr.as_mut() {
        let _ = tokio::time::timeout(OUTPUT_DRAIN, err.read_to_string(&mut text)).await;
    }
    if exit_code(status) == 255 && !text.trim().is_empty() {
        return Err(StreamingError::Invalid(format!(
            "exec in container {id} failed: {}",
            text.trim()
        )));
    }
    Ok(exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_crosses_a_socket_pair() {
        use std::io::{Read, Write};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        {
            use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
            use std::os::fd::AsFd;
            let fds = [file.as_fd()];
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
            sendmsg(
                &a,
                &[std::io::IoSlice::new(b"x")],
                &mut control,
                SendFlags::empty(),
            )
            .unwrap();
        }
        let received = receive_fd(&b).unwrap();
        let mut received = std::fs::File::from(received);
        received.write_all(b"through the socket").unwrap();
        drop(received);
        let mut text = String::new();
        use std::io::Seek;
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the socket");
    }

    #[tokio::test]
    async fn a_pty_session_relays_both_ways_and_stops_when_dropped() {
        use std::io::{Read, Write};
        let Ok(pty) = nix::pty::openpty(None, None) else {
            eprintln!("skipped: no pty");
            return;
        };
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        let (stdout_tx, mut stdout_rx) = mpsc::channel(4);
        let (resize_tx, resize_rx) = mpsc::channel(4);
        let mut slave = std::fs::File::from(pty.slave);
        // Raw mode, so bytes pass unchanged and are not echoed.
        let mut termios = nix::sys::termios::tcgetattr(&slave).unwrap();
        nix::sys::termios::cfmakeraw(&mut termios);
        nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &termios).unwrap();
        let session = PtySession::start(
            std::fs::File::from(pty.master),
            Some(stdin_rx),
            Some(stdout_tx),
            Some(resize_rx),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            slave.write_all(b"from the program").unwrap();
            assert_eq!(&stdout_rx.recv().await.unwrap()[..], b"from the program");
            stdin_tx.send(Bytes::from_static(b"typed")).await.unwrap();
            let mut buf = [0u8; 5];
            let mut reader = slave.try_clone().unwrap();
            tokio::task::spawn_blocking(move || reader.read_exact(&mut buf).map(|()| buf))
                .await
                .unwrap()
                .map(|buf| assert_eq!(&buf, b"typed"))
                .unwrap();
            resize_tx
                .send(TermSize {
                    width: 120,
                    height: 50,
                })
                .await
                .unwrap();
            loop {
                let size = rustix::termios::tcgetwinsize(&slave).unwrap();
                if (size.ws_col, size.ws_row) == (120, 50) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        // The slave is still open: dropping the session ends its output anyway.
        drop(session);
        assert!(stdout_rx.recv().await.is_none());
    }

    #[test]
    fn a_pty_takes_a_size() {
        let Ok(pty) = nix::pty::openpty(None, None) else {
            eprintln!("skipped: no pty");
            return;
        };
        let master = std::fs::File::from(pty.master);
        resize(
            &master,
            TermSize {
                width: 100,
                height: 40,
            },
        )
        .unwrap();
        let size = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (100, 40));
    }
}
