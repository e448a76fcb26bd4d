//! Container logs as the CRI runtime writes them, read for `/containerLogs`.
//!
//! Each restart of a container writes `<pod-log-dir>/<ns>_<pod>_<uid>/<container>/<n>.log`,
//! one record a line: `<RFC 3339 nano time> stdout|stderr F|P <message>`, where `P` marks a
//! piece of a longer line that the next records of the same stream continue and `F` ends it.
//! A rotated file keeps its name with a suffix (`0.log.20240101-000000`); compressed ones
//! (`.gz`) are skipped.
//!
//! The pure part: [`parse_record`], [`Assembler`] (joins pieces into lines), [`LogOptions`]
//! (the query), [`Output`] (sinceTime, timestamps, limitBytes) and [`select`] (adds
//! tailLines). The I/O part: [`restart_files`], [`read_lines`] and [`follow`], which streams
//! what is appended (surviving a rotation) until the container stops.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

/// Why logs could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A query parameter is malformed.
    #[error("invalid {param} {value:?}: {why}")]
    Query {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// Reading a log file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the runtime received it.
    pub time: Timestamp,
    /// Its stream.
    pub stream: Stream,
    /// A piece of a longer line (`P`).
    pub partial: bool,
    /// The message, without the newline.
    pub message: &'a [u8],
}

/// A record that does not follow the CRI format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a CRI log record: {0}")]
pub struct ParseError(&'static str);

/// Parses one line of a CRI log file (without its `\n`).
pub fn parse_record(line: &[u8]) -> Result<Record<'_>, ParseError> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = fields.next().ok_or(ParseError("empty"))?;
    let stream = fields.next().ok_or(ParseError("no stream"))?;
    let tag = fields.next().ok_or(ParseError("no tag"))?;
    let message = fields.next().unwrap_or_default();
    let time: Timestamp = std::str::from_utf8(time)
        .map_err(|_| ParseError("time is not text"))?
        .parse()
        .map_err(|_| ParseError("bad time"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return Err(ParseError("unknown stream")),
    };
    // The tag may carry more flags after ':' in later CRI versions; the first is P or F.
    let partial = match tag.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(ParseError("unknown tag")),
    };
    Ok(Record {
        time,
        stream,
        partial,
        message,
    })
}

/// A whole line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The time of its first piece.
    pub time: Timestamp,
    /// Its stream.
    pub stream: Stream,
    /// The text, ending in `\n`.
    pub text: Vec<u8>,
}

/// Joins `P` pieces with the record that ends them, per stream.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: [Option<(Timestamp, Vec<u8>)>; 2],
}

impl Assembler {
    /// Feeds one raw line of a file; a whole line comes out when one is complete. Lines that
    /// are not CRI records are skipped.
    pub fn push(&mut self, raw: &[u8]) -> Option<Line> {
        let record = parse_record(raw).ok()?;
        let slot = &mut self.pending[record.stream as usize];
        let (time, mut text) = slot
            .take()
            .unwrap_or_else(|| (record.time, Vec::with_capacity(record.message.len() + 1)));
        text.extend_from_slice(record.message);
        if record.partial {
            *slot = Some((time, text));
            return None;
        }
        text.push(b'\n');
        Some(Line {
            time,
            stream: record.stream,
            text,
        })
    }
}

/// The query of `/containerLogs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container stops.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines from this time on (sinceTime, or now minus sinceSeconds).
    pub since: Option<Timestamp>,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// The previous instance of the container.
    pub previous: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

fn flag(value: &str) -> bool {
    matches!(value, "true" | "1" | "True" | "TRUE")
}

