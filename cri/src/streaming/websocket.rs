//! The Kubernetes WebSocket channel protocols (upstream's wsstream): every message starts
//! with a channel number (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize for remote commands;
//! 2n data and 2n+1 error for the n-th forwarded port). Binary protocols send the channel as
//! a byte; the base64 ones send text frames with the channel as an ASCII digit and the data
//! base64-encoded. `v5.channel.k8s.io` adds channel 255, whose one-byte payload names a
//! channel the client closes (stdin). `v2.portforward.k8s.io` is different: its binary
//! messages carry a SPDY/3.1 connection, which [`ByteStream`] unwraps.

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Remote commands with the stdin close signal.
pub const V5_CHANNEL: &str = "v5.channel.k8s.io";
/// Remote commands with a metav1.Status on the error channel.
pub const V4_CHANNEL: &str = "v4.channel.k8s.io";
/// [`V4_CHANNEL`] in base64 text frames.
pub const V4_BASE64_CHANNEL: &str = "v4.base64.channel.k8s.io";
/// The original protocol: plain-text errors.
pub const CHANNEL: &str = "channel.k8s.io";
/// [`CHANNEL`] in base64 text frames.
pub const BASE64_CHANNEL: &str = "base64.channel.k8s.io";
/// Port-forward as SPDY/3.1 tunneled in binary messages.
pub const V2_PORT_FORWARD: &str = "v2.portforward.k8s.io";
/// The v5 channel that signals a closed channel.
pub const CLOSE_CHANNEL: u8 = 255;

/// The remote command protocols, in this server's preference (the client's order decides).
pub const REMOTE_COMMAND_PROTOCOLS: &[&str] = &[
    V5_CHANNEL,
    V4_CHANNEL,
    V4_BASE64_CHANNEL,
    CHANNEL,
    BASE64_CHANNEL,
];
/// The port-forward protocols.
pub const PORT_FORWARD_PROTOCOLS: &[&str] = &[
    V2_PORT_FORWARD,
    V4_CHANNEL,
    V4_BASE64_CHANNEL,
    CHANNEL,
    BASE64_CHANNEL,
];

/// The first protocol the client asked for (`Sec-WebSocket-Protocol`, comma lists and
/// repeats) that `supported` has; `Some("")` when the client asked for none (the plain
/// binary channel protocol, as upstream).
pub fn negotiate<'a>(requested: &[&str], supported: &[&'a str]) -> Option<&'a str> {
    let mut asked = requested
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .peekable();
    if asked.peek().is_none() {
        return Some("");
    }
    asked.find_map(|p| supported.iter().find(|s| **s == p).copied())
}

/// How a negotiated channel protocol encodes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Text frames with base64 data.
    pub base64: bool,
    /// Channel 255 closes channels (v5).
    pub close_signal: bool,
    /// The error channel carries a metav1.Status (v4 and later).
    pub status: bool,
}

impl Framing {
    /// The framing of a negotiated protocol.
    pub fn of(protocol: &str) -> Framing {
        Framing {
            base64: protocol.contains("base64"),
            close_signal: protocol == V5_CHANNEL,
            status: protocol.starts_with("v4.") || protocol.starts_with("v5."),
        }
    }

    /// A message carrying `data` on `channel`.
    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push((b'0' + channel) as char);
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::Text(text.into())
        } else {
            let mut bytes = Vec::with_capacity(1 + data.len());
            bytes.push(channel);
            bytes.extend_from_slice(data);
            Message::Binary(bytes.into())
        }
    }

    /// The channel and data of a message; `None` for control messages and malformed ones.
    pub fn decode(self, message: &Message) -> Option<(u8, Bytes)> {
        match message {
            Message::Binary(bytes) if !self.base64 => {
                let (&channel, data) = bytes.split_first()?;
                Some((channel, Bytes::copy_from_slice(data)))
            }
            Message::Text(text) if self.base64 => {
                let (channel, data) = text.as_str().split_at_checked(1)?;
                let channel = channel.as_bytes()[0].checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .ok()?;
                Some((channel, Bytes::from(data)))
            }
            _ => None,
        }
    }
}

/// Ends a WebSocket with a normal closure (1000). A close frame without a code reads as 1005
/// "no status" to gorilla/websocket, which kubectl reports as an error on the last stream.
pub async fn close_normally<K>(sink: &mut K)
where
    K: futures::Sink<Message> + Unpin,
{
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// The WebSocket's binary messages as a byte stream (the SPDY tunnel of
/// `v2.portforward.k8s.io`): each write becomes one binary message.
pub struct ByteStream;

impl ByteStream {
    /// Pumps between `ws` and the returned duplex end until either side closes.
    pub fn wrap<S>(ws: WebSocketStream<S>) -> DuplexStream
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let (mut read, mut write) = tokio::io::split(ours);
        let (mut sink, mut stream) = ws.split();
        tokio::spawn(async move {
            let inbound = async {
                while let Some(Ok(message)) = stream.next().await {
                    match message {
                        Message::Binary(bytes) if write.write_all(&bytes).await.is_err() => break,
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                let _ = write.shutdown().await;
            };
            let outbound = async {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                            if sink.send(message).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                close_normally(&mut sink).await;
            };
            // The tunnel ends when the SPDY side closes; a peer that closed first ends the
            // inbound half, which the SPDY connection sees as end of input.
            tokio::join!(inbound, outbound);
        });
        theirs
    }
}

impl std::fmt::Debug for ByteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByteStream")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_order_decides() {
        assert_eq!(
            negotiate(
                &["v5.channel.k8s.io, v4.channel.k8s.io"],
                REMOTE_COMMAND_PROTOCOLS
            ),
            Some(V5_CHANNEL)
        );
        assert_eq!(
            negotiate(
                &["foo", "v4.base64.channel.k8s.io", "v5.channel.k8s.io"],
                REMOTE_COMMAND_PROTOCOLS
            ),
            Some(V4_BASE64_CHANNEL)
        );
        assert_eq!(negotiate(&[], REMOTE_COMMAND_PROTOCOLS), Some(""));
        assert_eq!(negotiate(&["nope"], REMOTE_COMMAND_PROTOCOLS), None);
        assert_eq!(
            negotiate(&["v2.portforward.k8s.io"], PORT_FORWARD_PROTOCOLS),
            Some(V2_PORT_FORWARD)
        );
    }

    #[test]
    fn binary_and_base64_frames_round_trip() {
        for protocol in [V5_CHANNEL, V4_BASE64_CHANNEL, CHANNEL] {
            let framing = Framing::of(protocol);
            let message = framing.encode(2, b"hi\xff");
            assert_eq!(
                framing.decode(&message),
                Some((2, Bytes::from_static(b"hi\xff")))
            );
        }
        let binary = Framing::of(V4_CHANNEL).encode(1, b"x");
        assert_eq!(binary, Message::Binary(Bytes::from_static(b"\x01x")));
        let text = Framing::of(V4_BASE64_CHANNEL).encode(1, b"x");
        assert_eq!(text, Message::Text("1eA==".into()));
    }

    #[test]
    fn protocol_features() {
        assert!(Framing::of(V5_CHANNEL).close_signal);
        assert!(!Framing::of(V4_CHANNEL).close_signal);
        assert!(Framing::of(V4_CHANNEL).status);
        assert!(!Framing::of(CHANNEL).status);
        assert!(!Framing::of("").base64);
    }
}
