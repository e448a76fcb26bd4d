//! The CRI log format kubelet reads: one entry per line,
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <content>\n`, where `P` marks a partial line
//! (a line longer than the buffer, split in pieces) and `F` the piece that ends it.

use std::io::{self, BufRead, Write};

/// The most bytes of one line written in one entry; longer lines are split into partials.
pub const MAX_ENTRY: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// The tag in the log.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Formats one log entry; `content` excludes the newline.
pub fn entry(timestamp: jiff::Timestamp, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {} {} ",
        timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        stream.tag(),
        if partial { 'P' } else { 'F' }
    )
    .into_bytes();
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

/// Copies `input` into CRI entries passed to `sink` until end of input: each full line as one
/// `F` entry, lines longer than [`MAX_ENTRY`] as `P` entries followed by an `F` entry, and a
/// trailing unterminated piece at the end as a `P` entry (as containerd writes it).
pub fn copy_lines(
    mut input: impl BufRead,
    stream: Stream,
    mut sink: impl FnMut(Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = io::Read::take(&mut input, MAX_ENTRY as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        sink(entry(jiff::Timestamp::now(), stream, !complete, &line))?;
    }
}

/// Writes entries to a file that can be replaced (ReopenContainerLog) while being written.
#[derive(Debug)]
pub struct LogFile {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl LogFile {
    /// Opens (appending, creating) the log at `path`.
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Writes one entry.
    pub fn write_entry(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Opens the path again (after a rotation moved the old file away).
    pub fn reopen(&mut self) -> io::Result<()> {
        *self = LogFile::open(&self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        copy_lines(input, Stream::Stderr, |e| {
            out.push(String::from_utf8(e).unwrap());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn full_and_partial_lines() {
        let out = collect(b"hello\nworld");
        assert_eq!(out.len(), 2);
        assert!(out[0].ends_with(" stderr F hello\n"), "{}", out[0]);
        assert!(out[1].ends_with(" stderr P world\n"), "{}", out[1]);
        let ts = out[0].split(' ').next().unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
    }

    #[test]
    fn long_lines_are_split() {
        let mut long = vec![b'x'; MAX_ENTRY + 10];
        long.push(b'\n');
        let out = collect(&long);
        assert_eq!(out.len(), 2);
        assert!(out[0].contains(" P "));
        assert!(out[1].ends_with(&format!(" F {}\n", "x".repeat(10))));
    }

    #[test]
    fn empty_lines_are_kept() {
        let out = collect(b"\n\n");
        assert_eq!(out.len(), 2);
        assert!(out[1].ends_with(" stderr F \n"));
    }
}
