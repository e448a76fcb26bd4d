//! The CRI v1 runtime. Not built yet: the cri issue tracks it. Until then the binary refuses
//! to run rather than pretend to serve CRI.

fn main() -> std::process::ExitCode {
    eprintln!("cri: not implemented yet; see the cri issue. Use containerd meanwhile.");
    std::process::ExitCode::from(2)
}
