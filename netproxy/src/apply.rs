//! The thin layers that touch the kernel: `nft -f -` for an atomic batch, `nft -j list` to read
//! back which chains and sets our table holds, and `conntrack -D` for stale UDP flows. Each is
//! a narrow trait so the sync logic is tested with recording fakes.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::model::{Protocol, ServicePort};
use crate::rules::nft::{Existing, FAMILY_TABLE, parse_existing};

/// A command that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// Program name.
        program: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The program exited with a failure.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// Command line (abridged).
        command: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Its standard error.
        stderr: String,
    },
    /// Its output did not parse.
    #[error("parsing the output of {command}: {source}")]
    Parse {
        /// Command line.
        command: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Our nftables table.
pub trait Nft: Send + Sync {
    /// Applies a script as one transaction.
    fn apply(&self, script: &str) -> Result<(), ApplyError>;
    /// Chains and sets our table holds now.
    fn existing(&self) -> Result<Existing, ApplyError>;
    /// Deletes our table; false when there was none.
    fn delete_table(&self) -> Result<bool, ApplyError>;
}

/// The conntrack table.
pub trait Conntrack: Send + Sync {
    /// Deletes the UDP entries matching `flow`.
    fn delete(&self, flow: &UdpFlow) -> Result<(), ApplyError>;
}

/// UDP conntrack entries to delete: to `dst:port` (any address for a node port), and when
/// `endpoint` is given only those NATed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UdpFlow {
    /// Original destination address; None for node ports (any local address).
    pub dst: Option<Ipv4Addr>,
    /// Original destination port.
    pub port: u16,
    /// The endpoint the entries were NATed to.
    pub endpoint: Option<Ipv4Addr>,
}

impl UdpFlow {
    /// `conntrack` arguments selecting these entries.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["-D".into(), "-p".into(), "udp".into()];
        if let Some(d) = self.dst {
            a.extend(["--orig-dst".into(), d.to_string()]);
        }
        a.extend(["--orig-port-dst".into(), self.port.to_string()]);
        if let Some(e) = self.endpoint {
            a.extend(["--dst-nat".into(), e.to_string()]);
        }
        a
    }
}

