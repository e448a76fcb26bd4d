//! SPDY/3.1 as the Kubernetes streaming protocols use it (the framing moby/spdystream speaks):
//! frames, header blocks compressed with zlib over the SPDY/3 dictionary (one compression
//! context per direction for the whole connection), and a small connection that multiplexes
//! streams over any byte stream. No Rust crate keeps SPDY alive, so it is written here.
//!
//! Like spdystream, the connection does not enforce SPDY/3.1 flow control windows: peers
//! never send WINDOW_UPDATE frames for these streams, and TCP back-pressure limits memory
//! (a stream whose reader stalls stalls its connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The protocol name in the `Upgrade` header.
pub const UPGRADE: &str = "SPDY/3.1";

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// The FIN flag: the sender's last frame on a stream.
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status CANCEL.
pub const CANCEL: u32 = 5;
/// RST_STREAM status PROTOCOL_ERROR.
pub const PROTOCOL_ERROR: u32 = 1;
/// The largest payload a frame may carry (24-bit length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The largest data frame this side writes.
const WRITE_CHUNK: usize = 32 * 1024;
/// The largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Why SPDY failed.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The peer sent something that is not SPDY/3.
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    /// A header block did not (de)compress.
    #[error("SPDY header compression: {0}")]
    Compression(String),
    /// Reading or writing the connection failed.
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Header name/value pairs; names are lowercase on the wire, lookups ignore case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Builds headers from pairs.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                .collect(),
        )
    }
}

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream.
        stream_id: u32,
        /// The stream it belongs to, or 0.
        associated_id: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// FIN, UNIDIRECTIONAL.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: u32,
    },
    /// Settings (entries of flags, id, value), ignored here.
    Settings {
        /// The entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// A ping, echoed by the side that did not send it.
    Ping {
        /// Odd from clients, even from servers.
        id: u32,
    },
    /// The sender stops.
    GoAway {
        /// The last stream it handled.
        last_good_stream_id: u32,
        /// Why.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow control, ignored here.
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// Window increase.
        delta: u32,
    },
    /// Stream data.
    Data {
        /// The stream.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
}

/// The SPDY/3 header compression dictionary: length-prefixed words, then a run of text.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TEXT: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505",
            "203 Non-Authoritative Information",
            "204 No Content",
            "301 Moved Permanently",
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "500 Internal Server Error",
            "501 Not Implemented",
            "503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00",
            " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut out = Vec::with_capacity(1423);
        for word in WORDS {
            out.extend_from_slice(&(word.len() as u32).to_be_bytes());
            out.extend_from_slice(word.as_bytes());
        }
        out.extend_from_slice(TEXT.as_bytes());
        out
    })
}

fn compression(what: &str) -> impl FnOnce(String) -> SpdyError + '_ {
    move |e| SpdyError::Compression(format!("{what}: {e}"))
}

/// Encodes frames; owns the connection's outgoing compression context.
pub struct Encoder {
    deflate: Compress,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Encoder")
    }
}

impl Encoder {
    /// A fresh context.
    pub fn new() -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(|e| compression("set the dictionary")(e.to_string()))?;
        Ok(Encoder { deflate })
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut plain = Vec::new();
        plain.put_u32(headers.0.len() as u32);
        for (name, value) in &headers.0 {
            let name = name.to_ascii_lowercase();
            plain.put_u32(name.len() as u32);
            plain.put_slice(name.as_bytes());
            plain.put_u32(value.len() as u32);
            plain.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let done = (self.deflate.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            self.deflate
                .compress_vec(&plain[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| compression("compress headers")(e.to_string()))?;
            let done = (self.deflate.total_in() - start) as usize;
            if done == plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// The bytes of `frame`.
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, SpdyError> {
        let mut payload = Vec::new();
        let (kind, flags) = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(((*flags as u32) << 24) | data.len() as u32);
                out.put_slice(data);
                return Ok(out);
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                headers,
            } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(associated_id & 0x7fff_ffff);
                payload.put_u8((priority & 0x7) << 5);
                payload.put_u8(0);
                payload.extend(self.header_block(headers)?);
                (SYN_STREAM, *flags)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.extend(self.header_block(headers)?);
                (SYN_REPLY, *flags)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.extend(self.header_block(headers)?);
                (HEADERS, *flags)
            }
            Frame::RstStream { stream_id, status } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(*status);
                (RST_STREAM, 0)
            }
            Frame::Settings { entries } => {
                payload.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    payload.put_u32(((*flags as u32) << 24) | (id & 0xff_ffff));
                    payload.put_u32(*value);
                }
                (SETTINGS, 0)
            }
            Frame::Ping { id } => {
                payload.put_u32(*id);
                (PING, 0)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                payload.put_u32(last_good_stream_id & 0x7fff_ffff);
                payload.put_u32(*status);
                (GOAWAY, 0)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                payload.put_u32(stream_id & 0x7fff_ffff);
                payload.put_u32(delta & 0x7fff_ffff);
                (WINDOW_UPDATE, 0)
            }
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(SpdyError::Protocol(format!(
                "a frame of {} bytes is too large",
                payload.len()
            )));
        }
        let mut out = Vec::with_capacity(8 + payload.len());
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u32(((flags as u32) << 24) | payload.len() as u32);
        out.extend(payload);
        Ok(out)
    }
}

