//! Shared by the integration tests and the benchmark: the test images (`hack/images`), a real
//! docker-registry on a free loopback port, a deadline for async tests, a gRPC channel over a
//! unix socket, process lookups, the `cri serve` daemon harness and a containerd harness.
#![allow(dead_code)]

pub mod containerd;
pub mod daemon;
pub mod pod;

use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `test` under [`TEST_TIMEOUT`].
pub async fn timed<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

/// The busybox and pause layouts, built once per target directory by `hack/images` (which
/// serialises concurrent builds itself).
pub fn layouts() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cri-images");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/images");
    let status = Command::new(&script)
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("run hack/images");
    assert!(status.success(), "hack/images failed");
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A docker-registry process on 127.0.0.1, killed when dropped.
pub struct Registry {
    child: Child,
    /// host:port.
    pub address: String,
    credentials: Option<(String, String)>,
    netns: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// `program`, run inside the network namespace at `netns` when one is given.
pub fn command_in(netns: Option<&Path>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut command = Command::new("nsenter");
            command.arg(format!("--net={}", ns.display())).arg(program);
            command
        }
        None => Command::new(program),
    }
}

impl Registry {
    /// Starts a registry; with `credentials`, it requires them (htpasswd, bcrypt). `None` if
    /// htpasswd files cannot be made here.
    pub fn start(credentials: Option<(&str, &str)>) -> Option<Registry> {
        Self::start_in(None, credentials)
    }

    /// Starts a registry on the loopback of the network namespace at `netns` (the host's when
    /// `None`); pushes go there too.
    pub fn start_in(netns: Option<&Path>, credentials: Option<(&str, &str)>) -> Option<Registry> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {address}}}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = credentials {
            let hash = bcrypt(password)?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = command_in(netns, "docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (apt-get install docker-registry)");
        let registry = Registry {
            child,
            address,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            netns: netns.map(Path::to_path_buf),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.listening() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    fn listening(&self) -> bool {
        match &self.netns {
            None => TcpStream::connect(&self.address).is_ok(),
            Some(_) => {
                let (host, port) = self
                    .address
                    .split_once(':')
                    .unwrap_or((&self.address, "80"));
                command_in(self.netns.as_deref(), "bash")
                    .args(["-c", &format!("echo > /dev/tcp/{host}/{port}")])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
        }
    }

    /// Pushes `name:1` from the layouts as `<registry>/<as_name>`.
    pub fn push(&self, layouts: &Path, name: &str, as_name: &str) {
        let mut command = command_in(self.netns.as_deref(), "skopeo");
        command.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((user, password)) = &self.credentials {
            command.arg(format!("--dest-creds={user}:{password}"));
        }
        let status = command
            .arg(format!("oci:{}:{name}:1", layouts.join(name).display()))
            .arg(format!("docker://{}/{as_name}", self.address))
            .status()
            .expect("run skopeo");
        assert!(status.success(), "skopeo push of {name} failed");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bcrypt hash of `password` for htpasswd, from python3's crypt module, if it has one.
pub fn bcrypt(password: &str) -> Option<String> {
    let output = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            password,
        ])
        .output()
        .ok()?;
    let hash = String::from_utf8(output.stdout).ok()?.trim().to_string();
    hash.starts_with("$2").then_some(hash)
}

/// A gRPC channel to the server on the unix socket at `path`.
pub async fn unix_channel(path: &Path) -> tonic::transport::Channel {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect to the CRI socket")
}

/// Pids of the processes whose command line (split at NULs) satisfies `matches`.
pub fn processes_matching(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            matches(&args)
        })
        .collect()
}

/// A process's resident set size in KiB (VmRSS), if it still runs.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A process's resident memory split as /proc/<pid>/status does, in KiB: (anonymous, file
/// backed, shared memory).
pub fn rss_parts_kib(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("RssAnon:")?, field("RssFile:")?, field("RssShmem:")?))
}

/// A process's proportional set size in KiB (shared pages divided among their users).
pub fn pss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