/// The UDP flows to forget when a service port goes from `old` to `new`: flows NATed to
/// endpoints that went away, and every flow to a port that had no endpoint and now has one
/// (so a client rejected a moment ago is not stuck on the stale entry).
pub fn stale_udp_flows(old: Option<&ServicePort>, new: Option<&ServicePort>) -> Vec<UdpFlow> {
    let Some(port) = old.or(new) else {
        return Vec::new();
    };
    if port.name.protocol != Protocol::Udp {
        return Vec::new();
    }
    let mut out = Vec::new();
    let dests = |p: &ServicePort| -> Vec<(Option<Ipv4Addr>, u16)> {
        let mut d: Vec<(Option<Ipv4Addr>, u16)> = p
            .cluster_ips
            .iter()
            .chain(&p.external_ips)
            .chain(&p.lb_ips)
            .map(|ip| (Some(*ip), p.port))
            .collect();
        if let Some(np) = p.node_port {
            d.push((None, np));
        }
        d
    };
    if let Some(old) = old {
        let kept: Vec<Ipv4Addr> = new
            .map(|n| n.all_endpoints().iter().map(|e| e.ip).collect())
            .unwrap_or_default();
        let mut gone: Vec<Ipv4Addr> = old
            .all_endpoints()
            .iter()
            .map(|e| e.ip)
            .filter(|ip| !kept.contains(ip))
            .collect();
        gone.dedup();
        for (dst, port) in dests(old) {
            for ep in &gone {
                out.push(UdpFlow {
                    dst,
                    port,
                    endpoint: Some(*ep),
                });
            }
        }
    }
    if let Some(new) = new {
        let had = old.is_some_and(|o| !o.all_endpoints().is_empty());
        if !had && !new.all_endpoints().is_empty() {
            for (dst, port) in dests(new) {
                out.push(UdpFlow {
                    dst,
                    port,
                    endpoint: None,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ApplyError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ApplyError::Spawn {
            program: program.into(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as nft's own error below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ApplyError::Spawn {
            program: program.into(),
            source,
        })?;
    if !out.status.success() {
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        stderr.truncate(4000);
        return Err(ApplyError::Failed {
            command: format!("{program} {}", args.join(" ")),
            status: out.status,
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `nft` command-line tool.
#[derive(Debug, Default, Clone)]
pub struct NftCommand;

impl Nft for NftCommand {
    fn apply(&self, script: &str) -> Result<(), ApplyError> {
        run("nft", &["-f", "-"], Some(script)).map(drop)
    }

    fn existing(&self) -> Result<Existing, ApplyError> {
        let mut items = Vec::new();
        for what in ["chains", "sets", "maps"] {
            let out = run("nft", &["-j", "list", what, "ip"], None)?;
            let v: serde_json::Value =
                serde_json::from_str(&out).map_err(|source| ApplyError::Parse {
                    command: format!("nft -j list {what} ip"),
                    source,
                })?;
            items.extend(v["nftables"].as_array().cloned().unwrap_or_default());
        }
        let doc = serde_json::json!({ "nftables": items }).to_string();
        parse_existing(&doc).map_err(|source| ApplyError::Parse {
            command: "nft -j list".into(),
            source,
        })
    }

    fn delete_table(&self) -> Result<bool, ApplyError> {
        let (family, table) = FAMILY_TABLE.split_once(' ').unwrap_or(("ip", FAMILY_TABLE));
        match run("nft", &["list", "table", family, table], None) {
            Ok(_) => run("nft", &["delete", "table", family, table], None).map(|_| true),
            Err(ApplyError::Failed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// iptables through `iptables-restore --noflush` and `iptables-save` (whichever iptables the
/// host selects: nft or legacy).
pub trait Iptables: Send + Sync {
    /// Applies `iptables-restore --noflush` input (each table one commit).
    fn restore(&self, input: &str) -> Result<(), ApplyError>;
    /// `iptables-save -t <table>`.
    fn save(&self, table: &str) -> Result<String, ApplyError>;
    /// Inserts `-j target` (with `matches`) at the top of a built-in chain unless present.
    fn ensure_jump(
        &self,
        table: &str,
        chain: &str,
        target: &str,
        matches: &str,
    ) -> Result<(), ApplyError>;
    /// Removes that jump; false when it was not there.
    fn delete_jump(
        &self,
        table: &str,
        chain: &str,
        target: &str,
        matches: &str,
    ) -> Result<bool, ApplyError>;
}

/// The iptables command-line tools.
#[derive(Debug, Default, Clone)]
pub struct IptablesCommand;

fn jump_args<'a>(
    op: &'a str,
    table: &'a str,
    chain: &'a str,
    target: &'a str,
    matches: &'a str,
) -> Vec<&'a str> {
    let mut a = vec!["-w", "-t", table, op, chain];
    a.extend(matches.split_whitespace());
    a.extend([
        "-m",
        "comment",
        "--comment",
        "kube-lite-proxy",
        "-j",
        target,
    ]);
    a
}

impl Iptables for IptablesCommand {
    fn restore(&self, input: &str) -> Result<(), ApplyError> {
        run("iptables-restore", &["-w", "--noflush"], Some(input)).map(drop)
    }

    fn save(&self, table: &str) -> Result<String, ApplyError> {
        run("iptables-save", &["-t", table], None)
    }

    fn ensure_jump(
        &self,
        table: &str,
        chain: &str,
        target: &str,
        matches: &str,
    ) -> Result<(), ApplyError> {
        if run(
            "iptables",
            &jump_args("-C", table, chain, target, matches),
            None,
        )
        .is_ok()
        {
            return Ok(());
        }
        let mut args = jump_args("-I", table, chain, target, matches);
        args.insert(5, "1");
        run("iptables", &args, None).map(drop)
    }

    fn delete_jump(
        &self,
        table: &str,
        chain: &str,
        target: &str,
        matches: &str,
    ) -> Result<bool, ApplyError> {
        match run(
            "iptables",
            &jump_args("-D", table, chain, target, matches),
            None,
        ) {
            Ok(_) => Ok(true),
            Err(ApplyError::Failed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Removes everything of ours from iptables: the jumps, then our chains (flushed, deleted).
pub fn iptables_cleanup(ipt: &dyn Iptables) -> Result<usize, ApplyError> {
    use crate::rules::iptables::{JUMPS, parse_chains};
    for (table, chain, target, matches) in JUMPS {
        while ipt.delete_jump(table, chain, target, matches)? {}
    }
    let mut removed = 0;
    let mut input = String::new();
    for table in ["nat", "filter"] {
        let chains = parse_chains(&ipt.save(table)?);
        if chains.is_empty() {
            continue;
        }
        input.push_str(&format!("*{table}\n"));
        for c in &chains {
            input.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &chains {
            input.push_str(&format!("-X {c}\n"));
        }
        input.push_str("COMMIT\n");
        removed += chains.len();
    }
    if !input.is_empty() {
        ipt.restore(&input)?;
    }
    Ok(removed)
}

/// The `conntrack` tool (Debian package `conntrack`).
#[derive(Debug, Default, Clone)]
pub struct ConntrackCommand;

impl Conntrack for ConntrackCommand {
    fn delete(&self, flow: &UdpFlow) -> Result<(), ApplyError> {
        let args = flow.args();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        match run("conntrack", &refs, None) {
            // conntrack exits 1 when nothing matched ("0 flow entries have been deleted").
            Err(ApplyError::Failed { stderr, .. }) if stderr.contains("0 flow entries") => Ok(()),
            other => other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, ServicePortName};

    fn udp(endpoints: &[&str], node_port: Option<u16>) -> ServicePort {
        let eps: Vec<Endpoint> = endpoints
            .iter()
            .map(|ip| Endpoint {
                ip: ip.parse().unwrap(),
                port: 5353,
                local: true,
            })
            .collect();
        ServicePort {
            name: ServicePortName {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
                port: "dns".into(),
                protocol: Protocol::Udp,
            },
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            port: 53,
            node_port,
            external_ips: vec![],
            lb_ips: vec![],
            affinity_seconds: None,
            external_local: false,
            internal_local: false,
            cluster_endpoints: eps.clone(),
            external_endpoints: eps,
        }
    }

    #[test]
    fn flows_to_an_endpoint_that_went_away_are_flushed() {
        let old = udp(&["10.244.0.2", "10.244.0.3"], Some(30053));
        let new = udp(&["10.244.0.3"], Some(30053));
        let flows = stale_udp_flows(Some(&old), Some(&new));
        assert_eq!(flows.len(), 2);
        assert!(
            flows
                .iter()
                .all(|f| f.endpoint == Some("10.244.0.2".parse().unwrap()))
        );
        assert_eq!(
            flows[1].args().join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.244.0.2"
        );
        assert_eq!(
            flows[0].args().join(" "),
            "-D -p udp --orig-port-dst 30053 --dst-nat 10.244.0.2"
        );
    }

    #[test]
    fn a_port_getting_its_first_endpoint_forgets_every_flow_to_it() {
        let flows = stale_udp_flows(Some(&udp(&[], None)), Some(&udp(&["10.244.0.2"], None)));
        assert_eq!(
            flows,
            vec![UdpFlow {
                dst: Some("10.96.0.10".parse().unwrap()),
                port: 53,
                endpoint: None
            }]
        );
    }

    #[test]
    fn tcp_ports_and_unchanged_endpoints_need_no_flush() {
        let a = udp(&["10.244.0.2"], None);
        assert!(stale_udp_flows(Some(&a), Some(&a)).is_empty());
        let mut t = a.clone();
        t.name.protocol = Protocol::Tcp;
        assert!(stale_udp_flows(Some(&t), None).is_empty());
        assert_eq!(stale_udp_flows(Some(&a), None).len(), 1, "service removed");
    }
}
