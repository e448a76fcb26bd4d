//! The agent's own Prometheus metrics (`/metrics` on the kubelet API), with kubelet's names:
//! `kubelet_node_name`, `kubelet_running_pods`, `kubelet_running_containers` by state, the CRI
//! calls as `kubelet_runtime_operations_total`, `kubelet_runtime_operations_errors_total` and
//! the `kubelet_runtime_operations_duration_seconds` histogram (upstream's buckets), and the
//! process's `process_start_time_seconds`, `process_cpu_seconds_total` and
//! `process_resident_memory_bytes`. [`RuntimeMetrics`] is filled by the CRI client; [`render`]
//! is pure.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the duration histogram: 5 ms growing 2.5 times, 14 buckets, as kubelet.
pub fn duration_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.005 * 2.5f64.powi(i)).collect()
}

/// Counts of one CRI operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationStats {
    /// Calls.
    pub total: u64,
    /// Failed calls.
    pub errors: u64,
    /// Calls per bucket of [`duration_buckets`] (not cumulative).
    pub buckets: Vec<u64>,
    /// Sum of durations, seconds.
    pub seconds: f64,
}

/// CRI calls made, by operation.
#[derive(Debug, Default)]
pub struct RuntimeMetrics {
    operations: Mutex<BTreeMap<&'static str, OperationStats>>,
}