impl LogOptions {
    /// Parses the query; `now` anchors sinceSeconds.
    pub fn from_query(query: &[(String, String)], now: Timestamp) -> Result<Self, LogError> {
        let mut options = LogOptions::default();
        let invalid = |param: &'static str, value: &str, why: &str| LogError::Query {
            param,
            value: value.to_string(),
            why: why.to_string(),
        };
        for (key, value) in query {
            match key.as_str() {
                "follow" => options.follow = flag(value),
                "timestamps" => options.timestamps = flag(value),
                "previous" => options.previous = flag(value),
                "tailLines" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| invalid("tailLines", value, "not an integer"))?;
                    // A negative count means all lines.
                    options.tail_lines = usize::try_from(n).ok();
                }
                "limitBytes" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| invalid("limitBytes", value, "not a positive integer"))?;
                    if n == 0 {
                        return Err(invalid("limitBytes", value, "must be greater than 0"));
                    }
                    options.limit_bytes = Some(n);
                }
                "sinceSeconds" => {
                    let n: i64 = value
                        .parse()
                        .map_err(|_| invalid("sinceSeconds", value, "not an integer"))?;
                    if n <= 0 {
                        return Err(invalid("sinceSeconds", value, "must be greater than 0"));
                    }
                    let since = now
                        .checked_sub(jiff::SignedDuration::from_secs(n))
                        .unwrap_or(Timestamp::MIN);
                    options.since = Some(since);
                }
                "sinceTime" => {
                    let t: Timestamp = value
                        .parse()
                        .map_err(|_| invalid("sinceTime", value, "not an RFC 3339 time"))?;
                    options.since = Some(t);
                }
                _ => {}
            }
        }
        Ok(options)
    }
}

/// Turns lines into response bytes: the since filter, timestamps, and the byte limit.
#[derive(Debug)]
pub struct Output {
    since: Option<Timestamp>,
    timestamps: bool,
    remaining: Option<u64>,
}

impl Output {
    /// An output for `options`.
    pub fn new(options: &LogOptions) -> Self {
        Output {
            since: options.since,
            timestamps: options.timestamps,
            remaining: options.limit_bytes,
        }
    }

    /// Whether the byte limit is used up.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Whether `line` passes the since filter.
    pub fn wanted(&self, line: &Line) -> bool {
        self.since.is_none_or(|since| line.time >= since)
    }

    /// Appends `line` to `out` as the client sees it, cut at the byte limit.
    pub fn write(&mut self, line: &Line, out: &mut Vec<u8>) {
        if !self.wanted(line) || self.done() {
            return;
        }
        let start = out.len();
        if self.timestamps {
            out.extend_from_slice(format!("{} ", rfc3339_nano(line.time)).as_bytes());
        }
        out.extend_from_slice(&line.text);
        if let Some(remaining) = &mut self.remaining {
            let written = (out.len() - start) as u64;
            if written > *remaining {
                out.truncate(start + *remaining as usize);
                *remaining = 0;
            } else {
                *remaining -= written;
            }
        }
    }
}

/// RFC 3339 with the fraction of a second trimmed of trailing zeros, as Go's `RFC3339Nano`.
pub fn rfc3339_nano(t: Timestamp) -> String {
    let whole = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.subsec_nanosecond();
    if nanos == 0 {
        return format!("{whole}Z");
    }
    let fraction = format!("{nanos:09}");
    format!("{whole}.{}Z", fraction.trim_end_matches('0'))
}

/// The response bytes for complete `lines`: since, then tailLines, then timestamps and
/// limitBytes.
pub fn select(lines: Vec<Line>, options: &LogOptions, output: &mut Output) -> Vec<u8> {
    let mut kept: VecDeque<Line> = VecDeque::new();
    for line in lines {
        if !output.wanted(&line) {
            continue;
        }
        kept.push_back(line);
        if options.tail_lines.is_some_and(|n| kept.len() > n) {
            kept.pop_front();
        }
    }
    let mut out = Vec::new();
    for line in &kept {
        output.write(line, &mut out);
    }
    out
}

/// The files of restart `n` in a container's log directory, oldest first: rotated files
/// (`<n>.log.<suffix>`, compressed ones skipped) in name order, then `<n>.log`.
pub fn restart_files(dir: &Path, n: u32) -> Result<Vec<PathBuf>, LogError> {
    let current = format!("{n}.log");
    let rotated_prefix = format!("{n}.log.");
    let entries = std::fs::read_dir(dir).map_err(|source| LogError::Io {
        path: dir.into(),
        source,
    })?;
    let mut rotated: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(&rotated_prefix) && !name.ends_with(".gz"))
        .filter(|name| !name.ends_with(".tmp"))
        .collect();
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|n| dir.join(n)).collect();
    files.push(dir.join(current));
    Ok(files)
}

