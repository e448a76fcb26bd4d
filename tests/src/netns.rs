//! Network-namespace plumbing for the service proxy tests: point-to-point veth links between
//! namespaces, running a closure with its sockets inside a namespace, plain HTTP GETs, and a
//! TCP forwarder that makes the host's loopback API server reachable on the same loopback
//! address inside a namespace (so the admin kubeconfig works there unchanged).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use crate::Process;
use crate::cri::TestNetns;

/// A stand-in pod: a namespace linked to `node` (the node's end `node_if` at `<prefix>.1/24`,
/// the pod's `eth0` at `<prefix>.2/24` with the node as its default gateway) serving `page` at
/// `/` with busybox httpd on port 8080. Dropping it removes the namespace and stops the server.
pub struct HttpdPod {
    /// The pod's namespace.
    pub ns: TestNetns,
    /// Its address.
    pub ip: String,
    _server: Process,
}

impl HttpdPod {
    /// Starts the pod; its page and server log go under `dir`.
    pub fn start(
        node: &TestNetns,
        node_if: &str,
        prefix: &str,
        page: &str,
        dir: &std::path::Path,
    ) -> HttpdPod {
        let ns = TestNetns::create();
        let ip = format!("{prefix}.2");
        link(
            node,
            node_if,
            &format!("{prefix}.1/24"),
            &ns,
            "eth0",
            &format!("{ip}/24"),
        );
        default_route(&ns, &format!("{prefix}.1"));
        let www = dir.join(format!("www-{}", ns.name));
        std::fs::create_dir_all(&www).expect("page directory");
        std::fs::write(www.join("index.html"), page).expect("page");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &ns.name,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
        ])
        .arg(&www);
        let log = dir.join(format!("httpd-{}.log", ns.name));
        let server = Process::spawn("httpd", cmd, log).expect("httpd");
        HttpdPod {
            ns,
            ip,
            _server: server,
        }
    }
}

/// Runs `args` (program first), panicking with its output when it fails.
#[track_caller]
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread that has joined namespace `ns` (sockets it opens live there).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// A veth pair between `a` and `b` (names local to each namespace, so nothing is created in
/// the host's), addresses `a_cidr` and `b_cidr` ("10.0.0.1/24"), both up.
pub fn link(a: &TestNetns, a_if: &str, a_cidr: &str, b: &TestNetns, b_if: &str, b_cidr: &str) {
    sh(&[
        "ip", "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    sh(&["ip", "-n", &a.name, "addr", "add", a_cidr, "dev", a_if]);
    sh(&["ip", "-n", &b.name, "addr", "add", b_cidr, "dev", b_if]);
    sh(&["ip", "-n", &a.name, "link", "set", a_if, "up"]);
    sh(&["ip", "-n", &b.name, "link", "set", b_if, "up"]);
}

/// `ip route add default via <gw>` in `ns`.
pub fn default_route(ns: &TestNetns, gw: &str) {
    sh(&["ip", "-n", &ns.name, "route", "add", "default", "via", gw]);
}

/// Sets a sysctl inside `ns`.
pub fn sysctl(ns: &TestNetns, key_value: &str) {
    sh(&["ip", "netns", "exec", &ns.name, "sysctl", "-qw", key_value]);
}

/// Outcome of one HTTP GET.
#[derive(Debug, PartialEq, Eq)]
pub enum Get {
    /// The response body.
    Body(String),
    /// Connection refused (an RST or ICMP port unreachable).
    Refused,
    /// Anything else (timeout, reset mid-way), with the error.
    Failed(String),
}

/// `GET /` on `addr` from inside `ns` with a 2 s budget.
pub fn http_get(ns: &str, addr: SocketAddr) -> Get {
    in_netns(ns, || {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Get::Refused,
            Err(e) => return Get::Failed(e.to_string()),
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if let Err(e) = s.write_all(b"GET / HTTP/1.0\r\n\r\n") {
            return Get::Failed(e.to_string());
        }
        let mut buf = String::new();
        if let Err(e) = s.read_to_string(&mut buf) {
            return Get::Failed(e.to_string());
        }
        match buf.split_once("\r\n\r\n") {
            Some((_, body)) => Get::Body(body.trim().to_string()),
            None => Get::Failed(format!("no HTTP body in {buf:?}")),
        }
    })
}

/// Forwards 127.0.0.1:`port` inside a namespace to 127.0.0.1:`port` on the host; stops
/// accepting when dropped.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    /// Starts forwarding.
    pub fn start(ns: &TestNetns, port: u16) -> Forwarder {
        let listener = in_netns(&ns.name, || {
            TcpListener::bind(("127.0.0.1", port)).expect("bind the forwarder in the namespace")
        });
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((inner, _)) => {
                        let _ = inner.set_nonblocking(false);
                        if let Ok(outer) = TcpStream::connect(("127.0.0.1", port)) {
                            pipe(inner, outer);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Forwarder { stop }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    for (mut from, mut to) in [(a, b2), (b, a2)] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}
