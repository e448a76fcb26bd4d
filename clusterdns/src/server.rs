//! The DNS server: a hickory [`RequestHandler`] answering the cluster domain from the
//! [`Index`] and forwarding every other name to upstream resolvers, on UDP and TCP.
//!
//! Forwarding passes the client's query on as it is and the upstream's answer back (its
//! response code, flags and sections), as CoreDNS's forward plugin does; an upstream that does
//! not answer yields SERVFAIL. The upstream is a narrow trait ([`Upstream`]) so the handler is
//! tested with a fake.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record as WireRecord};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::index::{self, Answer, Index, Rcode, Rdata};

/// Why a forwarded query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No upstream is configured.
    #[error("no upstream resolvers configured")]
    NoUpstream,
    /// Every upstream failed; the last error is kept.
    #[error("upstream {server}: {source}")]
    Io {
        /// The upstream tried last.
        server: SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The upstream's answer is not a DNS message.
    #[error("upstream {server} answered something that is not DNS: {why}")]
    Malformed {
        /// The upstream.
        server: SocketAddr,
        /// The decoding error.
        why: String,
    },
}

/// Where names outside the cluster go.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Sends the query (wire format) and returns the answer (wire format).
    async fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, ForwardError>;
}

/// Upstream resolvers reached over UDP (TCP when the answer is truncated), tried in order.
#[derive(Debug, Clone)]
pub struct Forwarder {
    servers: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    /// Forwards to `servers` with `timeout` per server.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Self {
        Forwarder { servers, timeout }
    }

    async fn udp(&self, server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(local).await?;
        socket.connect(server).await?;
        socket.send(query).await?;
        let mut buf = vec![0u8; 65535];
        loop {
            let n = socket.recv(&mut buf).await?;
            // Only the answer to this query (same id) counts.
            if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    async fn tcp(&self, server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut stream = tokio::net::TcpStream::connect(server).await?;
        let len = u16::try_from(query.len())
            .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn one(&self, server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time");
        let answer = tokio::time::timeout(self.timeout, self.udp(server, query))
            .await
            .map_err(|_| timed_out())??;
        // The TC bit: byte 2, bit 1.
        if answer.len() > 2 && answer[2] & 0x02 != 0 {
            return tokio::time::timeout(self.timeout, self.tcp(server, query))
                .await
                .map_err(|_| timed_out())?;
        }
        Ok(answer)
    }
}

#[async_trait::async_trait]
impl Upstream for Forwarder {
    async fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        for server in &self.servers {
            match self.one(*server, query).await {
                Ok(answer) => return Ok(answer),
                Err(source) => {
                    tracing::debug!(%server, error = %source, "upstream failed, trying the next");
                    last = ForwardError::Io {
                        server: *server,
                        source,
                    };
                }
            }
        }
        Err(last)
    }
}

/// The `nameserver` addresses of a resolv.conf (port 53), in order. Loopback stub resolvers
/// are kept: a server on the host reaches them.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The index the handler answers from: `None` until the first full list has arrived.
#[derive(Debug, Default)]
pub struct IndexCell(RwLock<Option<Arc<Index>>>);

impl IndexCell {
    /// The current index.
    pub fn get(&self) -> Option<Arc<Index>> {
        self.0.read().ok().and_then(|g| g.clone())
    }

    /// Replaces the index.
    pub fn set(&self, index: Index) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(Arc::new(index));
        }
    }
}

/// Answers DNS requests: the cluster domain and the service range's reverse names from the
/// index, everything else through the upstream.
pub struct Handler {
    domain: String,
    index: Arc<IndexCell>,
    upstream: Arc<dyn Upstream>,
}

impl Handler {
    /// A handler for `domain`.
    pub fn new(domain: &str, index: Arc<IndexCell>, upstream: Arc<dyn Upstream>) -> Self {
        Handler {
            domain: index::normalize(domain),
            index,
            upstream,
        }
    }

    fn in_domain(&self, qname: &str) -> bool {
        qname == self.domain || qname.ends_with(&format!(".{}", self.domain))
    }
}

/// What to send back.
enum Reply {
    /// An authoritative answer from the index.
    Local(Answer),
    /// The upstream's message.
    Forwarded(Message),
    /// An error code and nothing else.
    Error(ResponseCode),
}

fn wire_name(name: &str) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_ascii(format!("{name}."))
}

fn to_wire(record: &index::Record) -> Result<WireRecord, hickory_proto::ProtoError> {
    let rdata = match &record.data {
        Rdata::A(ip) => RData::A(A(*ip)),
        Rdata::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
        Rdata::Cname(n) => RData::CNAME(CNAME(wire_name(n)?)),
        Rdata::Ptr(n) => RData::PTR(PTR(wire_name(n)?)),
        Rdata::Ns(n) => RData::NS(NS(wire_name(n)?)),
        Rdata::Txt(t) => RData::TXT(TXT::new(vec![t.clone()])),
        Rdata::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, wire_name(target)?)),
        Rdata::Soa {
            mname,
            rname,
            serial,
        } => RData::SOA(SOA::new(
            wire_name(mname)?,
            wire_name(rname)?,
            *serial,
            7200,
            1800,
            86400,
            index::TTL,
        )),
    };
    Ok(WireRecord::from_rdata(
        wire_name(&record.name)?,
        record.ttl,
        rdata,
    ))
}

