//! CRI configs from a pod: the sandbox (metadata, labels, hostname, DNS per dnsPolicy, port
//! mappings, namespaces, cgroup parent, sysctls) and each container (command and args with
//! `$(VAR)` expansion, env from values, fields, resources, ConfigMaps and Secrets, mounts,
//! resources, security context). Pure: what the pod references is resolved beforehand and
//! passed in [`PodContext`]. Errors here are what kubelet reports as
//! CreateContainerConfigError.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PersistentVolume, Pod, Secret};

/// Label with the pod name on sandboxes and containers.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label with the pod namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label with the pod UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label with the container name.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Annotation with the pod-level restart count of a container instance.
pub const RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Annotation with the container's termination message path.
pub const TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";

/// Why a container config cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What a pod's configs are built from, beyond the pod.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    /// The node's name.
    pub node_name: String,
    /// The node's address.
    pub host_ip: String,
    /// The pod's address, once it has one.
    pub pod_ip: String,
    /// `--cluster-dns` servers.
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// Where this pod's container logs go.
    pub log_directory: PathBuf,
    /// Host directories of the pod's volumes, by volume name.
    pub volume_paths: BTreeMap<String, PathBuf>,
    /// ConfigMaps the pod refers to, by name (missing ones absent).
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets the pod refers to, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// The PersistentVolume bound to each claim the pod uses, by claim name, or why there is
    /// none yet (see `volumes::bound_volume`).
    pub claims: BTreeMap<String, Result<PersistentVolume, String>>,
    /// Volumes every mount of which is read-only (a claim with `readOnly`).
    pub read_only_volumes: std::collections::BTreeSet<String>,
    /// Service environment variables (enableServiceLinks), in order.
    pub service_env: Vec<(String, String)>,
    /// The cgroup parent for the pod (QoS class hierarchy).
    pub cgroup_parent: String,
}

fn pod_name(pod: &Pod) -> (&str, &str, &str) {
    (
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// The pod's labels on runtime objects.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let (name, namespace, uid) = pod_name(pod);
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(POD_NAME_LABEL.into(), name.into());
    labels.insert(POD_NAMESPACE_LABEL.into(), namespace.into());
    labels.insert(POD_UID_LABEL.into(), uid.into());
    labels
}

/// The DNS config for the pod's dnsPolicy: ClusterFirst (the default) searches
/// `<ns>.svc.<domain> svc.<domain> <domain>` with ndots 5 through the cluster DNS; Default
/// uses the node's; None only dnsConfig; ClusterFirstWithHostNet for host-network pods.
pub fn dns_config(pod: &Pod, ctx: &PodContext) -> Option<cri::DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let (_, namespace, _) = pod_name(pod);
    let host_network = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    } && !ctx.cluster_dns.is_empty();
    let mut dns = cri::DnsConfig::default();
    if cluster_first {
        dns.servers = ctx.cluster_dns.clone();
        let domain = &ctx.cluster_domain;
        dns.searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ];
        dns.options = vec!["ndots:5".into()];
    } else if policy == "None" {
        // Only what dnsConfig says.
    } else {
        return merge_dns_config(None, spec.dns_config.as_ref());
    }
    merge_dns_config(Some(dns), spec.dns_config.as_ref())
}

fn merge_dns_config(
    base: Option<cri::DnsConfig>,
    extra: Option<&k8s_openapi::api::core::v1::PodDNSConfig>,
) -> Option<cri::DnsConfig> {
    let Some(extra) = extra else { return base };
    let mut dns = base.unwrap_or_default();
    dns.servers
        .extend(extra.nameservers.clone().unwrap_or_default());
    dns.searches
        .extend(extra.searches.clone().unwrap_or_default());
    for option in extra.options.iter().flatten() {
        let name = option.name.clone().unwrap_or_default();
        dns.options
            .retain(|o| o.split(':').next() != Some(name.as_str()));
        dns.options.push(match &option.value {
            Some(v) => format!("{name}:{v}"),
            None => name,
        });
    }
    Some(dns)
}

