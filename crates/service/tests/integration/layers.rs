//! The service's modules import one way (lib.rs, "Layout"): http -> app -> store ->
//! domain, with telemetry and configuration below everything that uses them. Read from
//! the source, so a new import that runs back up fails here.

use std::path::{Path, PathBuf};

/// Each layer, and the layers of this crate it may use.
const LAYERS: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("telemetry", &[]),
    ("configuration.rs", &[]),
    ("store", &["domain"]),
    ("app", &["domain", "store", "telemetry", "configuration"]),
    ("http", &["domain", "store", "telemetry", "configuration", "app"]),
];

fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    std::fs::read_dir(path).unwrap().flatten().flat_map(|e| sources(&e.path())).collect()
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for (layer, allowed) in LAYERS {
        let own = layer.trim_end_matches(".rs");
        for file in sources(&src.join(layer)).into_iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for used in line.split("crate::").skip(1) {
                    let module: String = used.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    assert!(
                        module == own || allowed.contains(&module.as_str()),
                        "{}:{}: {own} uses crate::{module}, which is not below it",
                        file.display(),
                        n + 1
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 50, "too few imports found ({checked}): is the layout still src/<layer>?");
}

/// The PG's wire types stop at the use cases: the shop's own types and its records do not
/// change when the PG's JSON does.
#[test]
fn the_domain_and_the_store_know_nothing_of_the_pg() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut read = 0;
    for layer in ["domain", "store"] {
        for file in sources(&src.join(layer)) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains("gateway::"), "{} names the gateway crate", file.display());
            read += 1;
        }
    }
    assert!(read >= 6, "too few files read ({read})");
}
