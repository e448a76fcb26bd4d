//! Pod networking on one node: a Linux bridge holding the subnet's gateway address, one veth
//! pair per pod (the pod end renamed eth0 inside the pod's network namespace, with its address
//! and a default route via the bridge), loopback up, and nftables rules for masquerading
//! traffic that leaves the cluster CIDR and for hostPort mappings (DNAT, as the CNI portmap
//! plugin does). Netlink work goes through rtnetlink; the rules go through the [`Firewall`]
//! trait so their generation is tested without a kernel.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::ipam::Ipv4Cidr;

/// Why a network step failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// The step.
        what: String,
        /// The error.
        #[source]
        source: rtnetlink::Error,
    },
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Applying firewall rules failed.
    #[error("nftables: {0}")]
    Firewall(String),
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Io { what, source }
}

/// A hostPort published by a pod.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostPortMapping {
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// The host address to match; empty for any.
    pub host_ip: String,
    /// The port on the node.
    pub host_port: u16,
    /// The pod address.
    pub pod_ip: Ipv4Addr,
    /// The port in the pod.
    pub container_port: u16,
}

/// What the node-level rules need.
#[derive(Debug, Clone)]
pub struct NodeRules<'a> {
    /// The nftables table name (one per daemon instance).
    pub table: &'a str,
    /// This node's pod subnet.
    pub subnet: Ipv4Cidr,
    /// The whole cluster's pod network; traffic to it is not masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    /// The bridge name.
    pub bridge: &'a str,
    /// Every hostPort of every running sandbox.
    pub host_ports: &'a [HostPortMapping],
}

/// Renders the node's nftables ruleset. The table is deleted and recreated in one transaction
/// so the kernel never holds half a ruleset.
pub fn render_node_rules(rules: &NodeRules<'_>) -> String {
    let NodeRules {
        table,
        subnet,
        cluster_cidr,
        bridge,
        host_ports,
    } = rules;
    let mut dnat = String::new();
    for m in host_ports.iter() {
        let proto = m.protocol.to_ascii_lowercase();
        let daddr = if m.host_ip.is_empty() || m.host_ip == "0.0.0.0" {
            "fib daddr type local ".to_string()
        } else {
            format!("ip daddr {} ", m.host_ip)
        };
        dnat.push_str(&format!(
            "    {daddr}{proto} dport {} dnat to {}:{}\n",
            m.host_port, m.pod_ip, m.container_port
        ));
    }
    format!(
        "table ip {table} {{}}
delete table ip {table}
table ip {table} {{
  chain hostports {{
{dnat}  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump hostports
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    jump hostports
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr {subnet} ip daddr != {cluster_cidr} masquerade
    ct status dnat oifname \"{bridge}\" ip saddr != {subnet} masquerade
  }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname \"{bridge}\" accept
    oifname \"{bridge}\" accept
  }}
}}
"
    )
}

/// Applies whole nftables rulesets.
pub trait Firewall: Send + Sync {
    /// Loads `ruleset` atomically.
    fn apply(&self, ruleset: &str) -> Result<(), NetworkError>;
    /// Deletes `table` if it exists.
    fn delete_table(&self, table: &str) -> Result<(), NetworkError>;
}

/// The `nft` command.
#[derive(Debug, Default)]
pub struct NftCommand;

impl NftCommand {
    fn run(&self, input: &str) -> Result<(), NetworkError> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                NetworkError::Firewall(format!(
                    "cannot run nft (is the nftables package installed?): {e}"
                ))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(io_err("write to nft"))?;
        }
        let out = child.wait_with_output().map_err(io_err("wait for nft"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NetworkError::Firewall(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
}

impl Firewall for NftCommand {
    fn apply(&self, ruleset: &str) -> Result<(), NetworkError> {
        self.run(ruleset)
    }

    fn delete_table(&self, table: &str) -> Result<(), NetworkError> {
        self.run(&format!("table ip {table} {{}}\ndelete table ip {table}\n"))
    }
}

/// The host end of a pod's veth pair (at most 15 bytes, as interface names are).
pub fn host_veth_name(sandbox_id: &str) -> String {
    let short: String = sandbox_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(11)
        .collect();
    format!("veth{short}")
}

fn netlink_handle() -> Result<Handle, NetworkError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(io_err("open netlink socket"))?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

const fn libc_enodev() -> i32 {
    19
}

const EEXIST: i32 = 17;

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -EEXIST)
}

/// Ensures the bridge exists, is up and holds the gateway address, and IPv4 forwarding is on.
pub async fn ensure_bridge(bridge: &str, subnet: Ipv4Cidr) -> Result<(), NetworkError> {
    let handle = netlink_handle()?;
    let index = match link_index(&handle, bridge).await? {
        Some(i) => i,
        None => {
            let added = handle
                .link()
                .add(LinkBridge::new(bridge).build())
                .execute()
                .await;
            if let Err(e) = added
                && !is_exists(&e)
            {
                return Err(nl(format!("create bridge {bridge}"))(e));
            }
            link_index(&handle, bridge)
                .await?
                .ok_or_else(|| NetworkError::Firewall(format!("bridge {bridge} vanished")))?
        }
    };
    if let Err(e) = handle
        .address()
        .add(index, IpAddr::V4(subnet.gateway()), subnet.prefix)
        .execute()
        .await
        && !is_exists(&e)
    {
        return Err(nl(format!("add {} to {bridge}", subnet.gateway()))(e));
    }
    handle
        .link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("set {bridge} up")))?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(io_err("enable net.ipv4.ip_forward"))?;
    Ok(())
}

