//! Writes the OpenAPI documents to a directory, for checking them with kubectl or a validator:
//! `cargo run -p apimachinery --example openapi_dump -- /tmp/openapi`. Writes `v3.json` (the
//! root), `v3/api__v1.json`, `v3/apis__apps__v1.json`, ... `v2.json` and `v2.pb` (protobuf).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "openapi-dump".into()),
    );
    std::fs::create_dir_all(dir.join("v3"))?;
    let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("JSON serializes");
    std::fs::write(
        dir.join("v3.json"),
        pretty(&apimachinery::openapi::v3_root()),
    )?;
    for (group, versions) in apimachinery::resources::groups() {
        for version in versions {
            let doc = apimachinery::openapi::v3_group_version(group, version).expect("served");
            let name = apimachinery::openapi::group_version_path(group, version).replace('/', "__");
            let path = dir.join("v3").join(format!("{name}.json"));
            std::fs::write(&path, pretty(&doc))?;
            println!("{}", path.display());
        }
    }
    std::fs::write(dir.join("v2.json"), pretty(&apimachinery::openapi::v2()))?;
    std::fs::write(dir.join("v2.pb"), apimachinery::openapi::v2_protobuf())?;
    println!("{}", dir.join("v2.json").display());
    Ok(())
}
