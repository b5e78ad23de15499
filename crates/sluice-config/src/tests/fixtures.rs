//! Every Litestream fixture's config must parse cleanly: no errors, no warnings.

use std::path::{Path, PathBuf};

use crate::Config;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/litestream-0.5.17")
}

#[test]
fn fixture_configs_parse_without_warnings() {
    let workdir = tempfile::tempdir().expect("tempdir");
    let work = workdir.path().to_str().expect("utf-8 temp path");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(fixtures_dir()).expect("fixtures dir").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let manifest = entry.path().join("manifest.json");
        let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
        let json: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
        let Some(yaml) = json.get("config_yaml").and_then(|v| v.as_str()) else { continue };
        let yaml = yaml.replace("<workdir>", work);
        let cfg =
            Config::parse_with_env(&yaml, true, &super::env).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        assert!(cfg.warnings.is_empty(), "{}: {:?}", manifest.display(), cfg.warnings);
        assert!(!cfg.dbs.is_empty(), "{}", manifest.display());
        for db in &cfg.dbs {
            assert!(db.path.starts_with(work), "{}", db.path.display());
            let url = db.replica.storage.url.as_deref().unwrap_or_default();
            assert!(url.starts_with(&format!("file://{work}")), "{url}");
        }
        checked += 1;
    }
    // No silent skips: the fixture set has configs.
    assert!(checked >= 7, "only {checked} fixture configs found");
}
