//! `cri-monitor`: the per-container monitor alone, without the daemon's gRPC, TLS and image
//! code. The daemon runs it instead of itself when it sits next to the `cri` binary: a monitor
//! lives as long as its container, and a small binary keeps each one's resident memory small
//! (the full binary's startup relocations alone dirty megabytes). The command line is the
//! same as `cri monitor` / `cri monitor-stage2`.

use std::path::Path;
use std::process::ExitCode;

use cri::container::monitor;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match (
        args.get(1).map(String::as_str),
        args.get(2).map(Path::new),
        args.len(),
    ) {
        (Some("monitor"), Some(config), 3) => monitor::run_first_stage(config),
        (Some("monitor-stage2"), Some(config), 3) => monitor::run_second_stage(config),
        _ => {
            eprintln!("usage: cri-monitor monitor|monitor-stage2 CONFIG (run by `cri serve`)");
            ExitCode::from(2)
        }
    }
}
