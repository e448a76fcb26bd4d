//! The cluster DNS: serves the cluster domain (default `cluster.local`) from the API, as
//! CoreDNS's kubernetes plugin does, and forwards other names to the host's resolvers.
//!
//! - [`index`]: the pure part: Services and EndpointSlices in, the answer to a question out.
//! - [`server`]: the hickory request handler (index or upstream), UDP and TCP listeners.
//! - [`watch`]: reflectors that keep the index current.
//! - [`publish`]: the `kube-dns` Service and its EndpointSlice, so a service proxy routes the
//!   cluster DNS IP to this server.
//!
//! [`Dns::bind`] then [`Dns::run`] is the whole server, as apiserver-lite runs it.

pub mod index;
pub mod publish;
pub mod server;
pub mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use index::{Ipv4Cidr, ZoneConfig};
use server::{Forwarder, Handler, IndexCell, Listeners};

/// What the cluster DNS serves and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cluster domain.
    pub domain: String,
    /// Address to listen on (UDP and TCP).
    pub bind: SocketAddr,
    /// When binding `bind` fails, listen on the same address with a port the system picks
    /// (published in the EndpointSlice) instead of failing.
    pub bind_fallback: bool,
    /// The kube-dns Service's ClusterIP.
    pub dns_ip: IpAddr,
    /// The service range (reverse names answered here).
    pub service_range: Option<Ipv4Cidr>,
    /// Upstream resolvers; empty: the `nameserver`s of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    /// The resolv.conf read when `upstreams` is empty.
    pub resolv_conf: PathBuf,
    /// Create the kube-dns Service and EndpointSlice.
    pub publish: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Listening failed.
    #[error("listening for DNS on {addr} (UDP and TCP): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server's tasks failed.
    #[error("serving DNS: {0}")]
    Serve(String),
}

/// A cluster DNS server, bound and not serving yet.
#[derive(Debug)]
pub struct Dns {
    options: Options,
    listeners: Listeners,
    upstreams: Vec<SocketAddr>,
}

impl Dns {
    /// Binds the listeners (falling back to a free port if allowed) and reads the upstreams.
    pub async fn bind(options: Options) -> Result<Self, DnsError> {
        let listeners = match Listeners::bind(options.bind).await {
            Ok(l) => l,
            Err(error) if options.bind_fallback && options.bind.port() != 0 => {
                let fallback = SocketAddr::new(options.bind.ip(), 0);
                tracing::warn!(bind = %options.bind, %error, "DNS port not available: using a free port");
                Listeners::bind(fallback)
                    .await
                    .map_err(|source| DnsError::Bind {
                        addr: fallback,
                        source,
                    })?
            }
            Err(source) => {
                return Err(DnsError::Bind {
                    addr: options.bind,
                    source,
                });
            }
        };
        let mut upstreams = if options.upstreams.is_empty() {
            match std::fs::read_to_string(&options.resolv_conf) {
                Ok(text) => server::resolv_conf_servers(&text),
                Err(error) => {
                    tracing::warn!(path = %options.resolv_conf.display(), %error, "no upstream resolvers: names outside the cluster get SERVFAIL");
                    Vec::new()
                }
            }
        } else {
            options.upstreams.clone()
        };
        // Never forward to ourselves.
        let ours = listeners.local_addr();
        upstreams.retain(|u| {
            *u != ours
                && !(ours.ip().is_unspecified() && u.port() == ours.port() && u.ip().is_loopback())
        });
        Ok(Dns {
            options,
            listeners,
            upstreams,
        })
    }

    /// The address served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners.local_addr()
    }

    /// The upstream resolvers other names go to.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Serves until `shutdown` turns true: watches the API through `client`, publishes the
    /// kube-dns Service (if asked) and answers on the listeners.
    pub async fn run(
        self,
        client: kube::Client,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), DnsError> {
        let serving = self.local_addr();
        let zone = ZoneConfig {
            domain: self.options.domain.clone(),
            service_range: self.options.service_range,
            dns_ip: Some(self.options.dns_ip),
        };
        let cell = Arc::new(IndexCell::default());
        let watch = tokio::spawn(watch::run(
            client.clone(),
            zone,
            cell.clone(),
            shutdown.clone(),
        ));
        let publish = self.options.publish.then(|| {
            tokio::spawn(publish::run(
                client,
                self.options.dns_ip,
                serving,
                shutdown.clone(),
            ))
        });
        let upstream = Arc::new(Forwarder::new(self.upstreams, Duration::from_secs(2)));
        let handler = Handler::new(&self.options.domain, cell, upstream);
        tracing::info!(%serving, domain = %self.options.domain, dns_ip = %self.options.dns_ip, "cluster DNS serving");
        let result = server::serve(self.listeners, handler, shutdown).await;
        let _ = watch.await;
        if let Some(publish) = publish {
            let _ = publish.await;
        }
        tracing::info!("cluster DNS stopped");
        result.map_err(|e| DnsError::Serve(e.to_string()))
    }
}