impl RuntimeMetrics {
    /// Records one call of `call` (the CRI method, e.g. `RunPodSandbox`).
    pub fn record(&self, call: &'static str, took: Duration, failed: bool) {
        let bounds = duration_buckets();
        let mut operations = self.operations.lock().unwrap_or_else(|p| p.into_inner());
        let stats = operations.entry(call).or_insert_with(|| OperationStats {
            buckets: vec![0; bounds.len() + 1],
            ..OperationStats::default()
        });
        stats.total += 1;
        stats.errors += u64::from(failed);
        let seconds = took.as_secs_f64();
        stats.seconds += seconds;
        let bucket = bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(bounds.len());
        stats.buckets[bucket] += 1;
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> BTreeMap<&'static str, OperationStats> {
        self.operations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// kubelet's `operation_type` of a CRI method: `RunPodSandbox` is `run_podsandbox`.
pub fn operation_type(call: &str) -> String {
    let mut snake = String::new();
    for (i, c) in call.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake.replace("pod_sandbox", "podsandbox")
}

/// The agent process's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessNumbers {
    /// Start time, seconds since the epoch.
    pub start_seconds: f64,
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub resident_bytes: u64,
}

/// Reads this process's numbers from /proc (zeros where unreadable).
pub fn process_numbers() -> ProcessNumbers {
    const TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: state is field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> f64 {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let resident_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    ProcessNumbers {
        start_seconds: boot + field(22) / TICKS,
        cpu_seconds: (field(14) + field(15)) / TICKS,
        resident_bytes: resident_pages * 4096,
    }
}

/// What `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct MetricsInput {
    /// This node.
    pub node_name: String,
    /// Pods with a ready sandbox.
    pub running_pods: u64,
    /// Containers by CRI state (`running`, `exited`, `created`, `unknown`).
    pub containers_by_state: BTreeMap<String, u64>,
    /// CRI calls.
    pub operations: BTreeMap<&'static str, OperationStats>,
    /// The process.
    pub process: ProcessNumbers,
}

/// The Prometheus text of `input`.
pub fn render(input: &MetricsInput) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<String>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for sample in samples {
            out.push_str(&sample);
            out.push('\n');
        }
    };
    family(
        "kubelet_node_name",
        "[ALPHA] The node's name. The count is always 1.",
        "gauge",
        vec![format!(
            "kubelet_node_name{{node=\"{}\"}} 1",
            input.node_name
        )],
    );
    family(
        "kubelet_running_pods",
        "[ALPHA] Number of pods that have a running pod sandbox",
        "gauge",
        vec![format!("kubelet_running_pods {}", input.running_pods)],
    );
    family(
        "kubelet_running_containers",
        "[ALPHA] Number of containers currently running",
        "gauge",
        input
            .containers_by_state
            .iter()
            .map(|(state, n)| {
                format!("kubelet_running_containers{{container_state=\"{state}\"}} {n}")
            })
            .collect(),
    );
    let ops = &input.operations;
    family(
        "kubelet_runtime_operations_total",
        "[ALPHA] Cumulative number of runtime operations by operation type.",
        "counter",
        ops.iter()
            .map(|(call, s)| {
                format!(
                    "kubelet_runtime_operations_total{{operation_type=\"{}\"}} {}",
                    operation_type(call),
                    s.total
                )
            })
            .collect(),
    );
    family(
        "kubelet_runtime_operations_errors_total",
        "[ALPHA] Cumulative number of runtime operation errors by operation type.",
        "counter",
        ops.iter()
            .filter(|(_, s)| s.errors > 0)
            .map(|(call, s)| {
                format!(
                    "kubelet_runtime_operations_errors_total{{operation_type=\"{}\"}} {}",
                    operation_type(call),
                    s.errors
                )
            })
            .collect(),
    );
    let bounds = duration_buckets();
    let mut histogram = Vec::new();
    for (call, s) in ops {
        let op = operation_type(call);
        let name = "kubelet_runtime_operations_duration_seconds";
        let mut cumulative = 0;
        for (bound, count) in bounds.iter().zip(&s.buckets) {
            cumulative += count;
            histogram.push(format!(
                "{name}_bucket{{operation_type=\"{op}\",le=\"{bound}\"}} {cumulative}"
            ));
        }
        histogram.push(format!(
            "{name}_bucket{{operation_type=\"{op}\",le=\"+Inf\"}} {}",
            s.total
        ));
        histogram.push(format!(
            "{name}_sum{{operation_type=\"{op}\"}} {}",
            s.seconds
        ));
        histogram.push(format!(
            "{name}_count{{operation_type=\"{op}\"}} {}",
            s.total
        ));
    }
    family(
        "kubelet_runtime_operations_duration_seconds",
        "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.",
        "histogram",
        histogram,
    );
    let p = input.process;
    family(
        "process_start_time_seconds",
        "[ALPHA] Start time of the process since unix epoch in seconds.",
        "gauge",
        vec![format!("process_start_time_seconds {}", p.start_seconds)],
    );
    family(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        vec![format!("process_cpu_seconds_total {}", p.cpu_seconds)],
    );
    family(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
        vec![format!(
            "process_resident_memory_bytes {}",
            p.resident_bytes
        )],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_types_are_kubelets() {
        assert_eq!(operation_type("RunPodSandbox"), "run_podsandbox");
        assert_eq!(
            operation_type("ListPodSandboxStats"),
            "list_podsandbox_stats"
        );
        assert_eq!(operation_type("PodSandboxStatus"), "podsandbox_status");
        assert_eq!(operation_type("ExecSync"), "exec_sync");
        assert_eq!(operation_type("ImageFsInfo"), "image_fs_info");
    }

    #[test]
    fn calls_are_counted_timed_and_rendered() {
        let metrics = RuntimeMetrics::default();
        metrics.record("RunPodSandbox", Duration::from_millis(3), false);
        metrics.record("RunPodSandbox", Duration::from_millis(40), true);
        metrics.record("Version", Duration::from_secs(1000), false);
        let input = MetricsInput {
            node_name: "n1".into(),
            running_pods: 2,
            containers_by_state: BTreeMap::from([("running".into(), 3), ("exited".into(), 1)]),
            operations: metrics.snapshot(),
            process: ProcessNumbers {
                start_seconds: 1.5,
                cpu_seconds: 2.0,
                resident_bytes: 4096,
            },
        };
        let text = render(&input);
        for line in [
            "kubelet_node_name{node=\"n1\"} 1",
            "kubelet_running_pods 2",
            "kubelet_running_containers{container_state=\"running\"} 3",
            "kubelet_runtime_operations_total{operation_type=\"run_podsandbox\"} 2",
            "kubelet_runtime_operations_errors_total{operation_type=\"run_podsandbox\"} 1",
            "kubelet_runtime_operations_duration_seconds_bucket{operation_type=\"run_podsandbox\",le=\"0.005\"} 1",
            "kubelet_runtime_operations_duration_seconds_bucket{operation_type=\"version\",le=\"+Inf\"} 1",
            "kubelet_runtime_operations_duration_seconds_count{operation_type=\"version\"} 1",
            "process_resident_memory_bytes 4096",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // 40 ms falls in the fourth bucket (78 ms); 1000 s in none of them.
        let bucket = |op: &str, index: usize| {
            let prefix = format!(
                "kubelet_runtime_operations_duration_seconds_bucket{{operation_type=\"{op}\",le=\"{}\"}} ",
                duration_buckets()[index]
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .map(|v| v.to_string())
        };
        assert_eq!(bucket("run_podsandbox", 2).as_deref(), Some("1"));
        assert_eq!(bucket("run_podsandbox", 3).as_deref(), Some("2"));
        assert_eq!(bucket("version", 13).as_deref(), Some("0"));
        assert!(!text.contains("errors_total{operation_type=\"version\"}"));
    }

    #[test]
    fn this_process_has_numbers() {
        let p = process_numbers();
        assert!(p.resident_bytes > 0 && p.start_seconds > 1e9, "{p:?}");
    }
}
