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
        (Some("exec-tty"), _, _) => match parse_exec_tty(&args[2..]) {
            Some((runtime, root, socket, id, command)) => monitor::run_tty_exec(
                Path::new(runtime),
                Path::new(root),
                Path::new(socket),
                id,
                &command,
            ),
            None => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: cri-monitor monitor|monitor-stage2 CONFIG, or exec-tty --runtime R --root D --console-socket S ID -- CMD... (run by `cri serve`)"
    );
    ExitCode::from(2)
}

/// `--runtime R --root D --console-socket S ID -- CMD...`, as `cri exec-tty` takes them.
fn parse_exec_tty(args: &[String]) -> Option<(&str, &str, &str, &str, Vec<String>)> {
    let (mut runtime, mut root, mut socket, mut id) = (None, None, None, None);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--runtime" => runtime = args.get(i + 1).map(String::as_str),
            "--root" => root = args.get(i + 1).map(String::as_str),
            "--console-socket" => socket = args.get(i + 1).map(String::as_str),
            "--" => return Some((runtime?, root?, socket?, id?, args[i + 1..].to_vec())),
            other => {
                id = Some(other);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    None
}
