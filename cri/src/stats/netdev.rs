//! Interface counters of a pod's network namespace: `/proc/net/dev` as seen from inside it.
//! A short-lived thread joins the namespace (network namespaces can be entered per thread)
//! and reads `/proc/thread-self/net/dev`, which shows the namespace of the reading thread;
//! the daemon's other threads stay where they are.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Why the counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NetDevError {
    /// Opening or joining the namespace, or reading the file, failed.
    #[error("{what} {}: {source}", netns.display())]
    Io {
        /// The step.
        what: &'static str,
        /// The namespace.
        netns: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Reads `/proc/net/dev` inside a network namespace.
pub trait NetDevReader: Send + Sync {
    /// The file's content as seen inside the namespace pinned at `netns`.
    fn read(&self, netns: &Path) -> Result<String, NetDevError>;
}

/// Reads through a thread that joins the namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetnsDev;

impl NetDevReader for NetnsDev {
    fn read(&self, netns: &Path) -> Result<String, NetDevError> {
        let path = netns.to_path_buf();
        let io = |what, netns: &Path| {
            let netns = netns.to_path_buf();
            move |source| NetDevError::Io {
                what,
                netns,
                source,
            }
        };
        let worker = std::thread::spawn(move || -> Result<String, NetDevError> {
            let file = File::open(&path).map_err(io("open", &path))?;
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| io("join", &path)(io::Error::from(e)))?;
            std::fs::read_to_string("/proc/thread-self/net/dev")
                .map_err(io("read net/dev in", &path))
        });
        worker.join().unwrap_or_else(|_| {
            Err(io("read net/dev in", netns)(io::Error::other(
                "thread panicked",
            )))
        })
    }
}

/// One interface's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// Parses `/proc/net/dev`: two header lines, then `name: rx_bytes rx_packets rx_errs ...
/// (8 receive fields) tx_bytes tx_packets tx_errs ...`. Malformed lines are skipped.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (fields.len() >= 16).then(|| InterfaceCounters {
                name: name.trim().to_string(),
                rx_bytes: fields[0],
                rx_errors: fields[2],
                tx_bytes: fields[8],
                tx_errors: fields[10],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5242880    4000    2    0    0     0          0         0   123456     900    1    0    0     0       0          0
";

    #[test]
    fn counters_come_from_the_receive_and_transmit_columns() {
        let parsed = parse_net_dev(NET_DEV);
        assert_eq!(parsed.len(), 2, "headers skipped");
        assert_eq!(
            parsed[1],
            InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 5_242_880,
                rx_errors: 2,
                tx_bytes: 123_456,
                tx_errors: 1,
            }
        );
    }

    #[test]
    fn a_short_or_garbled_line_is_skipped() {
        assert!(parse_net_dev("eth0: 1 2 3\nx: a b c d e f g h i j k l m n o p\n").is_empty());
    }

    #[test]
    fn the_own_namespace_reads_through_a_joining_thread() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let text = NetnsDev.read(Path::new("/proc/self/ns/net")).unwrap();
        assert!(
            parse_net_dev(&text).iter().any(|i| i.name == "lo"),
            "{text}"
        );
        let err = NetnsDev.read(Path::new("/nonexistent/netns")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
    }
}
