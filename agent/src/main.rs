//! The node agent (kubelet role). Not built yet: the agent issue tracks it. Until then the
//! binary refuses to run rather than pretend to manage a node.

fn main() -> std::process::ExitCode {
    eprintln!("agent: not implemented yet; see the agent issue. Use kubelet meanwhile.");
    std::process::ExitCode::from(2)
}
