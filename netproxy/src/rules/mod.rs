//! Pure rule generators: the model of service ports in, an nftables or iptables script out.
//! What both backends share lives here: the proxy's configuration, CIDRs, chain-name hashing
//! and the masquerade mark.

pub mod iptables;
pub mod nft;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The packet mark bit asking for masquerade (upstream's 0x4000).
pub const MASQ_MARK: u32 = 0x4000;

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid IPv4 CIDR {0:?} (want a.b.c.d/n)")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, p.parse::<u8>().map_err(|_| err())?),
            None => (s, 32),
        };
        let ip: Ipv4Addr = ip.parse().map_err(|_| err())?;
        if prefix > 32 {
            return Err(err());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            addr: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the generators need beyond the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `--cluster-cidr`: traffic to a cluster IP from outside it is masqueraded. None: no
    /// such masquerade (as upstream without `--cluster-cidr`).
    pub cluster_cidr: Option<Cidr>,
    /// `--nodeport-addresses`: the node's local addresses inside these CIDRs answer NodePorts;
    /// empty means every local address.
    pub nodeport_cidrs: Vec<Cidr>,
}

/// A short stable hash of `s`, for chain names that stay unique whatever the length limits.
pub fn short_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_clear_host_bits() {
        let c: Cidr = "10.244.3.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().prefix, 32);
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn short_hashes_are_stable_and_short() {
        assert_eq!(short_hash("a"), short_hash("a"));
        assert_ne!(short_hash("a"), short_hash("b"));
        assert_eq!(short_hash("a").len(), 8);
    }
}