/// The sandbox config.
pub fn sandbox_config(pod: &Pod, ctx: &PodContext, attempt: u32) -> cri::PodSandboxConfig {
    let (name, namespace, uid) = pod_name(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.to_string());
    let mut port_mappings = Vec::new();
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for port in container.ports.iter().flatten() {
            if let Some(host_port) = port.host_port.filter(|p| *p > 0) {
                port_mappings.push(cri::PortMapping {
                    protocol: match port.protocol.as_deref() {
                        Some("UDP") => 1,
                        Some("SCTP") => 2,
                        _ => 0,
                    },
                    container_port: port.container_port,
                    host_port,
                    host_ip: port.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let mode = |node: bool| if node { 2 } else { 0 };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .map(|s| {
            s.iter()
                .map(|kv| (kv.name.clone(), kv.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: namespace.into(),
            attempt,
        }),
        hostname: if host_network {
            String::new()
        } else {
            hostname
        },
        log_directory: ctx.log_directory.display().to_string(),
        dns_config: dns_config(pod, ctx),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: ctx.cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: mode(host_network),
                    pid: if spec.host_pid == Some(true) { 2 } else { 1 },
                    ipc: mode(spec.host_ipc == Some(true)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    }
}

/// Expands `$(VAR)` references from `env`; `$$` escapes; unknown references stay as written,
/// as upstream does.
pub fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + end];
                match env(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&input[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn field_value(pod: &Pod, ctx: &PodContext, path: &str) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let bracket = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => ctx.node_name.clone(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.clone(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.clone(),
        _ => {
            if let Some(key) = bracket("metadata.labels") {
                from_map(&meta.labels, key)
            } else if let Some(key) = bracket("metadata.annotations") {
                from_map(&meta.annotations, key)
            } else {
                return Err(ConfigError(format!("unsupported fieldRef {path:?}")));
            }
        }
    })
}

fn config_map_value(ctx: &PodContext, name: &str, key: &str) -> Option<String> {
    ctx.config_maps.get(name)?.data.as_ref()?.get(key).cloned()
}

fn secret_value(ctx: &PodContext, name: &str, key: &str) -> Option<String> {
    let secret = ctx.secrets.get(name)?;
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&v.0).into_owned());
    }
    secret.string_data.as_ref()?.get(key).cloned()
}

fn resource_field(container: &Container, resource: &str) -> Result<String, ConfigError> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| ConfigError(format!("unsupported resourceFieldRef {resource:?}")))?;
    let map = container.resources.as_ref().and_then(|r| {
        if kind == "limits" {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }
    });
    let quantity = map.and_then(|m| m.get(name)).map(|q| q.0.clone());
    let Some(quantity) = quantity else {
        return Ok("0".into());
    };
    let parsed =
        apimachinery::quantity::Quantity::parse(&quantity).map_err(|e| ConfigError(e.0))?;
    // cpu rounds up to whole cores, memory to bytes, as the divisor 1 does upstream.
    Ok(if name == "cpu" {
        ((parsed.milli() + 999) / 1000).to_string()
    } else {
        parsed.value().to_string()
    })
}

fn env_var_value(
    pod: &Pod,
    ctx: &PodContext,
    container: &Container,
    var: &EnvVar,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    if let Some(value) = &var.value {
        return Ok(Some(expand(value, env)));
    }
    let Some(from) = &var.value_from else {
        return Ok(Some(String::new()));
    };
    if let Some(field) = &from.field_ref {
        return field_value(pod, ctx, &field.field_path).map(Some);
    }
    if let Some(resource) = &from.resource_field_ref {
        return resource_field(container, &resource.resource).map(Some);
    }
    if let Some(r) = &from.config_map_key_ref {
        return match config_map_value(ctx, &r.name, &r.key) {
            Some(v) => Ok(Some(v)),
            None if r.optional == Some(true) => Ok(None),
            None if ctx.config_maps.contains_key(&r.name) => Err(ConfigError(format!(
                "couldn't find key {} in ConfigMap {}/{}",
                r.key,
                pod_name(pod).1,
                r.name
            ))),
            None => Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        return match secret_value(ctx, &r.name, &r.key) {
            Some(v) => Ok(Some(v)),
            None if r.optional == Some(true) => Ok(None),
            None if ctx.secrets.contains_key(&r.name) => Err(ConfigError(format!(
                "couldn't find key {} in Secret {}/{}",
                r.key,
                pod_name(pod).1,
                r.name
            ))),
            None => Err(ConfigError(format!("secret \"{}\" not found", r.name))),
        };
    }
    Ok(Some(String::new()))
}

/// The container's environment, in upstream order: service links, envFrom, env.
pub fn environment(
    pod: &Pod,
    ctx: &PodContext,
    container: &Container,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for (k, v) in &ctx.service_env {
        set(&mut env, k.clone(), v.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match ctx.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match ctx.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let snapshot = env.clone();
        let lookup = move |name: &str| {
            snapshot
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(value) = env_var_value(pod, ctx, container, var, &lookup)? {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

fn cpu_milli(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<i64> {
    q.and_then(|q| apimachinery::quantity::Quantity::parse(&q.0).ok())
        .map(|q| q.milli() as i64)
}

/// CRI Linux resources from the container's requests and limits, as kubelet computes them:
/// shares from the cpu request (2 minimum), quota from the cpu limit over a 100 ms period,
/// the memory limit, and the oom_score_adj of the pod's QoS class.
pub fn linux_resources(pod: &Pod, container: &Container) -> cri::LinuxContainerResources {
    let resources = container.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let cpu_request = cpu_milli(requests.and_then(|r| r.get("cpu")))
        .or_else(|| cpu_milli(limits.and_then(|l| l.get("cpu"))));
    let cpu_limit = cpu_milli(limits.and_then(|l| l.get("cpu")));
    let memory_limit = limits
        .and_then(|l| l.get("memory"))
        .and_then(|q| apimachinery::quantity::Quantity::parse(&q.0).ok())
        .map(|q| q.value() as i64)
        .unwrap_or(0);
    let shares = cpu_request.map_or(2, |m| (m * 1024 / 1000).max(2));
    let period = 100_000;
    let quota = cpu_limit.map_or(0, |m| (m * period / 1000).max(1000));
    let qos = qos_class(pod);
    let oom_score_adj = match qos {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let memory_request = requests
                .and_then(|r| r.get("memory"))
                .and_then(|q| apimachinery::quantity::Quantity::parse(&q.0).ok())
                .map_or(0, |q| q.value() as i64);
            let capacity = machine_memory_bytes().max(1);
            (1000 - 1000 * memory_request / capacity).clamp(3, 999)
        }
    };
    cri::LinuxContainerResources {
        cpu_period: if quota > 0 { period } else { 0 },
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory_limit,
        oom_score_adj,
        ..Default::default()
    }
}

/// The pod's QoS class.
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_default();
    apimachinery::defaults::qos_class(&spec)
}

/// The machine's memory in bytes.
pub fn machine_memory_bytes() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The container config.
pub fn container_config(
    pod: &Pod,
    ctx: &PodContext,
    container: &Container,
    attempt: u32,
    restart_count: i32,
) -> Result<cri::ContainerConfig, ConfigError> {
    let env = environment(pod, ctx, container)?;
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let command: Vec<String> = container
        .command
        .iter()
        .flatten()
        .map(|c| expand(c, &lookup))
        .collect();
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|a| expand(a, &lookup))
        .collect();
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let base = ctx.volume_paths.get(&m.name).ok_or_else(|| {
            ConfigError(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, container.name
            ))
        })?;
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.split('/').any(|part| part == "..") || sub.starts_with('/') {
                    return Err(ConfigError(format!(
                        "subPath {sub:?} must be a relative path without '..'"
                    )));
                }
                let path = base.join(sub);
                let _ = std::fs::create_dir_all(&path);
                let resolved = path
                    .canonicalize()
                    .map_err(|e| ConfigError(format!("subPath {sub:?}: {e}")))?;
                let root = base
                    .canonicalize()
                    .map_err(|e| ConfigError(format!("volume {:?}: {e}", m.name)))?;
                if !resolved.starts_with(&root) {
                    return Err(ConfigError(format!(
                        "subPath {sub:?} escapes volume {:?}",
                        m.name
                    )));
                }
                resolved
            }
            None => base.clone(),
        };
        mounts.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: m.read_only == Some(true) || ctx.read_only_volumes.contains(&m.name),
            propagation: match m.mount_propagation.as_deref() {
                Some("HostToContainer") => 1,
                Some("Bidirectional") => 2,
                _ => 0,
            },
            ..Default::default()
        });
    }
    let termination_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let mut annotations: HashMap<String, String> = HashMap::new();
    annotations.insert(RESTART_COUNT_ANNOTATION.into(), restart_count.to_string());
    annotations.insert(TERMINATION_MESSAGE_PATH_ANNOTATION.into(), termination_path);
    let mut labels = HashMap::new();
    let (name, namespace, uid) = pod_name(pod);
    labels.insert(POD_NAME_LABEL.to_string(), name.to_string());
    labels.insert(POD_NAMESPACE_LABEL.to_string(), namespace.to_string());
    labels.insert(POD_UID_LABEL.to_string(), uid.to_string());
    labels.insert(CONTAINER_NAME_LABEL.to_string(), container.name.clone());
    let sc = container.security_context.as_ref();
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group));
    let run_as_non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|s| s.run_as_non_root));
    if run_as_non_root == Some(true) && run_as_user == Some(0) {
        return Err(ConfigError(
            "container's runAsUser breaks non-root policy".into(),
        ));
    }
    let mut supplemental: Vec<i64> = pod_sc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default();
    if let Some(fs_group) = pod_sc.and_then(|s| s.fs_group) {
        supplemental.push(fs_group);
    }
    let seccomp = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| pod_sc.and_then(|s| s.seccomp_profile.as_ref()))
        .map(|p| cri::SecurityProfile {
            profile_type: match p.type_.as_str() {
                "RuntimeDefault" => 0,
                "Localhost" => 2,
                _ => 1,
            },
            localhost_ref: p.localhost_profile.clone().unwrap_or_default(),
        })
        .unwrap_or(cri::SecurityProfile {
            profile_type: 1,
            localhost_ref: String::new(),
        });
    let security_context = cri::LinuxContainerSecurityContext {
        capabilities: sc
            .and_then(|s| s.capabilities.as_ref())
            .map(|c| cri::Capability {
                add_capabilities: c.add.clone().unwrap_or_default(),
                drop_capabilities: c.drop.clone().unwrap_or_default(),
                ..Default::default()
            }),
        privileged: sc.and_then(|s| s.privileged) == Some(true),
        run_as_user: run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        supplemental_groups: supplemental,
        no_new_privs: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        seccomp: Some(seccomp),
        ..Default::default()
    };
    let log_path = format!("{}/{}.log", container.name, restart_count);
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        annotations,
        log_path,
        stdin: container.stdin == Some(true),
        stdin_once: container.stdin_once == Some(true),
        tty: container.tty == Some(true),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(pod, container)),
            security_context: Some(security_context),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVarSource, ObjectFieldSelector, PodSpec};

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap()
    }

    fn ctx() -> PodContext {
        PodContext {
            node_name: "n1".into(),
            host_ip: "192.0.2.1".into(),
            pod_ip: "10.0.0.5".into(),
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            ..Default::default()
        }
    }

    #[test]
    fn expansion_follows_upstream_rules() {
        let env = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn cluster_first_dns_searches_the_namespace() {
        let dns = dns_config(&pod(), &ctx()).unwrap();
        assert_eq!(dns.servers, ["10.96.0.10"]);
        assert_eq!(
            dns.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(dns.options, ["ndots:5"]);
        let mut p = pod();
        p.spec.as_mut().unwrap().dns_policy = Some("Default".into());
        assert_eq!(dns_config(&p, &ctx()), None);
    }

    #[test]
    fn env_resolves_fields_references_and_missing_configmaps() {
        let mut p = pod();
        let spec: &mut PodSpec = p.spec.as_mut().unwrap();
        spec.containers[0].env = Some(vec![
            EnvVar {
                name: "A".into(),
                value: Some("a".into()),
                ..Default::default()
            },
            EnvVar {
                name: "B".into(),
                value: Some("$(A)-b".into()),
                ..Default::default()
            },
            EnvVar {
                name: "NODE".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.nodeName".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        let env = environment(&p, &ctx(), &c).unwrap();
        assert_eq!(
            env,
            [
                ("A".into(), "a".into()),
                ("B".into(), "a-b".into()),
                ("NODE".into(), "n1".into())
            ]
        );
        let mut p2 = p.clone();
        p2.spec.as_mut().unwrap().containers[0].env = Some(vec![EnvVar {
            name: "X".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(k8s_openapi::api::core::v1::ConfigMapKeySelector {
                    name: "cfg".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let c = p2.spec.as_ref().unwrap().containers[0].clone();
        assert_eq!(
            environment(&p2, &ctx(), &c).unwrap_err().0,
            "configmap \"cfg\" not found"
        );
    }

    #[test]
    fn container_configs_carry_labels_logs_and_resources() {
        let mut p = pod();
        p.spec.as_mut().unwrap().containers[0].resources = Some(serde_json::from_value(serde_json::json!({
            "requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}
        })).unwrap());
        p.spec.as_mut().unwrap().containers[0].command = Some(vec!["sh".into()]);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        let config = container_config(&p, &ctx(), &c, 2, 2).unwrap();
        assert_eq!(config.log_path, "c/2.log");
        assert_eq!(config.labels[POD_UID_LABEL], "u1");
        assert_eq!(config.annotations[RESTART_COUNT_ANNOTATION], "2");
        let r = config.linux.unwrap().resources.unwrap();
        assert_eq!(
            (
                r.cpu_shares,
                r.cpu_quota,
                r.cpu_period,
                r.memory_limit_in_bytes
            ),
            (256, 50_000, 100_000, 128 << 20)
        );
        assert!((3..=999).contains(&r.oom_score_adj));
    }

    #[test]
    fn sandbox_configs_map_host_ports_and_namespaces() {
        let mut p = pod();
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![
            serde_json::from_value(serde_json::json!({"containerPort": 80, "hostPort": 8080}))
                .unwrap(),
        ]);
        let config = sandbox_config(&p, &ctx(), 1);
        assert_eq!(config.port_mappings[0].host_port, 8080);
        assert_eq!(config.hostname, "web");
        assert_eq!(config.metadata.unwrap().attempt, 1);
    }
}
