//! The OCI runtime spec of a container, built from the CRI container config, its sandbox and
//! its image config, following what upstream CRI runtimes do: command and args merged with the
//! image's Entrypoint and Cmd, image env overridden by the config's, users resolved from the
//! image's /etc/passwd, containerd's default capability set, runc's default masked and
//! read-only paths, a RuntimeDefault seccomp profile, resources, and the sandbox's namespaces.
//! Pure: everything it needs comes in [`SpecInput`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext};
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxMemory, LinuxNamespace, LinuxNamespaceType,
    LinuxResources, LinuxSeccomp, LinuxSeccompAction, LinuxSyscall, Mount, Process, Root, Spec,
    User,
};

use crate::sandbox::SandboxRecord;

/// What the image says about how to run it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageDefaults {
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
    /// Env, `KEY=value`.
    pub env: Vec<String>,
    /// WorkingDir.
    pub working_dir: String,
    /// User, `user[:group]` by name or number.
    pub user: String,
    /// StopSignal, e.g. `SIGQUIT`.
    pub stop_signal: String,
}

/// Host files the sandbox shares with each container.
#[derive(Debug, Clone)]
pub struct SandboxFiles {
    /// /etc/hosts.
    pub hosts: PathBuf,
    /// /etc/resolv.conf.
    pub resolv_conf: PathBuf,
    /// /etc/hostname.
    pub hostname: PathBuf,
}

/// Everything the spec is built from.
#[derive(Debug)]
pub struct SpecInput<'a> {
    /// The CRI container config.
    pub config: &'a ContainerConfig,
    /// Its sandbox.
    pub sandbox: &'a SandboxRecord,
    /// The image's defaults.
    pub image: &'a ImageDefaults,
    /// The root filesystem (already mounted).
    pub rootfs: PathBuf,
    /// The sandbox's shared files.
    pub files: SandboxFiles,
    /// The cgroup path for the container.
    pub cgroups_path: String,
    /// The image's /etc/passwd, for user names.
    pub passwd: Option<String>,
    /// The image's /etc/group, for group names.
    pub group: Option<String>,
    /// The lowest oom_score_adj the runtime may set (its own), as containerd's
    /// `restrict_oom_score_adj` does when it lacks CAP_SYS_RESOURCE.
    pub min_oom_score_adj: i32,
}

/// Why no spec could be built (the CRI call answers InvalidArgument or, for user lookups,
/// the CreateContainerConfigError kubelet reports).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Neither the config nor the image names a command.
    #[error("no command specified")]
    NoCommand,
    /// A user or group name is not in the image.
    #[error("{0}")]
    User(String),
    /// A capability name is unknown.
    #[error("unknown capability {0:?}")]
    Capability(String),
    /// A mount is invalid.
    #[error("{0}")]
    Mount(String),
}

/// containerd's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The process arguments: config command (+ args), else image entrypoint + config args, else
/// image entrypoint + cmd.
pub fn merge_command(
    config: &ContainerConfig,
    image: &ImageDefaults,
) -> Result<Vec<String>, SpecError> {
    let args: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else if !config.args.is_empty() {
        image
            .entrypoint
            .iter()
            .chain(&config.args)
            .cloned()
            .collect()
    } else {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    };
    if args.is_empty() {
        Err(SpecError::NoCommand)
    } else {
        Ok(args)
    }
}

/// The environment: the image's, then the config's (a key set twice keeps the last value, in
/// the position of the first), then HOSTNAME when nothing set it.
pub fn merge_env(image_env: &[String], config: &ContainerConfig, hostname: &str) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let mut put = |key: &str, value: &str| {
        if !values.contains_key(key) {
            order.push(key.to_string());
        }
        values.insert(key.to_string(), value.to_string());
    };
    for entry in image_env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        put(k, v);
    }
    let mut hostname_set = false;
    for kv in &config.envs {
        hostname_set |= kv.key == "HOSTNAME";
        put(&kv.key, &kv.value);
    }
    hostname_set |= image_env.iter().any(|e| e.starts_with("HOSTNAME="));
    if !hostname.is_empty() && !hostname_set {
        put("HOSTNAME", hostname);
    }
    order
        .into_iter()
        .map(|k| format!("{k}={}", values[&k]))
        .collect()
}

fn lookup(table: Option<&str>, name: &str, kind: &str) -> Result<(u32, Option<u32>), SpecError> {
    table
        .into_iter()
        .flat_map(str::lines)
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| {
            Some((
                f.get(2)?.parse().ok()?,
                f.get(3).and_then(|g| g.parse().ok()),
            ))
        })
        .ok_or_else(|| {
            SpecError::User(format!(
                "unable to find {kind} {name}: no matching entries in {kind} file"
            ))
        })
}