fn to_wire_all(records: &[index::Record]) -> Result<Vec<WireRecord>, hickory_proto::ProtoError> {
    records.iter().map(to_wire).collect()
}

impl Handler {
    /// Decides the reply to a request (no I/O but the upstream exchange).
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.message_type != MessageType::Query {
            return Reply::Error(ResponseCode::FormErr);
        }
        if request.metadata.op_code != OpCode::Query {
            return Reply::Error(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Reply::Error(ResponseCode::FormErr);
        };
        let qname = index::normalize(&query.name().to_string());
        let qtype = query.query_type();
        let index = self.index.get();
        match index.as_ref().and_then(|i| i.answer(&qname, qtype)) {
            Some(answer) => {
                tracing::debug!(%qname, %qtype, rcode = ?answer.rcode, "answered");
                return Reply::Local(answer);
            }
            None if index.is_none() && self.in_domain(&qname) => {
                tracing::warn!(%qname, "cluster names not loaded yet: SERVFAIL");
                return Reply::Error(ResponseCode::ServFail);
            }
            None => {}
        }
        match self.upstream.exchange(request.as_slice()).await {
            Ok(bytes) => match Message::from_vec(&bytes) {
                Ok(message) => Reply::Forwarded(message),
                Err(error) => {
                    tracing::warn!(%qname, %error, "upstream answer not understood: SERVFAIL");
                    Reply::Error(ResponseCode::ServFail)
                }
            },
            Err(error) => {
                tracing::warn!(%qname, %qtype, %error, "forwarding failed: SERVFAIL");
                Reply::Error(ResponseCode::ServFail)
            }
        }
    }
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = hickory_proto::op::Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().max(512));
            ours
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let mut metadata = hickory_proto::op::Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        let reply = self.reply(request).await;
        let sent = match reply {
            Reply::Local(answer) => {
                let sections = (
                    to_wire_all(&answer.answers),
                    to_wire_all(&answer.authority),
                    to_wire_all(&answer.additionals),
                );
                let (Ok(answers), Ok(authority), Ok(additionals)) = sections else {
                    tracing::warn!("a record of the index is not a valid DNS name: SERVFAIL");
                    let response = builder.error_msg(&request.metadata, ResponseCode::ServFail);
                    return response_handle
                        .send_response(response)
                        .await
                        .unwrap_or_else(|_| failed(request, ResponseCode::ServFail));
                };
                metadata.authoritative = true;
                metadata.response_code = match answer.rcode {
                    Rcode::NoError => ResponseCode::NoError,
                    Rcode::NxDomain => ResponseCode::NXDomain,
                };
                let response = builder.build(
                    metadata,
                    answers.iter(),
                    authority.iter(),
                    std::iter::empty(),
                    additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            Reply::Forwarded(message) => {
                let mut upstream = message.metadata;
                upstream.id = request.metadata.id;
                let response = builder.build(
                    upstream,
                    message.answers.iter(),
                    message.authorities.iter(),
                    std::iter::empty(),
                    message.additionals.iter(),
                );
                response_handle.send_response(response).await
            }
            Reply::Error(code) => {
                let response = builder.error_msg(&request.metadata, code);
                response_handle.send_response(response).await
            }
        };
        sent.unwrap_or_else(|error| {
            tracing::debug!(%error, "sending a response failed");
            failed(request, ResponseCode::ServFail)
        })
    }
}

/// A bound UDP socket and TCP listener on one address.
#[derive(Debug)]
pub struct Listeners {
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Listeners {
    /// Binds UDP and TCP on `addr`. Port 0 picks a port free for both.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let mut last = None;
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind(addr).await?;
            let bound = udp.local_addr()?;
            match tokio::net::TcpListener::bind(bound).await {
                Ok(tcp) => {
                    return Ok(Listeners {
                        udp,
                        tcp,
                        addr: bound,
                    });
                }
                // A chosen port taken for TCP only: choose again.
                Err(e) if addr.port() == 0 => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no port free for UDP and TCP")))
    }

    /// The address served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Serves `handler` on `listeners` until `shutdown` turns true, then stops accepting and lets
/// requests in flight finish.
pub async fn serve(
    listeners: Listeners,
    handler: Handler,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), hickory_server::net::NetError> {
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(listeners.udp);
    server.register_listener(listeners.tcp, Duration::from_secs(10), 16);
    let token = server.shutdown_token().clone();
    tokio::spawn(async move {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        token.cancel();
    });
    server.block_until_done().await
}

#[cfg(test)]
mod tests;
