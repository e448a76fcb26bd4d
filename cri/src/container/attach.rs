//! A container's attach socket, served by its monitor: clients (the daemon's attach
//! sessions) receive the container's output as it is written and send input and terminal
//! resizes. Messages both ways are `[kind: u8][length: u32 big-endian][payload]`.
//!
//! Socket paths under the state directory can exceed `sun_path`'s 107 bytes, so both ends
//! reach the socket through `/proc/<pid>/fd/<directory fd>/attach`, as conmon does.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The socket's file name in the container's state directory.
pub const SOCKET_NAME: &str = "attach";

/// Output on standard output (or the terminal).
pub const STDOUT: u8 = 1;
/// Output on standard error.
pub const STDERR: u8 = 2;
/// Input for standard input (or the terminal).
pub const STDIN: u8 = 0;
/// A terminal resize: width and height as big-endian u16s.
pub const RESIZE: u8 = 4;
/// The client's input ended.
pub const STDIN_CLOSE: u8 = 5;

/// The largest payload accepted.
const MAX_MESSAGE: usize = 1 << 20;

/// Encodes one message.
pub fn message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one message; `None` at end of stream.
pub fn read_message(input: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match input.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("attach message of {len} bytes"),
        ));
    }
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

/// A path to `name` in the directory `dir` that fits in `sun_path`, for this process and
/// its children (it names this process by pid); valid while `dir` is open.
pub fn short_path(dir: &File, name: &str) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}/{name}",
        std::process::id(),
        dir.as_raw_fd()
    ))
}

/// Where input from attach clients goes.
pub trait InputSink: Send + Sync {
    /// Writes input.
    fn write_input(&self, data: &[u8]);
    /// A client's input ended.
    fn close_input(&self);
    /// The terminal changed size.
    fn resize(&self, width: u16, height: u16);
}

/// The attached clients; output is copied to each, and a client that cannot keep up (5 s)
/// is dropped rather than stalling the container.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    streams: Arc<Mutex<Vec<UnixStream>>>,
}

impl Clients {
    /// Sends output of `kind` to every client.
    pub fn broadcast(&self, kind: u8, data: &[u8]) {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if streams.is_empty() {
            return;
        }
        let bytes = message(kind, data);
        streams.retain_mut(|s| s.write_all(&bytes).is_ok());
    }

    fn add(&self, stream: UnixStream) {
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(stream);
    }
}

/// A reader that copies what it reads to the attached clients as `kind`.
#[derive(Debug)]
pub struct Tee<R> {
    /// The source.
    pub inner: R,
    /// The output kind.
    pub kind: u8,
    /// Who gets a copy.
    pub clients: Clients,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.clients.broadcast(self.kind, &buf[..n]);
        }
        Ok(n)
    }
}

/// Listens on `dir/attach` and serves clients on threads until the process ends.
pub fn serve(dir: &Path, clients: Clients, input: Arc<dyn InputSink>) -> io::Result<()> {
    let dir_file = File::open(dir)?;
    let path = short_path(&dir_file, SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::thread::spawn(move || {
        let _keep = dir_file;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Ok(writer) = stream.try_clone() else {
                continue;
            };
            let _ = writer.set_write_timeout(Some(Duration::from_secs(5)));
            clients.add(writer);
            let input = input.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                while let Ok(Some((kind, payload))) = read_message(&mut stream) {
                    match kind {
                        STDIN => input.write_input(&payload),
                        STDIN_CLOSE => input.close_input(),
                        RESIZE if payload.len() == 4 => input.resize(
                            u16::from_be_bytes([payload[0], payload[1]]),
                            u16::from_be_bytes([payload[2], payload[3]]),
                        ),
                        _ => {}
                    }
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut wire = message(STDOUT, b"hello");
        wire.extend(message(RESIZE, &[0, 80, 0, 24]));
        let mut input = &wire[..];
        assert_eq!(
            read_message(&mut input).unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        assert_eq!(
            read_message(&mut input).unwrap(),
            Some((RESIZE, vec![0, 80, 0, 24]))
        );
        assert_eq!(read_message(&mut input).unwrap(), None);
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl InputSink for Recorder {
        fn write_input(&self, data: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push(format!("in {}", String::from_utf8_lossy(data)));
        }
        fn close_input(&self) {
            self.0.lock().unwrap().push("close".into());
        }
        fn resize(&self, width: u16, height: u16) {
            self.0
                .lock()
                .unwrap()
                .push(format!("resize {width}x{height}"));
        }
    }

    #[test]
    fn clients_get_output_and_send_input_through_a_long_directory_path() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("d".repeat(120));
        std::fs::create_dir_all(&dir).unwrap();
        let clients = Clients::default();
        let recorder = Arc::new(Recorder::default());
        serve(&dir, clients.clone(), recorder.clone()).unwrap();
        let dir_file = File::open(&dir).unwrap();
        let mut client = UnixStream::connect(short_path(&dir_file, SOCKET_NAME)).unwrap();
        client.write_all(&message(STDIN, b"typed")).unwrap();
        client
            .write_all(&message(RESIZE, &[0, 100, 0, 30]))
            .unwrap();
        client.write_all(&message(STDIN_CLOSE, b"")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while recorder.0.lock().unwrap().len() < 3 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            *recorder.0.lock().unwrap(),
            vec!["in typed", "resize 100x30", "close"]
        );
        let mut tee = Tee {
            inner: &b"out"[..],
            kind: STDERR,
            clients,
        };
        let mut sink = Vec::new();
        tee.read_to_end(&mut sink).unwrap();
        assert_eq!(
            read_message(&mut client).unwrap(),
            Some((STDERR, b"out".to_vec()))
        );
    }
}
