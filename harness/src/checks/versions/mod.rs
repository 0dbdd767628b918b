//! One check that every place naming the extension's version agrees: the
//! crate manifests, the control file, the SQL scripts, the changelog and
//! the upgrade guide (one section per upgrade script).

pub mod command;

use std::path::Path;

fn read(root: &Path, rel: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: {e}"))
}

/// `[0, 39, 0]` from `"0.39.0"`.
fn parse(v: &str) -> Option<Vec<u64>> {
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// The workspace version from the root manifest.
pub fn workspace_version(root: &Path) -> Result<String, String> {
    let toml = read(root, "Cargo.toml")?;
    toml.lines()
        .find_map(|l| {
            l.strip_prefix("version = \"")
                .and_then(|r| r.strip_suffix('"'))
        })
        .map(str::to_string)
        .ok_or_else(|| "Cargo.toml: no workspace version".to_string())
}

/// Every disagreement found; empty when all agree.
pub fn problems(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let version = match workspace_version(root) {
        Ok(v) => v,
        Err(e) => return vec![e],
    };
    let Some(current) = parse(&version) else {
        return vec![format!("Cargo.toml: version {version} is not x.y.z")];
    };
    for manifest in [
        "engine/core/Cargo.toml",
        "engine/ext/Cargo.toml",
        "harness/Cargo.toml",
        "oracles/Cargo.toml",
        "sqlancer/Cargo.toml",
    ] {
        match read(root, manifest) {
            Ok(t) if t.contains("version.workspace = true") => {}
            Ok(_) => out.push(format!("{manifest}: does not take the workspace version")),
            Err(e) => out.push(e),
        }
    }
    match read(root, "engine/ext/pg_trickle.control") {
        Ok(t)
            if t.contains("default_version = '@CARGO_VERSION@'")
                || t.contains(&format!("default_version = '{version}'")) => {}
        Ok(_) => out.push(format!(
            "engine/ext/pg_trickle.control: default_version is not {version}"
        )),
        Err(e) => out.push(e),
    }
    // SQL scripts: none newer than the current version; the current one
    // is either frozen or reached by an upgrade script.
    let mut installs = Vec::new();
    let mut upgrades = Vec::new();
    match std::fs::read_dir(root.join("engine/ext/sql")) {
        Ok(dir) => {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(stem) = name
                    .strip_prefix("pg_trickle--")
                    .and_then(|n| n.strip_suffix(".sql"))
                else {
                    continue;
                };
                match stem.split_once("--") {
                    Some((from, to)) => upgrades.push((from.to_string(), to.to_string())),
                    None => installs.push(stem.to_string()),
                }
            }
        }
        Err(e) => out.push(format!("engine/ext/sql: {e}")),
    }
    for v in installs.iter().chain(upgrades.iter().map(|(_, t)| t)) {
        if parse(v).is_some_and(|p| p > current) {
            out.push(format!(
                "engine/ext/sql: a script for {v}, newer than the crate version {version}"
            ));
        }
    }
    if !installs.contains(&version) && !upgrades.iter().any(|(_, t)| *t == version) {
        out.push(format!(
            "engine/ext/sql: neither an install script nor an upgrade script for {version}"
        ));
    }
    match read(root, "CHANGELOG.md") {
        Ok(t) => {
            let first = t
                .lines()
                .find(|l| l.starts_with("## ") && l[3..].starts_with(|c: char| c.is_ascii_digit()));
            if first.is_none_or(|l| l[3..].split_whitespace().next() != Some(version.as_str())) {
                out.push(format!(
                    "CHANGELOG.md: the newest version section is {first:?}, not {version}"
                ));
            }
        }
        Err(e) => out.push(e),
    }
    match read(root, "docs/UPGRADING.md") {
        Ok(t) => {
            for (from, to) in &upgrades {
                if !t.contains(&format!("## {from} → {to}")) {
                    out.push(format!(
                        "docs/UPGRADING.md: no section \"## {from} → {to}\" for its upgrade script"
                    ));
                }
            }
        }
        Err(e) => out.push(e),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_place_names_the_same_version() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = problems(&root);
        assert!(p.is_empty(), "version drift:\n{}", p.join("\n"));
    }

    #[test]
    fn drift_is_reported() {
        let dir = std::env::temp_dir().join(format!("pgt-versions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("engine/ext/sql")).unwrap();
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace.package]\nversion = \"0.40.0\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("engine/ext/pg_trickle.control"),
            "default_version = '0.39.0'\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("engine/ext/sql/pg_trickle--0.39.0--0.41.0.sql"),
            "",
        )
        .unwrap();
        std::fs::write(dir.join("CHANGELOG.md"), "# Changelog\n\n## 0.39.0\n").unwrap();
        std::fs::write(dir.join("docs/UPGRADING.md"), "# Upgrading\n").unwrap();
        let p = problems(&dir).join("\n");
        for needle in [
            "pg_trickle.control",
            "newer than the crate version",
            "no install script",
            "CHANGELOG.md",
            "0.39.0 → 0.41.0",
        ] {
            let needle = if needle == "no install script" {
                "neither an install script"
            } else {
                needle
            };
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