/// Decodes frames; owns the connection's incoming decompression context.
pub struct Decoder {
    inflate: Decompress,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Decoder")
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflate: Decompress::new(true),
        }
    }
}

fn protocol(message: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(message.into())
}

impl Decoder {
    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let start = self.inflate.total_in();
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            let done = (self.inflate.total_in() - start) as usize;
            let produced = out.len();
            match self
                .inflate
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| compression("set the dictionary")(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(compression("decompress headers")(e.to_string())),
            }
            let now_done = (self.inflate.total_in() - start) as usize;
            if now_done == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if now_done == done && out.len() == produced && out.len() < out.capacity() {
                return Err(compression("decompress headers")("no progress".to_string()));
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(compression("decompress headers")(
                    "block too large".to_string(),
                ));
            }
        }
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let plain = self.inflate(compressed)?;
        let mut buf = &plain[..];
        let take_u32 = |buf: &mut &[u8]| -> Result<u32, SpdyError> {
            if buf.remaining() < 4 {
                return Err(protocol("truncated header block"));
            }
            Ok(buf.get_u32())
        };
        let take_str = |buf: &mut &[u8]| -> Result<String, SpdyError> {
            let len = take_u32(buf)? as usize;
            if buf.remaining() < len {
                return Err(protocol("truncated header block"));
            }
            let s = String::from_utf8_lossy(&buf[..len]).into_owned();
            buf.advance(len);
            Ok(s)
        };
        let count = take_u32(&mut buf)?;
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = take_str(&mut buf)?;
            let value = take_str(&mut buf)?;
            // Several values of one name travel NUL-separated.
            for v in value.split('\0') {
                headers.push((name.to_ascii_lowercase(), v.to_string()));
            }
        }
        Ok(Headers(headers))
    }

    /// Takes one whole frame off the front of `buf`, if it holds one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        buf.advance(8);
        let payload = buf.split_to(len).freeze();
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word,
                flags,
                data: payload,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(protocol(format!("unsupported SPDY version {version}")));
        }
        let kind = (word & 0xffff) as u16;
        let mut p = &payload[..];
        let need = |p: &[u8], n: usize| {
            if p.len() < n {
                Err(protocol(format!("control frame {kind} too short")))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(p, 10)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_id = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                p.advance(1);
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    flags,
                    headers: self.header_block(p)?,
                }
            }
            SYN_REPLY | HEADERS => {
                need(p, 4)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let headers = self.header_block(p)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(p, 8)?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            SETTINGS => {
                need(p, 4)?;
                let count = p.get_u32() as usize;
                need(p, count.saturating_mul(8))?;
                let entries = (0..count)
                    .map(|_| {
                        let head = p.get_u32();
                        ((head >> 24) as u8, head & 0xff_ffff, p.get_u32())
                    })
                    .collect();
                Frame::Settings { entries }
            }
            PING => {
                need(p, 4)?;
                Frame::Ping { id: p.get_u32() }
            }
            GOAWAY => {
                need(p, 4)?;
                let last_good_stream_id = p.get_u32() & 0x7fff_ffff;
                let status = if p.len() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            WINDOW_UPDATE => {
                need(p, 8)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            other => return Err(protocol(format!("unknown control frame type {other}"))),
        };
        Ok(Some(frame))
    }
}

/// Which end of the connection this is: servers accept odd (client) streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts streams and replies to them.
    Server,
    /// Opens streams (tests and tools).
    Client,
}

#[derive(Debug)]
enum Out {
    Frame(Frame),
    Close,
}

/// Writes to one stream.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

fn closed() -> SpdyError {
    SpdyError::Io(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the SPDY connection is closed",
    ))
}

