//! Persistent IPv4 address management for one node subnet, in the manner of the CNI host-local
//! plugin: one file per allocated address, created exclusively, holding the owner's id. It
//! survives daemon restarts and never hands one address to two live sandboxes; the network
//! address, the gateway (first host) and the broadcast address are never handed out.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The network address (host bits zero).
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Ipv4Cidr {
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `addr` is inside this network.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// The number of addresses in the network.
    pub fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the network (0 is the network address).
    pub fn nth(self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + n as u32))
    }

    /// The gateway address the node bridge holds: the first host address.
    pub fn gateway(self) -> Ipv4Addr {
        self.nth(1).unwrap_or(self.network)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (a.b.c.d/n)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 30)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0..=30"))?;
        let cidr = Ipv4Cidr {
            network: addr,
            prefix,
        };
        let network = Ipv4Addr::from(u32::from(addr) & cidr.mask());
        Ok(Ipv4Cidr { network, prefix })
    }
}

/// Why an allocation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every usable address is taken.
    #[error("no IP address left in {0}")]
    Exhausted(Ipv4Cidr),
    /// The store could not be read or written.
    #[error("IPAM store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The allocation store of one subnet.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Cidr,
}

impl Ipam {
    /// Opens (creating) the store for `cidr` under `root`.
    pub fn open(root: &Path, cidr: Ipv4Cidr) -> Result<Self, IpamError> {
        let dir = root.join(format!("{}_{}", cidr.network, cidr.prefix));
        fs::create_dir_all(&dir).map_err(|source| IpamError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Ipam { dir, cidr })
    }

    /// The subnet.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The address held by `owner`, if any.
    pub fn lookup(&self, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|(_, o)| o == owner)
            .map(|(ip, _)| ip))
    }

    /// All allocations: address and owner.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| IpamError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let owner = fs::read_to_string(entry.path()).unwrap_or_default();
            out.push((ip, owner.trim().to_string()));
        }
        Ok(out)
    }

    /// Allocates an address for `owner`, or returns the one it already holds. Scanning starts
    /// after the last address handed out, so a released address is not reused at once.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.lookup(owner)? {
            return Ok(ip);
        }
        let last_path = self.dir.join("last_reserved_ip");
        let last = fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .filter(|ip| self.cidr.contains(*ip))
            .map_or(1, |ip| {
                u64::from(u32::from(ip) - u32::from(self.cidr.network))
            });
        let usable = self.cidr.size() - 1; // the last address is the broadcast address
        for step in 1..usable {
            let n = (last - 1 + step) % (usable - 1) + 1;
            if n <= 1 {
                continue; // the gateway
            }
            let Some(ip) = self.cidr.nth(n) else { continue };
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let written = file
                        .write_all(owner.as_bytes())
                        .and_then(|()| file.sync_all());
                    if let Err(source) = written {
                        let _ = fs::remove_file(&path);
                        return Err(IpamError::Io { path, source });
                    }
                    // Only a hint where to scan next: no need to wait for the disk.
                    crate::persist::write_bytes_volatile(&last_path, ip.to_string().as_bytes())
                        .map_err(|source| IpamError::Io {
                            path: last_path.clone(),
                            source,
                        })?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(IpamError::Io { path, source }),
            }
        }
        Err(IpamError::Exhausted(self.cidr))
    }

    /// Releases whatever `owner` holds. Releasing nothing is fine.
    pub fn release(&self, owner: &str) -> Result<(), IpamError> {
        for (ip, holder) in self.allocations()? {
            if holder == owner {
                let path = self.dir.join(ip.to_string());
                if let Err(source) = fs::remove_file(&path)
                    && source.kind() != io::ErrorKind::NotFound
                {
                    return Err(IpamError::Io { path, source });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs() {
        let c: Ipv4Cidr = "10.244.3.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.3.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        assert!(c.contains(Ipv4Addr::new(10, 244, 3, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 4, 1)));
        assert!("10.0.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0.0/31".parse::<Ipv4Cidr>().is_err());
        assert!("x/24".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn allocates_uniquely_persistently_and_exhausts() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Cidr = "10.1.0.0/29".parse().unwrap(); // hosts .2 .. .6 usable
        let ipam = Ipam::open(dir.path(), cidr).unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(ipam.allocate(&format!("pod{i}")).unwrap());
        }
        got.sort();
        let expected: Vec<Ipv4Addr> = (2..=6).map(|n| Ipv4Addr::new(10, 1, 0, n)).collect();
        assert_eq!(got, expected);
        assert!(matches!(
            ipam.allocate("pod9"),
            Err(IpamError::Exhausted(_))
        ));
        // Same owner gets the same address; a reopened store remembers.
        let again = Ipam::open(dir.path(), cidr).unwrap();
        assert_eq!(
            again.allocate("pod3").unwrap(),
            ipam.lookup("pod3").unwrap().unwrap()
        );
        again.release("pod3").unwrap();
        again.release("pod3").unwrap();
        let reused = again.allocate("pod10").unwrap();
        assert!(expected.contains(&reused));
    }

    #[test]
    fn does_not_reuse_a_released_address_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), "10.2.0.0/24".parse().unwrap()).unwrap();
        let a = ipam.allocate("a").unwrap();
        ipam.release("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b);
    }
}
