//! Pod sandboxes: what a sandbox is on disk, and the files every container of it shares
//! (resolv.conf, hosts, hostname). Namespaces, addresses and the node network live in the
//! submodules.

pub mod ipam;
pub mod namespaces;
pub mod network;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_cri::v1::{DnsConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};

use network::HostPortMapping;

/// A sandbox as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The sandbox id.
    pub id: String,
    /// The config it was created with.
    pub config: PodSandboxConfig,
    /// The runtime handler asked for.
    pub runtime_handler: String,
    /// Creation time, nanoseconds since the epoch.
    pub created_at: i64,
    /// Whether it is ready (false once stopped).
    pub ready: bool,
    /// The pod address, unless host network.
    pub ip: Option<Ipv4Addr>,
    /// Pinned network namespace, unless host network.
    pub netns: Option<PathBuf>,
    /// Pinned IPC namespace, unless host IPC.
    pub ipcns: Option<PathBuf>,
    /// Pinned UTS namespace, unless host network.
    pub utsns: Option<PathBuf>,
    /// The cgroup parent of its containers.
    pub cgroup_parent: String,
    /// Its hostPorts.
    pub host_ports: Vec<HostPortMapping>,
}

impl SandboxRecord {
    /// Whether the pod uses the node's network namespace.
    pub fn host_network(&self) -> bool {
        namespace_mode(&self.config, |o| o.network) == NODE_MODE
    }

    /// Whether the pod uses the node's IPC namespace.
    pub fn host_ipc(&self) -> bool {
        namespace_mode(&self.config, |o| o.ipc) == NODE_MODE
    }

    /// Whether the pod uses the node's PID namespace.
    pub fn host_pid(&self) -> bool {
        namespace_mode(&self.config, |o| o.pid) == NODE_MODE
    }

    /// The hostname containers see.
    pub fn hostname(&self) -> String {
        if self.host_network() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default()
        } else {
            self.config.hostname.clone()
        }
    }
}

/// `NamespaceMode::NODE` in CRI.
pub const NODE_MODE: i32 = 2;

/// A namespace mode from the sandbox's security context (0, POD, when unset).
pub fn namespace_mode(
    config: &PodSandboxConfig,
    pick: impl Fn(&k8s_cri::v1::NamespaceOption) -> i32,
) -> i32 {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map_or(0, pick)
}

/// resolv.conf for a pod: the DNS config when one is given, otherwise the node's own.
pub fn render_resolv_conf(dns: Option<&DnsConfig>, node_resolv_conf: &str) -> String {
    let Some(dns) =
        dns.filter(|d| !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty())
    else {
        return node_resolv_conf.to_string();
    };
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// /etc/hosts for a pod: loopback names, then the pod's address with its hostname.
pub fn render_hosts(ip: Option<Ipv4Addr>, hostname: &str) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config_or_node() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            render_resolv_conf(Some(&dns), "nameserver 1.1.1.1\n"),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(
            render_resolv_conf(None, "nameserver 1.1.1.1\n"),
            "nameserver 1.1.1.1\n"
        );
        assert_eq!(
            render_resolv_conf(Some(&DnsConfig::default()), "x\n"),
            "x\n"
        );
    }

    #[test]
    fn hosts_name_the_pod() {
        let hosts = render_hosts(Some(Ipv4Addr::new(10, 88, 0, 4)), "web-0");
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("10.88.0.4\tweb-0\n"));
    }
}
