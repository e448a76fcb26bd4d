//! The cluster DNS in the apiserver-lite process: its flags and how they become
//! [`clusterdns::Options`]. Like the controllers it is an ordinary API client of this server
//! (or of any API server with `--dns-only --kubeconfig`).

use std::net::{IpAddr, SocketAddr};

use clusterdns::index::Ipv4Cidr;

/// Cluster DNS flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsFlags {
    /// Run the cluster DNS in this process (as a client of this server).
    #[arg(long = "cluster-dns", default_value_t = true, action = clap::ArgAction::Set)]
    pub cluster_dns: bool,
    /// Address (UDP and TCP) the cluster DNS listens on. Default: the advertise address, port
    /// 53, or a free port on that address when 53 is taken (the kube-dns EndpointSlice names
    /// the port actually served).
    #[arg(long)]
    pub dns_bind_address: Option<SocketAddr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// ClusterIP of the kube-dns Service (default: the 10th address of the service range,
    /// 10.96.0.10, as kubeadm takes it).
    #[arg(long)]
    pub cluster_dns_ip: Option<IpAddr>,
    /// Resolvers for names outside the cluster, `ip` or `ip:port`, comma separated (default:
    /// the nameservers of /etc/resolv.conf).
    #[arg(long, value_delimiter = ',', value_parser = parse_upstream)]
    pub dns_upstream: Vec<SocketAddr>,
    /// Run only the cluster DNS, against the API server of `--kubeconfig`.
    #[arg(long)]
    pub dns_only: bool,
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse()
        .map_err(|_| format!("{s:?}: expected an address, `ip` or `ip:port`"))
}

impl DnsFlags {
    /// Options for a server next to an API server advertised at `advertise`, whose service
    /// range is `service_range` (`apiserver-lite`'s CIDR, given as text).
    pub fn options(
        &self,
        advertise: IpAddr,
        service_range: &str,
    ) -> Result<clusterdns::Options, String> {
        let range: Ipv4Cidr = service_range.parse()?;
        let dns_ip = self.cluster_dns_ip.unwrap_or(IpAddr::V4(range.nth(10)));
        if let IpAddr::V4(v4) = dns_ip
            && !range.contains(v4)
        {
            return Err(format!(
                "--cluster-dns-ip {dns_ip} is not in the service range {service_range}"
            ));
        }
        Ok(clusterdns::Options {
            domain: self.cluster_domain.clone(),
            bind: self
                .dns_bind_address
                .unwrap_or(SocketAddr::new(advertise, 53)),
            bind_fallback: self.dns_bind_address.is_none(),
            dns_ip,
            service_range: Some(range),
            upstreams: self.dns_upstream.clone(),
            resolv_conf: "/etc/resolv.conf".into(),
            publish: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        dns: DnsFlags,
    }

    #[test]
    fn defaults_serve_cluster_local_on_the_advertise_address_with_the_tenth_service_ip() {
        let cli = Cli::parse_from(["x"]);
        assert!(cli.dns.cluster_dns);
        let o = cli
            .dns
            .options("192.168.1.5".parse().unwrap(), "10.96.0.0/12")
            .unwrap();
        assert_eq!(o.domain, "cluster.local");
        assert_eq!(o.bind, "192.168.1.5:53".parse().unwrap());
        assert!(o.bind_fallback);
        assert_eq!(o.dns_ip, "10.96.0.10".parse::<IpAddr>().unwrap());
        assert!(o.upstreams.is_empty());
    }

    #[test]
    fn flags_override_everything_and_an_explicit_bind_address_does_not_fall_back() {
        let cli = Cli::parse_from([
            "x",
            "--cluster-dns=false",
            "--dns-bind-address",
            "127.0.0.1:5353",
            "--cluster-domain",
            "corp.example",
            "--cluster-dns-ip",
            "10.0.0.53",
            "--dns-upstream",
            "192.0.2.1,192.0.2.2:5300",
        ]);
        assert!(!cli.dns.cluster_dns);
        let o = cli
            .dns
            .options("127.0.0.1".parse().unwrap(), "10.0.0.0/16")
            .unwrap();
        assert_eq!(o.bind, "127.0.0.1:5353".parse().unwrap());
        assert!(!o.bind_fallback);
        assert_eq!(o.domain, "corp.example");
        assert_eq!(o.dns_ip, "10.0.0.53".parse::<IpAddr>().unwrap());
        assert_eq!(
            o.upstreams,
            [
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "192.0.2.2:5300".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_cluster_dns_ip_outside_the_service_range_is_refused() {
        let cli = Cli::parse_from(["x", "--cluster-dns-ip", "192.0.2.53"]);
        let err = cli
            .dns
            .options("127.0.0.1".parse().unwrap(), "10.96.0.0/12")
            .unwrap_err();
        assert!(err.contains("not in the service range"), "{err}");
    }
}