/// The restart numbers with a log file in a container's log directory, ascending.
pub fn restarts(dir: &Path) -> Result<Vec<u32>, LogError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LogError::Io {
        path: dir.into(),
        source,
    })?;
    let mut numbers: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| name.split_once(".log").and_then(|(n, _)| n.parse().ok()))
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    Ok(numbers)
}

/// Splits `data` into lines fed to `assembler`; returns the complete lines and how many bytes
/// they used (a trailing line without `\n` is left for later).
pub fn split_lines(data: &[u8], assembler: &mut Assembler) -> (Vec<Line>, usize) {
    let mut lines = Vec::new();
    let mut used = 0;
    while let Some(end) = data[used..].iter().position(|b| *b == b'\n') {
        if let Some(line) = assembler.push(&data[used..used + end]) {
            lines.push(line);
        }
        used += end + 1;
    }
    (lines, used)
}

/// Where reading stopped, so following can go on from there.
#[derive(Debug)]
pub struct Position {
    /// The file being read (the restart's current file).
    pub path: PathBuf,
    /// Bytes of it consumed.
    pub offset: u64,
    /// Its inode when read, to notice a rotation.
    pub inode: Option<u64>,
    /// Pieces not yet ended.
    pub assembler: Assembler,
}

fn read_file(path: &Path) -> Result<Vec<u8>, LogError> {
    match std::fs::read(path) {
        Ok(data) => Ok(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LogError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Reads every complete line of restart `n`, across its rotated files.
pub fn read_lines(dir: &Path, n: u32) -> Result<(Vec<Line>, Position), LogError> {
    let files = restart_files(dir, n)?;
    let mut assembler = Assembler::default();
    let mut lines = Vec::new();
    let mut position = None;
    for (i, path) in files.iter().enumerate() {
        let inode = inode(path);
        let data = read_file(path)?;
        let (mut more, used) = split_lines(&data, &mut assembler);
        lines.append(&mut more);
        if i + 1 == files.len() {
            position = Some((path.clone(), used as u64, inode));
        }
    }
    let (path, offset, inode) = position.unwrap_or_else(|| (dir.join(format!("{n}.log")), 0, None));
    Ok((
        lines,
        Position {
            path,
            offset,
            inode,
            assembler,
        },
    ))
}

/// Reads what was appended since `position`; after a rotation (the path names another
/// inode), the rest of the old file is not reachable by name any more, so it goes on with
/// the new file from its start.
pub fn read_more(position: &mut Position) -> Result<Vec<Line>, LogError> {
    use std::io::{Read, Seek, SeekFrom};
    let now_inode = inode(&position.path);
    let mut lines = Vec::new();
    if now_inode.is_some() && now_inode != position.inode {
        if position.inode.is_some() {
            // Rotated: the old file is `<n>.log.<suffix>` now; finish it first.
            if let Some(parent) = position.path.parent() {
                let old = std::fs::read_dir(parent)
                    .ok()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok())
                    .find(|e| {
                        use std::os::unix::fs::MetadataExt;
                        e.metadata().ok().map(|m| m.ino()) == position.inode
                    });
                if let Some(old) = old {
                    let data = read_file(&old.path())?;
                    let start = (position.offset as usize).min(data.len());
                    let (mut more, _) = split_lines(&data[start..], &mut position.assembler);
                    lines.append(&mut more);
                }
            }
        }
        position.inode = now_inode;
        position.offset = 0;
    }
    let mut file = match std::fs::File::open(&position.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(lines),
        Err(source) => {
            return Err(LogError::Io {
                path: position.path.clone(),
                source,
            });
        }
    };
    let io = |source| LogError::Io {
        path: position.path.clone(),
        source,
    };
    file.seek(SeekFrom::Start(position.offset)).map_err(io)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(io)?;
    let (mut more, used) = split_lines(&data, &mut position.assembler);
    position.offset += used as u64;
    lines.append(&mut more);
    Ok(lines)
}

/// How often a followed log is polled for new lines.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Streams lines appended after `position` into `sink` until `running` says the container
/// stopped (then what it wrote last is read once more), the byte limit is reached, or the
/// client goes away (`sink` returns false).
pub async fn follow<R, RF, S, SF>(
    mut position: Position,
    mut output: Output,
    mut running: R,
    mut sink: S,
) -> Result<(), LogError>
where
    R: FnMut() -> RF,
    RF: std::future::Future<Output = bool>,
    S: FnMut(Vec<u8>) -> SF,
    SF: std::future::Future<Output = bool>,
{
    loop {
        if output.done() {
            return Ok(());
        }
        let still_running = running().await;
        let lines = read_more(&mut position)?;
        let mut out = Vec::new();
        for line in &lines {
            output.write(line, &mut out);
        }
        if !out.is_empty() && !sink(out).await {
            return Ok(());
        }
        if !still_running {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn lines_of(text: &str) -> Vec<Line> {
        let mut a = Assembler::default();
        split_lines(text.as_bytes(), &mut a).0
    }

    const SAMPLE: &str = "2024-01-01T00:00:01.5Z stdout F one\n\
2024-01-01T00:00:02Z stderr F two\n\
2024-01-01T00:00:03Z stdout P thr\n\
2024-01-01T00:00:03.1Z stderr F interleaved\n\
2024-01-01T00:00:03.2Z stdout F ee\n\
2024-01-01T00:00:04Z stdout F four\n";

    #[test]
    fn records_parse_with_their_stream_tag_and_message() {
        let r = parse_record(b"2024-01-01T00:00:01.123456789Z stderr P a b  c").unwrap();
        assert_eq!(r.stream, Stream::Stderr);
        assert!(r.partial);
        assert_eq!(r.message, b"a b  c");
        assert_eq!(r.time, t("2024-01-01T00:00:01.123456789Z"));
        let empty = parse_record(b"2024-01-01T00:00:01Z stdout F").unwrap();
        assert_eq!(empty.message, b"");
        assert!(parse_record(b"garbage").is_err());
        assert!(parse_record(b"2024-01-01T00:00:01Z stdin F x").is_err());
        assert!(parse_record(b"2024-01-01T00:00:01Z stdout X x").is_err());
    }

    #[test]
    fn partial_records_are_joined_per_stream() {
        let lines = lines_of(SAMPLE);
        let texts: Vec<&[u8]> = lines.iter().map(|l| l.text.as_slice()).collect();
        assert_eq!(
            texts,
            vec![
                &b"one\n"[..],
                b"two\n",
                b"interleaved\n",
                b"three\n",
                b"four\n"
            ]
        );
        assert_eq!(
            lines[3].time,
            t("2024-01-01T00:00:03Z"),
            "first piece's time"
        );
    }

    #[test]
    fn a_line_without_newline_waits_for_more() {
        let mut a = Assembler::default();
        let (lines, used) = split_lines(b"2024-01-01T00:00:01Z stdout F a\n2024-01", &mut a);
        assert_eq!(lines.len(), 1);
        assert_eq!(used, 32);
    }

    #[test]
    fn options_come_from_the_query() {
        let now = t("2024-01-01T00:01:00Z");
        let q = |pairs: &[(&str, &str)]| {
            let v: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LogOptions::from_query(&v, now)
        };
        let o = q(&[
            ("follow", "true"),
            ("tailLines", "2"),
            ("sinceSeconds", "30"),
            ("timestamps", "true"),
            ("limitBytes", "10"),
            ("previous", "1"),
        ])
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                tail_lines: Some(2),
                since: Some(t("2024-01-01T00:00:30Z")),
                timestamps: true,
                previous: true,
                limit_bytes: Some(10),
            }
        );
        assert_eq!(q(&[("tailLines", "-1")]).unwrap().tail_lines, None);
        assert!(q(&[("tailLines", "x")]).is_err());
        assert!(q(&[("limitBytes", "0")]).is_err());
        assert!(q(&[("sinceSeconds", "0")]).is_err());
        assert_eq!(
            q(&[("sinceTime", "2024-01-01T00:00:03Z")]).unwrap().since,
            Some(t("2024-01-01T00:00:03Z"))
        );
    }

    fn render(options: LogOptions) -> String {
        let mut output = Output::new(&options);
        String::from_utf8(select(lines_of(SAMPLE), &options, &mut output)).unwrap()
    }

    #[test]
    fn tail_since_timestamps_and_limit_apply_in_order() {
        assert_eq!(
            render(LogOptions::default()),
            "one\ntwo\ninterleaved\nthree\nfour\n"
        );
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(render(tail), "three\nfour\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(render(none), "");
        let since = LogOptions {
            since: Some(t("2024-01-01T00:00:03Z")),
            tail_lines: Some(10),
            ..Default::default()
        };
        assert_eq!(render(since), "interleaved\nthree\nfour\n");
        let stamped = LogOptions {
            timestamps: true,
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(
            render(stamped),
            "2024-01-01T00:00:03Z three\n2024-01-01T00:00:04Z four\n"
        );
        let limited = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(render(limited), "one\ntw");
    }

    #[test]
    fn nano_timestamps_drop_trailing_zeros() {
        assert_eq!(
            rfc3339_nano(t("2024-01-01T00:00:01.500Z")),
            "2024-01-01T00:00:01.5Z"
        );
        assert_eq!(
            rfc3339_nano(t("2024-01-01T00:00:01.123456789Z")),
            "2024-01-01T00:00:01.123456789Z"
        );
    }

    #[test]
    fn rotated_files_are_read_before_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("0.log.20240101-000001"),
            "2024-01-01T00:00:01Z stdout F a\n2024-01-01T00:00:02Z stdout P b",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("0.log"),
            "\n2024-01-01T00:00:03Z stdout F c\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("0.log.20231231-000000.gz"), "zzz").unwrap();
        std::fs::write(
            dir.path().join("1.log"),
            "2024-01-01T00:00:05Z stdout F d\n",
        )
        .unwrap();
        assert_eq!(restarts(dir.path()).unwrap(), vec![0, 1]);
        let (lines, position) = read_lines(dir.path(), 0).unwrap();
        let texts: Vec<&[u8]> = lines.iter().map(|l| l.text.as_slice()).collect();
        assert_eq!(texts, vec![&b"a\n"[..], b"c\n"]);
        assert_eq!(position.path, dir.path().join("0.log"));
    }

    #[test]
    fn following_survives_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("0.log");
        std::fs::write(&current, "2024-01-01T00:00:01Z stdout F a\n").unwrap();
        let (_, mut position) = read_lines(dir.path(), 0).unwrap();
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&current)
                .unwrap();
            f.write_all(b"2024-01-01T00:00:02Z stdout F b\n").unwrap();
        }
        std::fs::rename(&current, dir.path().join("0.log.20240101-000002")).unwrap();
        std::fs::write(&current, "2024-01-01T00:00:03Z stdout F c\n").unwrap();
        let lines = read_more(&mut position).unwrap();
        let texts: Vec<&[u8]> = lines.iter().map(|l| l.text.as_slice()).collect();
        assert_eq!(texts, vec![&b"b\n"[..], b"c\n"]);
        assert!(read_more(&mut position).unwrap().is_empty());
    }

    #[tokio::test]
    async fn follow_streams_until_the_container_stops() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("0.log");
        std::fs::write(&current, "2024-01-01T00:00:01Z stdout F a\n").unwrap();
        let (_, position) = read_lines(dir.path(), 0).unwrap();
        let path = current.clone();
        let polls = std::sync::atomic::AtomicUsize::new(0);
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        let run = tokio::time::timeout(
            Duration::from_secs(10),
            follow(
                position,
                Output::new(&LogOptions::default()),
                || {
                    let n = polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n == 1 {
                        use std::io::Write;
                        let mut f = std::fs::OpenOptions::new()
                            .append(true)
                            .open(&path)
                            .unwrap();
                        f.write_all(b"2024-01-01T00:00:02Z stdout F b\n").unwrap();
                    }
                    std::future::ready(n < 3)
                },
                |chunk: Vec<u8>| {
                    sink.lock().unwrap().extend_from_slice(&chunk);
                    std::future::ready(true)
                },
            ),
        )
        .await;
        assert!(matches!(run, Ok(Ok(()))));
        assert_eq!(*got.lock().unwrap(), b"b\n");
    }
}
