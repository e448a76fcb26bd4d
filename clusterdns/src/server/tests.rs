//! Tests of the request handler with a fake upstream and a capturing response handle.

use std::sync::Mutex;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::zone_handler::MessageResponse;
use k8s_openapi::api::core::v1::Service;

use super::*;
use crate::index::ZoneConfig;

/// An upstream that answers with a script, recording what it was sent; `None` fails.
struct FakeUpstream {
    answer: Option<Message>,
    seen: Mutex<Vec<Message>>,
}

#[async_trait::async_trait]
impl Upstream for FakeUpstream {
    async fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, ForwardError> {
        let query = Message::from_vec(query).expect("the handler forwards a DNS message");
        self.seen.lock().unwrap().push(query.clone());
        let Some(mut answer) = self.answer.clone() else {
            return Err(ForwardError::Io {
                server: "192.0.2.1:53".parse().unwrap(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"),
            });
        };
        answer.metadata.id = query.metadata.id;
        Ok(answer.to_vec().unwrap())
    }
}

/// An upstream that must not be asked.
struct NoUpstream;

#[async_trait::async_trait]
impl Upstream for NoUpstream {
    async fn exchange(&self, query: &[u8]) -> Result<Vec<u8>, ForwardError> {
        panic!(
            "did not expect to forward {:?}",
            Message::from_vec(query).map(|m| m.queries)
        );
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        let info = response
            .destructive_emit(&mut encoder)
            .map_err(|e| NetError::from(e.to_string()))?;
        *self.0.lock().unwrap() = Some(bytes);
        Ok(info)
    }
}

fn zone() -> ZoneConfig {
    ZoneConfig {
        domain: "cluster.local".into(),
        service_range: Some("10.96.0.0/12".parse().unwrap()),
        dns_ip: None,
    }
}

fn loaded() -> Arc<IndexCell> {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIP": "10.96.0.20"},
    }))
    .unwrap();
    let cell = Arc::new(IndexCell::default());
    cell.set(Index::build(zone(), 7, [&svc], []));
    cell
}

async fn ask(handler: &Handler, name: &str, qtype: RecordType) -> Message {
    let mut query = Message::query();
    query.metadata.id = 4242;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let request = Request::from_bytes(
        query.to_vec().unwrap(),
        "127.0.0.1:40000".parse().unwrap(),
        Protocol::Udp,
    )
    .unwrap();
    let capture = Capture::default();
    tokio::time::timeout(
        Duration::from_secs(5),
        handler.handle_request::<_, TokioTime>(&request, capture.clone()),
    )
    .await
    .expect("answered in time");
    let bytes = capture
        .0
        .lock()
        .unwrap()
        .clone()
        .expect("a response was sent");
    let message = Message::from_vec(&bytes).unwrap();
    assert_eq!(message.metadata.id, 4242);
    message
}

#[tokio::test]
async fn a_cluster_name_is_answered_authoritatively_without_forwarding() {
    let handler = Handler::new("cluster.local", loaded(), Arc::new(NoUpstream));
    let answer = ask(&handler, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(answer.answers.len(), 1);
    assert_eq!(answer.answers[0].ttl, 5);
    assert_eq!(
        answer.answers[0].data,
        RData::A(A("10.96.0.20".parse().unwrap()))
    );
}

#[tokio::test]
async fn a_missing_cluster_name_is_nxdomain_with_the_soa_in_authority() {
    let handler = Handler::new("cluster.local", loaded(), Arc::new(NoUpstream));
    let answer = ask(&handler, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(answer.metadata.authoritative);
    assert!(answer.answers.is_empty());
    assert_eq!(answer.authorities.len(), 1);
    assert_eq!(answer.authorities[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn other_names_are_forwarded_and_the_upstream_answer_returned() {
    let mut scripted = Message::query();
    scripted.metadata.message_type = MessageType::Response;
    scripted.metadata.response_code = ResponseCode::NXDomain;
    let upstream = Arc::new(FakeUpstream {
        answer: Some(scripted),
        seen: Mutex::default(),
    });
    let handler = Handler::new("cluster.local", loaded(), upstream.clone());
    let answer = ask(&handler, "example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert!(!answer.metadata.authoritative);
    let seen = upstream.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].queries[0].name().to_ascii(), "example.com.");
}

#[tokio::test]
async fn an_unreachable_upstream_is_servfail() {
    let upstream = Arc::new(FakeUpstream {
        answer: None,
        seen: Mutex::default(),
    });
    let handler = Handler::new("cluster.local", loaded(), upstream);
    let answer = ask(&handler, "example.com.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn cluster_names_are_servfail_until_the_index_is_loaded() {
    let handler = Handler::new(
        "cluster.local",
        Arc::new(IndexCell::default()),
        Arc::new(NoUpstream),
    );
    let answer = ask(&handler, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn resolv_conf_nameservers_are_read_in_order() {
    let text = "# comment\nsearch example.com\nnameserver 192.0.2.1\nnameserver  fe80::1%eth0\n\
                nameserver bogus\noptions ndots:2\nnameserver 127.0.0.53\n";
    assert_eq!(
        resolv_conf_servers(text),
        [
            "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
            "[fe80::1]:53".parse().unwrap(),
            "127.0.0.53:53".parse().unwrap(),
        ]
    );
}

#[tokio::test]
async fn the_forwarder_exchanges_over_udp_and_falls_back_to_tcp_when_truncated() {
    // A tiny upstream: UDP answers truncated, TCP answers in full.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 512];
        let (n, from) = udp.recv_from(&mut buf).await.unwrap();
        let mut reply = Message::from_vec(&buf[..n]).unwrap();
        reply.metadata.message_type = MessageType::Response;
        reply.metadata.truncation = true;
        udp.send_to(&reply.to_vec().unwrap(), from).await.unwrap();
    });
    tokio::spawn(async move {
        let (mut stream, _) = tcp.accept().await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        let mut reply = Message::from_vec(&buf).unwrap();
        reply.metadata.message_type = MessageType::Response;
        reply.answers.push(WireRecord::from_rdata(
            Name::from_ascii("example.com.").unwrap(),
            60,
            RData::A(A("192.0.2.7".parse().unwrap())),
        ));
        let bytes = reply.to_vec().unwrap();
        stream.write_u16(bytes.len() as u16).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
    });
    let forwarder = Forwarder::new(vec![addr], Duration::from_secs(2));
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::A,
    ));
    let answer = forwarder.exchange(&query.to_vec().unwrap()).await.unwrap();
    let answer = Message::from_vec(&answer).unwrap();
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 1);
}

#[tokio::test]
async fn the_forwarder_reports_a_silent_upstream() {
    // Bound but never answering.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forwarder = Forwarder::new(
        vec![silent.local_addr().unwrap()],
        Duration::from_millis(200),
    );
    let mut query = Message::query();
    query.add_query(Query::query(Name::root(), RecordType::NS));
    let error = forwarder
        .exchange(&query.to_vec().unwrap())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no answer in time"), "{error}");
}