fn username_of(passwd: Option<&str>, uid: u32) -> Option<String> {
    passwd?.lines().find_map(|l| {
        let f: Vec<_> = l.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f[0].to_string())
    })
}

fn groups_of(group: Option<&str>, user: &str) -> Vec<u32> {
    group
        .into_iter()
        .flat_map(str::lines)
        .filter_map(|l| {
            let f: Vec<_> = l.split(':').collect();
            let members = f.get(3)?;
            members
                .split(',')
                .any(|m| m == user)
                .then(|| f.get(2)?.parse().ok())?
        })
        .collect()
}

/// The process user: the security context's runAsUser / runAsUsername / runAsGroup, else the
/// image's User, resolved against the image's passwd and group files; supplemental groups from
/// the group file and the config.
pub fn resolve_user(
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<User, SpecError> {
    let (mut uid, mut gid, mut name) = (0u32, None, None);
    let (image_u, image_g) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_username = sc
        .map(|s| s.run_as_username.as_str())
        .filter(|s| !s.is_empty());
    if let Some(u) = run_as_user {
        uid = u32::try_from(u).map_err(|_| SpecError::User(format!("invalid runAsUser {u}")))?;
    } else if let Some(n) = run_as_username {
        let (u, g) = lookup(passwd, n, "user")?;
        (uid, gid, name) = (u, g, Some(n.to_string()));
    } else if !image_u.is_empty() {
        if let Ok(u) = image_u.parse::<u32>() {
            uid = u;
        } else {
            let (u, g) = lookup(passwd, image_u, "user")?;
            (uid, gid, name) = (u, g, Some(image_u.to_string()));
        }
    }
    if name.is_none() {
        name = username_of(passwd, uid);
        if gid.is_none()
            && let Some(n) = &name
        {
            gid = lookup(passwd, n, "user").ok().and_then(|(_, g)| g);
        }
    }
    if let Some(g) = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value) {
        gid =
            Some(u32::try_from(g).map_err(|_| SpecError::User(format!("invalid runAsGroup {g}")))?);
    } else if let Some(g) = image_g.filter(|g| !g.is_empty()) {
        gid = Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(group, g, "group")?.0,
        });
    }
    let mut additional: Vec<u32> = name
        .as_deref()
        .map(|n| groups_of(group, n))
        .unwrap_or_default();
    for g in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        if let Ok(g) = u32::try_from(*g) {
            additional.push(g);
        }
    }
    additional.sort_unstable();
    additional.dedup();
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid.unwrap_or(0));
    user.set_additional_gids((!additional.is_empty()).then_some(additional));
    Ok(user)
}

fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let bare = name.trim().to_ascii_uppercase();
    let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
    Capability::from_str(bare).map_err(|_| SpecError::Capability(name.to_string()))
}

fn all_capabilities() -> HashSet<Capability> {
    // Every capability the kernel of this machine knows, as runc uses for privileged.
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    ALL_CAPABILITY_NAMES
        .iter()
        .take(last as usize + 1)
        .filter_map(|n| parse_capability(n).ok())
        .collect()
}

