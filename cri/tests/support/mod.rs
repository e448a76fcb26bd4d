//! Shared by the integration tests: the node harness of the `e2e` crate (daemon in its own
//! network namespace, images, registry, unix-socket channel) with this crate's own binary, and
//! a deadline for async tests.
#![allow(dead_code, unused_imports)]

pub use e2e::containerd;
pub mod pod;
pub mod streaming;

use std::future::Future;
use std::time::Duration;

pub use e2e::cri::{
    Registry, command_in, layouts, processes_matching, pss_kib, rss_kib, rss_parts_kib,
    unix_channel,
};
pub use e2e::free_port;

/// The daemon harness, started with this crate's `cri` binary.
pub mod daemon {
    pub use e2e::cri::{
        Daemon, TestNetns, cgroups_left, mounts_under, remove_cgroups, unmount_under,
    };

    /// Daemon options with this crate's binary.
    #[derive(Clone)]
    pub struct DaemonOptions {
        /// `--pod-cidr`, if any.
        pub pod_cidr: Option<String>,
    }

    impl Default for DaemonOptions {
        fn default() -> Self {
            DaemonOptions {
                pod_cidr: e2e::cri::DaemonOptions::default().pod_cidr,
            }
        }
    }

    impl From<DaemonOptions> for e2e::cri::DaemonOptions {
        fn from(o: DaemonOptions) -> Self {
            e2e::cri::DaemonOptions {
                pod_cidr: o.pod_cidr,
                binary: Some(env!("CARGO_BIN_EXE_cri").into()),
                streaming_on_host_link: false,
            }
        }
    }
}

/// How long any one test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `test` under [`TEST_TIMEOUT`].
pub async fn timed<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}
