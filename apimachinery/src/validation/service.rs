//! Services.

use serde_json::{Value, json};

use super::formats;
use super::pod::port_or_name;
use super::{Detail, each_problem, labels, one_of};
use crate::names;
use crate::status::FieldCause;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Validates a Service on create and update.
pub fn service(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    one_of(&spec["type"], "spec.type", TYPES, false, errs);
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldCause::required("spec.ports"));
    }
    if ty == "ExternalName" {
        match spec["externalName"].as_str().filter(|n| !n.is_empty()) {
            None => errs.push(FieldCause::required("spec.externalName")),
            Some(name) => {
                let trimmed = name.strip_suffix('.').unwrap_or(name);
                each_problem(
                    names::dns1123_subdomain(trimmed),
                    "spec.externalName",
                    name,
                    errs,
                );
            }
        }
        if spec["clusterIP"].as_str().is_some_and(|ip| !ip.is_empty()) {
            errs.push(FieldCause::forbidden(
                "spec.clusterIP",
                "may not be set for ExternalName services",
            ));
        }
    }
    if let Some(ip) = spec["clusterIP"]
        .as_str()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        each_problem(formats::ip(ip), "spec.clusterIP", ip, errs);
    }
    let mut names_seen: Vec<&str> = Vec::new();
    let mut keys_seen: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        match p["name"].as_str().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => errs.push(FieldCause::required(format!("{at}.name"))),
            None => {}
            Some(name) => {
                each_problem(
                    names::dns1123_label(name),
                    &format!("{at}.name"),
                    name,
                    errs,
                );
                if names_seen.contains(&name) {
                    errs.push(FieldCause::duplicate(format!("{at}.name"), name));
                }
                names_seen.push(name);
            }
        }
        super::port_and_protocol(p, &at, true, errs);
        let port = p["port"].as_i64().unwrap_or(0);
        if !p["targetPort"].is_null() {
            port_or_name(&p["targetPort"], &format!("{at}.targetPort"), errs);
        }
        if let Some(node_port) = p["nodePort"].as_i64().filter(|n| *n != 0) {
            if ty == "ClusterIP" || ty == "ExternalName" {
                errs.push(FieldCause::forbidden(
                    format!("{at}.nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            } else {
                for m in formats::port_number(node_port) {
                    errs.push(FieldCause::invalid(format!("{at}.nodePort"), node_port, m));
                }
            }
        }
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        if keys_seen.contains(&(port, protocol)) {
            errs.push(FieldCause::duplicate(
                at,
                json!({"port": port, "protocol": protocol}),
            ));
        }
        keys_seen.push((port, protocol));
    }
    labels(&spec["selector"], "spec.selector", errs);
    one_of(
        &spec["sessionAffinity"],
        "spec.sessionAffinity",
        &["ClientIP", "None"],
        false,
        errs,
    );
    if let Some(t) = spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].as_i64()
        && !(1..=86400).contains(&t)
    {
        errs.push(FieldCause::invalid(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            t,
            "must be greater than 0 and less than 86400",
        ));
    }
    let has_external_ips = spec["externalIPs"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    let external = ty == "NodePort" || ty == "LoadBalancer" || has_external_ips;
    if let Some(policy) = spec["externalTrafficPolicy"]
        .as_str()
        .filter(|p| !p.is_empty())
    {
        if !external {
            errs.push(FieldCause::invalid(
                "spec.externalTrafficPolicy",
                policy,
                "may only be set for externally-accessible services",
            ));
        } else {
            one_of(
                &spec["externalTrafficPolicy"],
                "spec.externalTrafficPolicy",
                &["Cluster", "Local"],
                false,
                errs,
            );
        }
    }
    one_of(
        &spec["internalTrafficPolicy"],
        "spec.internalTrafficPolicy",
        &["Cluster", "Local"],
        false,
        errs,
    );
    one_of(
        &spec["ipFamilyPolicy"],
        "spec.ipFamilyPolicy",
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
        false,
        errs,
    );
    for (i, ip) in spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ip = ip.as_str().unwrap_or("");
        each_problem(formats::ip(ip), &format!("spec.externalIPs[{i}]"), ip, errs);
    }
    if !spec["loadBalancerClass"].is_null() && ty != "LoadBalancer" {
        errs.push(FieldCause::forbidden(
            "spec.loadBalancerClass",
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if let Some(old) = old {
        update(spec, &old["spec"], errs);
    }
}

fn first_cluster_ip(spec: &Value) -> Option<&str> {
    spec["clusterIPs"][0]
        .as_str()
        .or_else(|| spec["clusterIP"].as_str())
        .filter(|ip| !ip.is_empty())
}

fn update(spec: &Value, old: &Value, errs: &mut Vec<FieldCause>) {
    // A type change to ExternalName releases the address; otherwise it stays. An update that
    // leaves it out keeps the allocated one (the server carries it over).
    let to_external_name = spec["type"] == "ExternalName";
    if let (Some(old_ip), Some(new_ip)) = (first_cluster_ip(old), first_cluster_ip(spec))
        && old_ip != new_ip
        && !to_external_name
    {
        let shown = if spec["clusterIPs"].is_array() {
            spec["clusterIPs"].clone()
        } else {
            json!([new_ip])
        };
        errs.push(FieldCause::invalid(
            "spec.clusterIPs[0]",
            shown,
            "may not change once set",
        ));
    }
    if !old["loadBalancerClass"].is_null()
        && spec["loadBalancerClass"] != old["loadBalancerClass"]
        && spec["type"] == "LoadBalancer"
        && old["type"] == "LoadBalancer"
    {
        errs.push(
            FieldCause::invalid(
                "spec.loadBalancerClass",
                spec["loadBalancerClass"].clone(),
                "",
            )
            .detail("may not change once set"),
        );
    }
}