/// Capability names in kernel number order.
const ALL_CAPABILITY_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability set: containerd's defaults (or all when privileged), plus adds, minus drops
/// ("ALL" allowed in both).
pub fn capabilities(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<HashSet<Capability>, SpecError> {
    if sc.is_some_and(|s| s.privileged) {
        return Ok(all_capabilities());
    }
    let mut set: HashSet<Capability> = DEFAULT_CAPABILITIES
        .iter()
        .map(|n| parse_capability(n))
        .collect::<Result<_, _>>()?;
    if let Some(caps) = sc.and_then(|s| s.capabilities.as_ref()) {
        for add in &caps.add_capabilities {
            if add.eq_ignore_ascii_case("ALL") {
                set = all_capabilities();
            } else {
                set.insert(parse_capability(add)?);
            }
        }
        for drop in &caps.drop_capabilities {
            if drop.eq_ignore_ascii_case("ALL") {
                set.clear();
            } else {
                set.remove(&parse_capability(drop)?);
            }
        }
        for add in &caps.add_ambient_capabilities {
            set.insert(parse_capability(add)?);
        }
    }
    Ok(set)
}

/// Syscalls the RuntimeDefault profile refuses with EPERM: those that change the host (kernel
/// modules, clocks, reboot, swap, accounting, keyrings), leave the container (mounts, namespace
/// changes, pivot_root, handle-based opens) or are rarely needed and often abused (bpf,
/// perf_event_open, userfaultfd), following the intent of Docker's and containerd's defaults.
pub const RUNTIME_DEFAULT_DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

fn runtime_default_seccomp() -> LinuxSeccomp {
    let mut denied = LinuxSyscall::default();
    denied.set_names(
        RUNTIME_DEFAULT_DENIED_SYSCALLS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    denied.set_action(LinuxSeccompAction::ScmpActErrno);
    denied.set_errno_ret(Some(1));
    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(LinuxSeccompAction::ScmpActAllow);
    seccomp.set_syscalls(Some(vec![denied]));
    seccomp
}

/// The seccomp profile asked for: RuntimeDefault (type 0 with no profile is unconfined, as
/// kubelet sends Unconfined explicitly only when asked).
fn seccomp(sc: Option<&LinuxContainerSecurityContext>) -> Result<Option<LinuxSeccomp>, SpecError> {
    let Some(sc) = sc else { return Ok(None) };
    if sc.privileged {
        return Ok(None);
    }
    match sc.seccomp.as_ref() {
        // ProfileType: 0 RuntimeDefault, 1 Unconfined, 2 Localhost.
        Some(p) if p.profile_type == 0 => Ok(Some(runtime_default_seccomp())),
        Some(p) if p.profile_type == 2 => {
            let text = std::fs::read_to_string(&p.localhost_ref).map_err(|e| {
                SpecError::Mount(format!("seccomp profile {}: {e}", p.localhost_ref))
            })?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| SpecError::Mount(format!("seccomp profile {}: {e}", p.localhost_ref)))
        }
        _ => Ok(None),
    }
}

fn bind_mount(
    destination: &str,
    source: &std::path::Path,
    readonly: bool,
    propagation: Option<&str>,
) -> Mount {
    let mut options = vec![
        "rbind".to_string(),
        if readonly { "ro" } else { "rw" }.to_string(),
    ];
    if let Some(p) = propagation {
        options.push(p.to_string());
    }
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options));
    m
}