impl StreamWriter {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.out.send(Out::Frame(frame)).await.map_err(|_| closed())
    }

    /// Sends `data` on the stream.
    pub async fn write(&self, data: &[u8]) -> Result<(), SpdyError> {
        for chunk in data.chunks(WRITE_CHUNK) {
            self.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: Bytes::copy_from_slice(chunk),
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream (an empty data frame with FIN).
    pub async fn close(&self) -> Result<(), SpdyError> {
        self.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Resets the stream.
    pub async fn reset(&self) -> Result<(), SpdyError> {
        self.send(Frame::RstStream {
            stream_id: self.id,
            status: CANCEL,
        })
        .await
    }
}

/// A stream: its headers, what the peer sends on it (ends at FIN or reset), and a writer.
#[derive(Debug)]
pub struct Stream {
    /// The headers of its SYN_STREAM.
    pub headers: Headers,
    /// The peer's data; `None` once it half-closed or reset the stream.
    pub data: mpsc::Receiver<Bytes>,
    /// This side's half.
    pub writer: StreamWriter,
}

type Routes = Arc<Mutex<HashMap<u32, mpsc::Sender<Bytes>>>>;

/// A SPDY connection over a byte stream; dropping it or calling [`Connection::close`] ends it.
#[derive(Debug)]
pub struct Connection {
    out: mpsc::Sender<Out>,
    routes: Routes,
    next_id: Mutex<u32>,
    reader: tokio::task::JoinHandle<()>,
    writer: Option<tokio::task::JoinHandle<()>>,
    peer_gone: tokio::sync::watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Connection {
    /// Starts the connection over `io`; streams the peer opens arrive on the receiver.
    pub fn new<IO>(io: IO, role: Role) -> Result<(Connection, mpsc::Receiver<Stream>), SpdyError>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let mut encoder = Encoder::new()?;
        let (mut read, mut write) = tokio::io::split(io);
        let (out_tx, mut out_rx) = mpsc::channel::<Out>(256);
        let (streams_tx, streams_rx) = mpsc::channel(64);
        let routes: Routes = Arc::default();
        let writer = tokio::spawn(async move {
            while let Some(item) = out_rx.recv().await {
                let frame = match item {
                    Out::Frame(f) => f,
                    Out::Close => break,
                };
                let Ok(bytes) = encoder.encode(&frame) else {
                    break;
                };
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
                if out_rx.is_empty() && write.flush().await.is_err() {
                    return;
                }
            }
            let _ = write.flush().await;
            let _ = write.shutdown().await;
        });
        let (gone_tx, peer_gone) = tokio::sync::watch::channel(false);
        let reader = {
            let routes = routes.clone();
            let out = out_tx.clone();
            tokio::spawn(async move {
                let result = read_loop(&mut read, role, &routes, &out, &streams_tx).await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "SPDY connection ended");
                }
                // Every stream's input ends with the connection.
                lock(&routes).clear();
                let _ = gone_tx.send(true);
            })
        };
        Ok((
            Connection {
                out: out_tx,
                routes,
                next_id: Mutex::new(if role == Role::Client { 1 } else { 2 }),
                reader,
                writer: Some(writer),
                peer_gone,
            },
            streams_rx,
        ))
    }

    /// Opens a stream with `headers` (the client side).
    pub async fn open(&self, headers: Headers) -> Result<Stream, SpdyError> {
        let id = {
            let mut next = lock(&self.next_id);
            let id = *next;
            *next += 2;
            id
        };
        let (tx, rx) = mpsc::channel(64);
        lock(&self.routes).insert(id, tx);
        self.out
            .send(Out::Frame(Frame::SynStream {
                stream_id: id,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: headers.clone(),
            }))
            .await
            .map_err(|_| closed())?;
        Ok(Stream {
            headers,
            data: rx,
            writer: StreamWriter {
                id,
                out: self.out.clone(),
            },
        })
    }

    /// Resolves once the peer closed the connection (or it failed).
    pub fn peer_gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut gone = self.peer_gone.clone();
        async move {
            let _ = gone.wait_for(|g| *g).await;
        }
    }

    /// Sends what is queued, then closes the connection.
    pub async fn close(mut self) {
        let _ = self.out.send(Out::Close).await;
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        self.reader.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    read: &mut R,
    role: Role,
    routes: &Routes,
    out: &mpsc::Sender<Out>,
    streams: &mpsc::Sender<Stream>,
) -> Result<(), SpdyError> {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let send = |frame: Frame| {
        let out = out.clone();
        async move { out.send(Out::Frame(frame)).await.map_err(|_| closed()) }
    };
    loop {
        while let Some(frame) = decoder.decode(&mut buf)? {
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    if role == Role::Server {
                        send(Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: Headers::default(),
                        })
                        .await?;
                    }
                    let (tx, rx) = mpsc::channel(64);
                    if flags & FLAG_FIN == 0 {
                        lock(routes).insert(stream_id, tx);
                    }
                    let stream = Stream {
                        headers,
                        data: rx,
                        writer: StreamWriter {
                            id: stream_id,
                            out: out.clone(),
                        },
                    };
                    if streams.send(stream).await.is_err() {
                        send(Frame::RstStream {
                            stream_id,
                            status: CANCEL,
                        })
                        .await?;
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let route = lock(routes).get(&stream_id).cloned();
                    if let Some(route) = route
                        && !data.is_empty()
                    {
                        // A reader that went away only loses its own input.
                        let _ = route.send(data).await;
                    }
                    if flags & FLAG_FIN != 0 {
                        lock(routes).remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    lock(routes).remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let ours = (id % 2 == 1) == (role == Role::Client);
                    if !ours {
                        send(Frame::Ping { id }).await?;
                    }
                }
                Frame::GoAway { .. } => return Ok(()),
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. } => {}
            }
        }
        if read.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert!(dict.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dict.ends_with(b"utf-,*,enq=0."));
    }

    fn round_trip(frames: &[Frame]) {
        let mut encoder = Encoder::new().unwrap();
        let mut decoder = Decoder::default();
        let mut wire = BytesMut::new();
        for frame in frames {
            wire.extend(encoder.encode(frame).unwrap());
        }
        // Fed a byte at a time, the decoder waits for whole frames.
        let mut fed = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            fed.put_u8(byte);
            while let Some(frame) = decoder.decode(&mut fed).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
    }

    #[test]
    fn every_frame_kind_round_trips() {
        let headers = Headers::from_pairs(&[("streamType", "stdout"), ("port", "8080")]);
        round_trip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 2,
                flags: 0,
                headers: headers.clone(),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::default(),
            },
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            // The second block reuses the compression context of the first.
            Frame::SynStream {
                stream_id: 3,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: headers.clone(),
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers,
            },
            Frame::RstStream {
                stream_id: 3,
                status: CANCEL,
            },
            Frame::Settings {
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping { id: 1 },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1000,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ]);
    }

    #[test]
    fn control_frames_have_the_spdy3_layout() {
        let mut encoder = Encoder::new().unwrap();
        let bytes = encoder.encode(&Frame::Ping { id: 7 }).unwrap();
        assert_eq!(bytes, [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 7]);
        let bytes = encoder
            .encode(&Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"ab"),
            })
            .unwrap();
        assert_eq!(bytes, [0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn header_blocks_are_zlib_with_the_dictionary() {
        let mut encoder = Encoder::new().unwrap();
        let bytes = encoder
            .encode(&Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::from_pairs(&[("a", "b")]),
            })
            .unwrap();
        let block = &bytes[12..];
        // A zlib header with FDICT set, naming the dictionary by its Adler-32.
        assert_eq!(block[0] & 0x0f, 8);
        assert_ne!(block[1] & 0x20, 0);
        let mut adler = (1u32, 0u32);
        for &b in dictionary() {
            adler.0 = (adler.0 + b as u32) % 65521;
            adler.1 = (adler.1 + adler.0) % 65521;
        }
        assert_eq!(
            u32::from_be_bytes([block[2], block[3], block[4], block[5]]),
            (adler.1 << 16) | adler.0
        );
    }

    #[test]
    fn multiple_values_split_on_nul() {
        let mut encoder = Encoder::new().unwrap();
        let mut decoder = Decoder::default();
        let frame = Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 0,
            flags: 0,
            headers: Headers(vec![("x".into(), "a\0b".into())]),
        };
        let mut wire = BytesMut::from(&encoder.encode(&frame).unwrap()[..]);
        let Some(Frame::SynStream { headers, .. }) = decoder.decode(&mut wire).unwrap() else {
            panic!("not a SYN_STREAM");
        };
        assert_eq!(
            headers.0,
            vec![
                ("x".to_string(), "a".to_string()),
                ("x".to_string(), "b".to_string())
            ]
        );
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let mut decoder = Decoder::default();
        let mut wire = BytesMut::from(&[0x80, 0x02, 0, 1, 0, 0, 0, 0][..]);
        assert!(matches!(
            decoder.decode(&mut wire),
            Err(SpdyError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn streams_carry_data_both_ways_and_pings_are_answered() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let (a, b) = tokio::io::duplex(1024);
            let (server, mut incoming) = Connection::new(a, Role::Server).unwrap();
            let (client, _none) = Connection::new(b, Role::Client).unwrap();
            let mut opened = client
                .open(Headers::from_pairs(&[("streamType", "stdin")]))
                .await
                .unwrap();
            opened.writer.write(b"ping").await.unwrap();
            opened.writer.close().await.unwrap();
            let mut accepted = incoming.recv().await.unwrap();
            assert_eq!(accepted.headers.get("streamtype"), Some("stdin"));
            assert_eq!(&accepted.data.recv().await.unwrap()[..], b"ping");
            assert!(accepted.data.recv().await.is_none(), "FIN ends the input");
            accepted.writer.write(b"pong").await.unwrap();
            accepted.writer.close().await.unwrap();
            assert_eq!(&opened.data.recv().await.unwrap()[..], b"pong");
            assert!(opened.data.recv().await.is_none());
            server.close().await;
            drop(client);
        })
        .await
        .unwrap();
    }
}