/// Deletes the bridge (at shutdown of a node network).
pub async fn delete_bridge(bridge: &str) -> Result<(), NetworkError> {
    let handle = netlink_handle()?;
    if let Some(index) = link_index(&handle, bridge).await? {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(nl(format!("delete {bridge}")))?;
    }
    Ok(())
}

/// Connects the network namespace pinned at `netns` to the bridge with address `ip`.
pub async fn attach(
    bridge: &str,
    sandbox_id: &str,
    netns: &Path,
    ip: Ipv4Addr,
    subnet: Ipv4Cidr,
) -> Result<(), NetworkError> {
    let handle = netlink_handle()?;
    let host = host_veth_name(sandbox_id);
    let peer = format!("{}p", &host[..host.len().min(14)]);
    let bridge_index = link_index(&handle, bridge)
        .await?
        .ok_or_else(|| NetworkError::Firewall(format!("bridge {bridge} does not exist")))?;
    // A leftover pair from an interrupted attempt goes first.
    if let Some(old) = link_index(&handle, &host).await? {
        let _ = handle.link().del(old).execute().await;
    }
    handle
        .link()
        .add(LinkVeth::new(&host, &peer).build())
        .execute()
        .await
        .map_err(nl(format!("create veth {host}")))?;
    let host_index = link_index(&handle, &host)
        .await?
        .ok_or_else(|| NetworkError::Firewall(format!("veth {host} vanished")))?;
    let ns_file = File::open(netns).map_err(io_err(format!("open {}", netns.display())))?;
    let moved = async {
        handle
            .link()
            .change(
                LinkUnspec::new_with_index(host_index)
                    .controller(bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("attach {host} to {bridge}")))?;
        handle
            .link()
            .change(
                LinkUnspec::new_with_name(&peer)
                    .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&ns_file))
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(format!("move {peer} into the pod's network namespace")))
    };
    if let Err(e) = moved.await {
        let _ = handle.link().del(host_index).execute().await;
        return Err(e);
    }
    let inside = in_namespace(ns_file, move |handle| async move {
        configure_pod_side(&handle, &peer, ip, subnet).await
    });
    let result = inside.await;
    if result.is_err() {
        let _ = handle.link().del(host_index).execute().await;
    }
    result
}

async fn configure_pod_side(
    handle: &Handle,
    peer: &str,
    ip: Ipv4Addr,
    subnet: Ipv4Cidr,
) -> Result<(), NetworkError> {
    if let Some(lo) = link_index(handle, "lo").await? {
        handle
            .link()
            .change(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("set lo up"))?;
    }
    let index = link_index(handle, peer)
        .await?
        .ok_or_else(|| NetworkError::Firewall(format!("{peer} is not in the pod's namespace")))?;
    handle
        .link()
        .change(LinkUnspec::new_with_index(index).name("eth0").build())
        .execute()
        .await
        .map_err(nl("rename the pod interface to eth0"))?;
    if let Err(e) = handle
        .address()
        .add(index, IpAddr::V4(ip), subnet.prefix)
        .execute()
        .await
        && !is_exists(&e)
    {
        return Err(nl(format!("add {ip}/{} to eth0", subnet.prefix))(e));
    }
    handle
        .link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("set eth0 up"))?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(subnet.gateway())
        .build();
    if let Err(e) = handle.route().add(route).execute().await
        && !is_exists(&e)
    {
        return Err(nl(format!(
            "add the default route via {}",
            subnet.gateway()
        ))(e));
    }
    Ok(())
}

/// Runs `work` with a netlink handle opened inside the network namespace `ns_file`. The socket
/// is created on a dedicated thread that has joined the namespace, so the daemon's own threads
/// never change namespace.
async fn in_namespace<F, Fut>(ns_file: File, work: F) -> Result<(), NetworkError>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), NetworkError>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| {
            nix::sched::setns(ns_file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                |e| NetworkError::Io {
                    what: "enter the pod's network namespace".into(),
                    source: e.into(),
                },
            )?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_err("start a netlink runtime"))?;
            runtime.block_on(async move {
                let handle = netlink_handle()?;
                work(handle).await
            })
        })();
        let _ = tx.send(result);
    });
    rx.await
        .unwrap_or_else(|_| Err(NetworkError::Firewall("netlink thread ended early".into())))
}

/// Removes the pod's veth pair (the pod end goes with it). A missing pair is fine.
pub async fn detach(sandbox_id: &str) -> Result<(), NetworkError> {
    let handle = netlink_handle()?;
    let host = host_veth_name(sandbox_id);
    if let Some(index) = link_index(&handle, &host).await? {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(nl(format!("delete {host}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_interface_names() {
        let name = host_veth_name("0123456789abcdef0123456789abcdef");
        assert!(name.len() <= 15, "{name}");
        assert_eq!(name, "veth0123456789a");
    }

    #[test]
    fn renders_masquerade_and_host_ports() {
        let maps = [HostPortMapping {
            protocol: "TCP".into(),
            host_ip: String::new(),
            host_port: 8080,
            pod_ip: Ipv4Addr::new(10, 88, 0, 5),
            container_port: 80,
        }];
        let rules = render_node_rules(&NodeRules {
            table: "cri-test",
            subnet: "10.88.0.0/24".parse().unwrap(),
            cluster_cidr: "10.88.0.0/16".parse().unwrap(),
            bridge: "cri0",
            host_ports: &maps,
        });
        assert!(
            rules.contains("ip saddr 10.88.0.0/24 ip daddr != 10.88.0.0/16 masquerade"),
            "{rules}"
        );
        assert!(
            rules.contains("fib daddr type local tcp dport 8080 dnat to 10.88.0.5:80"),
            "{rules}"
        );
        assert!(rules.starts_with("table ip cri-test {}\ndelete table ip cri-test\n"));
    }
}