/// Builds the spec.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let config = input.config;
    let linux_cfg = config.linux.as_ref();
    let sc = linux_cfg.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let hostname = input.sandbox.hostname();

    let mut process = Process::default();
    process.set_args(Some(merge_command(config, input.image)?));
    process.set_env(Some(merge_env(&input.image.env, config, &hostname)));
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else if !input.image.working_dir.is_empty() {
        input.image.working_dir.clone()
    } else {
        "/".to_string()
    };
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(resolve_user(
        sc,
        &input.image.user,
        input.passwd.as_deref(),
        input.group.as_deref(),
    )?);
    process.set_terminal(Some(config.tty));
    process.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    let caps = capabilities(sc)?;
    let mut linux_caps = LinuxCapabilities::default();
    linux_caps.set_bounding(Some(caps.clone()));
    linux_caps.set_effective(Some(caps.clone()));
    linux_caps.set_permitted(Some(caps));
    linux_caps.set_inheritable(None);
    linux_caps.set_ambient(None);
    process.set_capabilities(Some(linux_caps));
    let requested_oom = linux_cfg
        .and_then(|l| l.resources.as_ref())
        .map_or(0, |r| r.oom_score_adj);
    let oom = i32::try_from(requested_oom)
        .unwrap_or(1000)
        .clamp(input.min_oom_score_adj, 1000);
    process.set_oom_score_adj(Some(oom));

    let mut spec = Spec::default();
    spec.set_hostname(Some(hostname));
    spec.set_process(Some(process));
    let mut root = Root::default();
    root.set_path(input.rootfs.clone());
    root.set_readonly(Some(sc.is_some_and(|s| s.readonly_rootfs)));
    spec.set_root(Some(root));

    // Mounts: runc's defaults, /dev/shm and the sandbox files, then the config's.
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if privileged {
        for m in &mut mounts {
            if m.destination() == &PathBuf::from("/sys") {
                m.set_options(Some(vec![
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                    "rw".into(),
                ]));
            }
        }
    }
    let sandbox_readonly = sc.is_some_and(|s| s.readonly_rootfs);
    let taken: HashSet<&str> = config
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    for (dest, src) in [
        ("/etc/hosts", &input.files.hosts),
        ("/etc/resolv.conf", &input.files.resolv_conf),
        ("/etc/hostname", &input.files.hostname),
    ] {
        if !taken.contains(dest) {
            mounts.push(bind_mount(dest, src, sandbox_readonly, None));
        }
    }
    for m in &config.mounts {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(SpecError::Mount(format!(
                "mount destination {:?} must be an absolute path",
                m.container_path
            )));
        }
        let source = PathBuf::from(&m.host_path);
        if !source.exists() {
            return Err(SpecError::Mount(format!(
                "failed to create mount {}: host path {:?} does not exist",
                m.container_path, m.host_path
            )));
        }
        // MountPropagation: 0 private, 1 host-to-container (rslave), 2 bidirectional (rshared).
        let propagation = match m.propagation {
            1 => "rslave",
            2 => "rshared",
            _ => "rprivate",
        };
        mounts.retain(|x| x.destination() != &PathBuf::from(&m.container_path));
        mounts.push(bind_mount(
            &m.container_path,
            &source,
            m.readonly,
            Some(propagation),
        ));
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let sandbox = input.sandbox;
    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)];
    if !sandbox.host_pid() {
        namespaces.push(ns(LinuxNamespaceType::Pid, None));
    }
    for (typ, path) in [
        (LinuxNamespaceType::Network, &sandbox.netns),
        (LinuxNamespaceType::Ipc, &sandbox.ipcns),
        (LinuxNamespaceType::Uts, &sandbox.utsns),
    ] {
        if let Some(path) = path {
            namespaces.push(ns(typ, Some(path.clone())));
        }
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)));
    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else if let Some(sc) = sc {
        if !sc.masked_paths.is_empty() {
            linux.set_masked_paths(Some(sc.masked_paths.clone()));
        }
        if !sc.readonly_paths.is_empty() {
            linux.set_readonly_paths(Some(sc.readonly_paths.clone()));
        }
    }
    linux.set_seccomp(seccomp(sc)?);
    if let Some(sysctls) = sandbox
        .config
        .linux
        .as_ref()
        .map(|l| &l.sysctls)
        .filter(|s| !s.is_empty())
    {
        linux.set_sysctl(Some(
            sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    let mut resources = linux.resources().clone().unwrap_or_default();
    if let Some(r) = linux_cfg.and_then(|l| l.resources.as_ref()) {
        let mut cpu = LinuxCpu::default();
        if r.cpu_shares > 0 {
            cpu.set_shares(Some(r.cpu_shares as u64));
        }
        if r.cpu_quota > 0 {
            cpu.set_quota(Some(r.cpu_quota));
        }
        if r.cpu_period > 0 {
            cpu.set_period(Some(r.cpu_period as u64));
        }
        if !r.cpuset_cpus.is_empty() {
            cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        }
        if !r.cpuset_mems.is_empty() {
            cpu.set_mems(Some(r.cpuset_mems.clone()));
        }
        resources.set_cpu(Some(cpu));
        if r.memory_limit_in_bytes > 0 {
            let mut memory = LinuxMemory::default();
            memory.set_limit(Some(r.memory_limit_in_bytes));
            if r.memory_swap_limit_in_bytes > 0 {
                memory.set_swap(Some(r.memory_swap_limit_in_bytes));
            }
            resources.set_memory(Some(memory));
        }
    }
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Resource limits as an update (UpdateContainerResources).
pub fn resources_update(r: &k8s_cri::v1::LinuxContainerResources) -> LinuxResources {
    let mut resources = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
    }
    resources.set_cpu(Some(cpu));
    if r.memory_limit_in_bytes > 0 {
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(r.memory_limit_in_bytes));
        resources.set_memory(Some(memory));
    }
    resources
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{Capability as CriCaps, Int64Value, KeyValue, LinuxContainerConfig};

    fn config(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn image() -> ImageDefaults {
        ImageDefaults {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            ..Default::default()
        }
    }

    #[test]
    fn command_merges_as_upstream() {
        let img = image();
        assert_eq!(
            merge_command(&config(&["sh"], &["-c", "x"]), &img).unwrap(),
            ["sh", "-c", "x"]
        );
        assert_eq!(
            merge_command(&config(&[], &["arg"]), &img).unwrap(),
            ["/entry", "arg"]
        );
        assert_eq!(
            merge_command(&config(&[], &[]), &img).unwrap(),
            ["/entry", "default"]
        );
        assert_eq!(
            merge_command(&config(&[], &[]), &ImageDefaults::default()),
            Err(SpecError::NoCommand)
        );
    }

    #[test]
    fn env_overrides_image_and_adds_hostname() {
        let mut c = config(&["sh"], &[]);
        c.envs = vec![
            KeyValue {
                key: "A".into(),
                value: "pod".into(),
            },
            KeyValue {
                key: "B".into(),
                value: "1".into(),
            },
        ];
        assert_eq!(
            merge_env(&image().env, &c, "web"),
            ["PATH=/bin", "A=pod", "B=1", "HOSTNAME=web"]
        );
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:34:\nextra:x:50:www,other\n";

    #[test]
    fn users_resolve_from_the_image() {
        let u = resolve_user(None, "www", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid(), u.gid()), (33, 34));
        assert_eq!(u.additional_gids().clone(), Some(vec![50]));
        let u = resolve_user(None, "1000:www-data", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid(), u.gid()), (1000, 34));
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 33 }),
            run_as_group: Some(Int64Value { value: 7 }),
            supplemental_groups: vec![9],
            ..Default::default()
        };
        let u = resolve_user(Some(&sc), "", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((u.uid(), u.gid()), (33, 7));
        assert_eq!(u.additional_gids().clone(), Some(vec![9, 50]));
        let err = resolve_user(None, "nobody", Some(PASSWD), None).unwrap_err();
        assert!(
            err.to_string().contains("unable to find user nobody"),
            "{err}"
        );
    }

    #[test]
    fn capabilities_default_add_drop() {
        let set = capabilities(None).unwrap();
        assert_eq!(set.len(), DEFAULT_CAPABILITIES.len());
        let sc = LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["CAP_KILL".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let set = capabilities(Some(&sc)).unwrap();
        assert!(set.contains(&Capability::NetAdmin) && !set.contains(&Capability::Kill));
        let bad = LinuxContainerSecurityContext {
            capabilities: Some(CriCaps {
                add_capabilities: vec!["FLY".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            capabilities(Some(&bad)),
            Err(SpecError::Capability("FLY".into()))
        );
    }

    fn sandbox() -> SandboxRecord {
        SandboxRecord {
            id: "s1".into(),
            config: k8s_cri::v1::PodSandboxConfig {
                hostname: "pod".into(),
                ..Default::default()
            },
            runtime_handler: String::new(),
            created_at: 0,
            ready: true,
            ip: None,
            netns: Some("/run/x/net".into()),
            ipcns: Some("/run/x/ipc".into()),
            utsns: Some("/run/x/uts".into()),
            cgroup_parent: "/pods/s1".into(),
            host_ports: vec![],
        }
    }

    #[test]
    fn builds_a_whole_spec() {
        let mut c = config(&["sleep", "1"], &[]);
        c.linux = Some(LinuxContainerConfig {
            resources: Some(k8s_cri::v1::LinuxContainerResources {
                cpu_shares: 512,
                memory_limit_in_bytes: 64 << 20,
                oom_score_adj: -998,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(k8s_cri::v1::SecurityProfile {
                    profile_type: 0,
                    ..Default::default()
                }),
                readonly_rootfs: true,
                ..Default::default()
            }),
        });
        let sb = sandbox();
        let img = image();
        let spec = build(&SpecInput {
            config: &c,
            sandbox: &sb,
            image: &img,
            rootfs: "/r".into(),
            files: SandboxFiles {
                hosts: "/h".into(),
                resolv_conf: "/rc".into(),
                hostname: "/hn".into(),
            },
            cgroups_path: "/pods/s1/c1".into(),
            passwd: None,
            group: None,
            min_oom_score_adj: 0,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["args"], serde_json::json!(["sleep", "1"]));
        assert_eq!(
            json["process"]["oomScoreAdj"], 0,
            "clamped to the runtime's own score"
        );
        assert_eq!(json["hostname"], "pod");
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["linux"]["cgroupsPath"], "/pods/s1/c1");
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let namespaces = json["linux"]["namespaces"].as_array().unwrap();
        assert!(
            namespaces
                .iter()
                .any(|n| n["type"] == "network" && n["path"] == "/run/x/net")
        );
        assert!(
            namespaces
                .iter()
                .any(|n| n["type"] == "pid" && n.get("path").is_none())
        );
        let mounts = json["mounts"].as_array().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["destination"] == "/etc/resolv.conf" && m["source"] == "/rc")
        );
    }

    #[test]
    fn missing_mount_sources_are_refused() {
        let mut c = config(&["sh"], &[]);
        c.mounts = vec![k8s_cri::v1::Mount {
            container_path: "/data".into(),
            host_path: "/definitely/not/here".into(),
            ..Default::default()
        }];
        let sb = sandbox();
        let img = image();
        let err = build(&SpecInput {
            config: &c,
            sandbox: &sb,
            image: &img,
            rootfs: "/r".into(),
            files: SandboxFiles {
                hosts: "/h".into(),
                resolv_conf: "/rc".into(),
                hostname: "/hn".into(),
            },
            cgroups_path: "/c".into(),
            passwd: None,
            group: None,
            min_oom_score_adj: 0,
        })
        .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
