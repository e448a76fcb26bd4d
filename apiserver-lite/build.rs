//! Locates the generated sources of the k8s-pb crate (prost bindings of the Kubernetes
//! protobuf schema) so the protobuf request decoder can read its field numbers and types with
//! `include_str!`. k8s-pb is a dependency, so cargo has its sources on disk: `cargo metadata`
//! (restricted to the target platform, offline) names the place; the registry's source
//! directory is the fallback.

use std::path::PathBuf;
use std::process::Command;

const VERSION: &str = "0.9.0";

fn from_metadata() -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = format!("{}/Cargo.toml", std::env::var("CARGO_MANIFEST_DIR").ok()?);
    let target = std::env::var("TARGET").ok()?;
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &target,
            "--manifest-path",
            &manifest,
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        println!(
            "cargo:warning=cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
        return None;
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let package = meta["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "k8s-pb")?;
    Some(
        PathBuf::from(package["manifest_path"].as_str()?)
            .parent()?
            .join("src"),
    )
}

fn from_registry() -> Option<PathBuf> {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .ok()
        .or_else(|| {
            std::env::var("HOME")
                .ok()
                .map(|h| PathBuf::from(h).join(".cargo"))
        })?;
    std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .filter_map(Result::ok)
        .map(|index| index.path().join(format!("k8s-pb-{VERSION}/src")))
        .find(|p| p.join("lib.rs").exists())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let src = from_metadata()
        .or_else(from_registry)
        .expect("the sources of the k8s-pb dependency");
    println!("cargo:rustc-env=K8S_PB_SRC={}", src.display());
}
