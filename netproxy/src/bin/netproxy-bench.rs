//! Benchmark of the sync path against the real kernel, meant to run inside a throwaway network
//! namespace (hack/bench/netproxy.sh makes one): for 1,000 and 10,000 services with 10
//! endpoints each, the full sync time and the time to apply one endpoint change, the process
//! RSS holding 10,000 services, and first-packet (TCP connect) latency to a cluster IP among
//! them, for the nftables and the iptables backend side by side. The same `Syncer` and apply
//! layers as the daemon; no API server involved.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use netproxy::apply::{ConntrackCommand, IptablesCommand, Nft, NftCommand, iptables_cleanup};
use netproxy::model::{Endpoint, Protocol, ServicePort, ServicePortName};
use netproxy::rules::Config;
use netproxy::sync::{Backend, IptablesBackend, Kind, NftBackend, Syncer};

const ENDPOINTS: usize = 10;
/// The probe service's cluster IP and its single endpoint (a local address in the netns).
const PROBE_IP: Ipv4Addr = Ipv4Addr::new(10, 95, 255, 254);
const PROBE_EP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

fn port(i: usize, moved: bool) -> ServicePort {
    let endpoints: Vec<Endpoint> = (0..ENDPOINTS)
        .map(|j| Endpoint {
            ip: Ipv4Addr::new(
                10,
                (200 + i / 65536) as u8,
                ((i / 256) % 256) as u8,
                if moved && j == 0 { 250 } else { j as u8 + 1 },
            ),
            port: 8080,
            local: true,
        })
        .collect();
    ServicePort {
        name: ServicePortName {
            namespace: "bench".into(),
            name: format!("svc-{i}"),
            port: "http".into(),
            protocol: Protocol::Tcp,
        },
        cluster_ips: vec![Ipv4Addr::new(
            10,
            (96 + i / 65536) as u8,
            ((i / 256) % 256) as u8,
            (i % 256) as u8,
        )],
        port: 80,
        node_port: None,
        external_ips: vec![],
        lb_ips: vec![],
        affinity_seconds: None,
        external_local: false,
        internal_local: false,
        cluster_endpoints: endpoints.clone(),
        external_endpoints: endpoints,
    }
}

fn probe() -> ServicePort {
    let ep = vec![Endpoint {
        ip: PROBE_EP,
        port: 8080,
        local: true,
    }];
    let mut p = port(0, false);
    p.name.name = "zz-probe".into();
    p.cluster_ips = vec![PROBE_IP];
    p.cluster_endpoints = ep.clone();
    p.external_endpoints = ep;
    p
}

fn model(n: usize, moved: Option<usize>) -> BTreeMap<ServicePortName, ServicePort> {
    let mut m: BTreeMap<ServicePortName, ServicePort> = (0..n)
        .map(|i| {
            let p = port(i, moved == Some(i));
            (p.name.clone(), p)
        })
        .collect();
    let p = probe();
    m.insert(p.name.clone(), p);
    m
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// TCP connect latency to the probe cluster IP (a fresh connection, so a first packet, each).
fn connect_latency(samples: usize) -> anyhow::Result<(f64, f64)> {
    let target = SocketAddr::from((PROBE_IP, 80));
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .context("connect to the probe cluster IP")?;
        v.push(ms(t.elapsed()));
        drop(s);
    }
    Ok((percentile(&mut v, 0.5), percentile(&mut v, 0.99)))
}

fn main() -> anyhow::Result<()> {
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        bail!("needs /proc");
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("sizes are numbers"))
        .collect::<anyhow::Result<_>>()?;
    let sizes = if sizes.is_empty() {
        vec![1000, 10000]
    } else {
        sizes
    };
    let listener = TcpListener::bind((PROBE_EP, 8080))
        .context("probe listener (the script puts 10.255.0.1 on lo)")?;
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    println!(
        "{:<9} {:>8} {:>10} {:>13} {:>11} {:>12} {:>12} {:>9}",
        "backend",
        "services",
        "endpoints",
        "full_sync_ms",
        "delta_ms",
        "connect_p50",
        "connect_p99",
        "rss_mib"
    );
    // iptables-restore of 10,000 services (110,000 chains) ran for more than five minutes on
    // the 2-core test machine (iptables-nft 1.8.9), so larger sizes are opt-in.
    let iptables_max: usize = std::env::var("NETPROXY_BENCH_IPTABLES_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    for (n, mode) in sizes
        .iter()
        .flat_map(|n| [(*n, "nftables"), (*n, "iptables")])
    {
        if mode == "iptables" && n > iptables_max {
            println!("{mode:<9} {n:>8}  skipped: above NETPROXY_BENCH_IPTABLES_MAX={iptables_max}");
            continue;
        }
        NftCommand.delete_table()?;
        iptables_cleanup(&IptablesCommand)?;
        let backend: Box<dyn Backend> = if mode == "nftables" {
            Box::new(NftBackend::new(Config::default(), Box::new(NftCommand)))
        } else {
            Box::new(IptablesBackend::new(
                Config::default(),
                Box::new(IptablesCommand),
            ))
        };
        let mut syncer = Syncer::new(backend, Box::new(ConntrackCommand));
        let base = model(n, None);
        let t = Instant::now();
        syncer.sync(Kind::Full, base.clone())?;
        let full = t.elapsed();
        let moved = model(n, Some(n / 2));
        let mut deltas = Vec::new();
        for round in 0..5 {
            let next = if round % 2 == 0 { &moved } else { &base }.clone();
            let t = Instant::now();
            let r = syncer.sync(Kind::Delta, next)?;
            deltas.push(ms(t.elapsed()));
            if r.changed != 1 {
                bail!("expected one changed service port, got {}", r.changed);
            }
        }
        let delta = percentile(&mut deltas, 0.5);
        let (p50, p99) = connect_latency(200)?;
        let counts = syncer.counts();
        println!(
            "{:<9} {:>8} {:>10} {:>13.1} {:>11.1} {:>10.3}ms {:>10.3}ms {:>9.1}",
            mode,
            counts.services,
            counts.endpoints,
            ms(full),
            delta,
            p50,
            p99,
            rss_mib()
        );
        drop(syncer);
        NftCommand.delete_table()?;
        iptables_cleanup(&IptablesCommand)?;
    }
    Ok(())
}
