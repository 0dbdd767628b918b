//! A private copy of a PostgreSQL installation, so that the upgrade matrix
//! can put other builds of pg_trickle in place without touching the
//! installation it was pointed at (which other clusters, other runs and
//! other people may be using at the same moment).
//!
//! PostgreSQL installations are relocatable: a program finds the share and
//! library directories relative to its own (symlink-resolved) location, by
//! replacing the part of its compiled-in bin directory that differs from
//! the compiled-in target directory. A copy that keeps every directory at
//! its original absolute path below a new root (`<root>/usr/lib/...` for
//! `/usr/lib/...`) therefore finds its own files, and so does its
//! `pg_config`; [`PrivateInstallation::create`] checks exactly that after
//! copying. The copy holds the bin, package library and share directories,
//! without any pg_trickle file of the original.
//!
//! Builds go in as packages: `cargo pgrx package` against the original
//! `pg_config` lays its files out below an output directory at the original
//! absolute paths (the same mirrored layout), and
//! [`PrivateInstallation::install_package`] copies its library, control
//! file and SQL scripts into the copy.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The extension whose files the copy leaves out and packages put in.
pub const EXTENSION: &str = "pg_trickle";

/// The directories of an installation that a server reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Programs (`pg_config --bindir`).
    pub bindir: PathBuf,
    /// Loadable modules (`pg_config --pkglibdir`).
    pub pkglibdir: PathBuf,
    /// Architecture-independent files (`pg_config --sharedir`).
    pub sharedir: PathBuf,
}

impl Layout {
    /// Ask `pg_config` for the directories.
    pub fn of(pg_config: &Path) -> Result<Layout, String> {
        let out = Command::new(pg_config)
            .args(["--bindir", "--pkglibdir", "--sharedir"])
            .output()
            .map_err(|e| format!("running {}: {e}", pg_config.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} --bindir --pkglibdir --sharedir failed ({}): {}",
                pg_config.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let [bindir, pkglibdir, sharedir] = lines.as_slice() else {
            return Err(format!(
                "{} printed {} line(s) for three directories: {text}",
                pg_config.display(),
                lines.len()
            ));
        };
        let layout = Layout {
            bindir: bindir.into(),
            pkglibdir: pkglibdir.into(),
            sharedir: sharedir.into(),
        };
        for dir in layout.dirs() {
            if !dir.is_absolute() {
                return Err(format!(
                    "{} reports a relative directory {}",
                    pg_config.display(),
                    dir.display()
                ));
            }
        }
        Ok(layout)
    }

    /// Where `CREATE EXTENSION` looks for control files and scripts.
    pub fn extension_dir(&self) -> PathBuf {
        self.sharedir.join("extension")
    }

    /// The directories a copy holds.
    pub fn dirs(&self) -> [&Path; 3] {
        [&self.bindir, &self.pkglibdir, &self.sharedir]
    }

    /// The same layout mirrored below `root` (see [`mirrored`]).
    pub fn mirrored(&self, root: &Path) -> Layout {
        Layout {
            bindir: mirrored(root, &self.bindir),
            pkglibdir: mirrored(root, &self.pkglibdir),
            sharedir: mirrored(root, &self.sharedir),
        }
    }
}

/// `abs` below `root`, at its own absolute path: `/usr/lib/x` below
/// `/tmp/i` is `/tmp/i/usr/lib/x`. `cargo pgrx package --out-dir` lays
/// out files the same way.
/// A `..` resolves as it would at `/`, so nothing climbs out of `root`.
pub fn mirrored(root: &Path, abs: &Path) -> PathBuf {
    let mut parts = Vec::new();
    for c in abs.components() {
        match c {
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
        }
    }
    let mut out = root.to_path_buf();
    out.extend(parts);
    out
}

/// Whether a file named `name` in the package library or extension
/// directory belongs to pg_trickle: its library (`pg_trickle.so`, or a
/// versioned `pg_trickle-0.39.0.so`), control file or SQL scripts.
pub fn is_extension_file(name: &str) -> bool {
    name.strip_prefix(EXTENSION)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('-'))
}

/// Where a file of a package goes: `rel` is its path inside the package
/// directory, which is its absolute path in the original installation.
/// Only the library in the package library directory and the control file
/// and SQL scripts in the extension directory are accepted.
pub fn placement(rel: &Path, original: &Layout) -> Result<PathBuf, String> {
    let abs = mirrored(Path::new("/"), rel);
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = abs.parent().unwrap_or(Path::new("/"));
    let ok = is_extension_file(&name)
        && ((parent == original.pkglibdir && name.ends_with(std::env::consts::DLL_SUFFIX))
            || (parent == original.extension_dir()
                && (name.ends_with(".control") || name.ends_with(".sql"))));
    if ok {
        Ok(abs)
    } else {
        Err(format!(
            "{} is neither {EXTENSION}'s library in {} nor its control file or SQL script in {}",
            abs.display(),
            original.pkglibdir.display(),
            original.extension_dir().display()
        ))
    }
}

/// A copy of an installation in a directory of its own, removed when
/// dropped unless [`PrivateInstallation::keep`] was called.
pub struct PrivateInstallation {
    /// The directory holding the copy (`root/`) and packages (`packages/`).
    pub dir: PathBuf,
    original: Layout,
    copy: Layout,
    keep: bool,
}

impl PrivateInstallation {
    /// Copy the installation of `pg_config` into `dir` (which must not
    /// exist yet, or be empty), leaving out pg_trickle's files, and check
    /// that the copy's `pg_config` reports the copy's own directories.
    pub fn create(pg_config: &Path, dir: &Path) -> Result<PrivateInstallation, String> {
        let original = Layout::of(pg_config)?;
        if dir.exists()
            && std::fs::read_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .next()
                .is_some()
        {
            return Err(format!(
                "{} exists and is not empty; a private installation starts empty",
                dir.display()
            ));
        }
        create_dir(dir)?;
        // The programs resolve their own path with symlinks resolved;
        // the copy's expected paths must be spelled the same way.
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let root = dir.join("root");
        let copy = original.mirrored(&root);
        let mut inst = PrivateInstallation {
            dir,
            original,
            copy,
            // Until it is complete, a failed copy is removed on drop.
            keep: false,
        };
        for (from, to) in inst.original.dirs().into_iter().zip(inst.copy.dirs()) {
            copy_tree(from, to, &|file: &Path| {
                inst.is_originals_extension_file(file)
            })?;
        }
        let reported = Layout::of(&inst.pg_config())?;
        if reported != inst.copy {
            inst.keep = true;
            return Err(format!(
                "the installation of {} is not relocatable: its copy in {} reports {:?}, not {:?}",
                pg_config.display(),
                inst.dir.display(),
                reported,
                inst.copy
            ));
        }
        Ok(inst)
    }

    /// Whether `file` of the original installation is one of pg_trickle's
    /// (left out of the copy).
    fn is_originals_extension_file(&self, file: &Path) -> bool {
        let parent = file.parent();
        (parent == Some(self.original.pkglibdir.as_path())
            || parent == Some(self.original.extension_dir().as_path()))
            && file
                .file_name()
                .is_some_and(|n| is_extension_file(&n.to_string_lossy()))
    }

    /// The copy's `pg_config`: clusters started with it run the copy's programs.
    pub fn pg_config(&self) -> PathBuf {
        self.copy.bindir.join("pg_config")
    }

    /// The copy's directories.
    pub fn layout(&self) -> &Layout {
        &self.copy
    }

    /// A directory for the package called `name`, inside [`Self::dir`].
    pub fn package_dir(&self, name: &str) -> PathBuf {
        self.dir.join("packages").join(name)
    }

    /// Remove every pg_trickle file from the copy, then copy in those of
    /// the package in `package` (the output directory of `cargo pgrx
    /// package` run against the original `pg_config`). Returns the files
    /// installed.
    pub fn install_package(&self, package: &Path) -> Result<Vec<PathBuf>, String> {
        let mut files = Vec::new();
        list_files(package, &mut files)?;
        let mut placed = Vec::new();
        for file in &files {
            let rel = file.strip_prefix(package).map_err(|e| e.to_string())?;
            let abs = placement(rel, &self.original)
                .map_err(|e| format!("package {}: {e}", package.display()))?;
            placed.push((file, abs));
        }
        let control = self
            .original
            .extension_dir()
            .join(format!("{EXTENSION}.control"));
        let has_library = placed
            .iter()
            .any(|(_, abs)| abs.parent() == Some(self.original.pkglibdir.as_path()));
        if !has_library || !placed.iter().any(|(_, abs)| *abs == control) {
            return Err(format!(
                "package {} lacks {EXTENSION}'s library in {} or its control file {}",
                package.display(),
                self.original.pkglibdir.display(),
                control.display()
            ));
        }
        for dir in [&self.copy.pkglibdir, &self.copy.extension_dir()] {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for e in entries {
                let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
                if is_extension_file(&e.file_name().to_string_lossy()) {
                    std::fs::remove_file(e.path())
                        .map_err(|err| format!("removing {}: {err}", e.path().display()))?;
                }
            }
        }
        let root = self.dir.join("root");
        let mut installed = Vec::new();
        for (file, abs) in placed {
            let dest = mirrored(&root, &abs);
            // Never write through to the original, whatever the package holds.
            if !dest.starts_with(&self.dir) {
                return Err(format!(
                    "{} would be installed outside {}",
                    dest.display(),
                    self.dir.display()
                ));
            }
            std::fs::copy(file, &dest)
                .map_err(|e| format!("copying {} to {}: {e}", file.display(), dest.display()))?;
            installed.push(dest);
        }
        installed.sort();
        Ok(installed)
    }

    /// Keep the copy after drop (for kept clusters), printing where it is.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for PrivateInstallation {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "kept private PostgreSQL installation: {} (programs in {})",
                self.dir.display(),
                self.copy.bindir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // Run as root, the server runs as `postgres` and must read the copy,
    // whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Copy the tree `from` to `to`, following symlinks (a program must be a
/// real file in the copy: PostgreSQL resolves symlinks to find itself),
/// leaving out files for which `skip` says so.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<(), String> {
    create_dir(to)?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", from.display()))?;
        let src = e.path();
        let dest = to.join(e.file_name());
        let meta = match std::fs::metadata(&src) {
            Ok(m) => m,
            // A dangling symlink: nothing to copy.
            Err(_) if std::fs::symlink_metadata(&src).is_ok_and(|m| m.is_symlink()) => continue,
            Err(e) => return Err(format!("{}: {e}", src.display())),
        };
        if meta.is_dir() {
            copy_tree(&src, &dest, skip)?;
        } else if meta.is_file() && !skip(&src) {
            std::fs::copy(&src, &dest)
                .map_err(|e| format!("copying {} to {}: {e}", src.display(), dest.display()))?;
        }
    }
    Ok(())
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = e.path();
        let kind = e
            .file_type()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind.is_dir() {
            list_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's `make_relative_path` (src/port/path.c): how a program
    /// whose own directory is `exec_dir` finds `target`, given the
    /// compiled-in `target` and `bindir`: the tail of `bindir` after the
    /// common prefix the two share must end `exec_dir`; that tail is
    /// replaced by `target`'s. Without such a match the compiled-in path is used.
    fn postgres_relocates(target: &str, bindir: &str, exec_dir: &str) -> String {
        let (t, b) = (target.as_bytes(), bindir.as_bytes());
        let mut prefix = 0;
        for i in 0..t.len().min(b.len()) {
            if t[i] == b'/' && b[i] == b'/' {
                prefix = i + 1;
            } else if t[i] != b[i] {
                break;
            }
        }
        if prefix == 0 {
            return target.to_string();
        }
        let tail = &bindir[prefix..];
        match exec_dir.strip_suffix(tail) {
            Some(head) if head.ends_with('/') => format!("{head}{}", &target[prefix..]),
            _ => target.to_string(),
        }
    }

    fn layout(bin: &str, lib: &str, share: &str) -> Layout {
        Layout {
            bindir: bin.into(),
            pkglibdir: lib.into(),
            sharedir: share.into(),
        }
    }

    #[test]
    fn a_mirrored_copy_is_where_postgres_looks_for_its_files() {
        let root = Path::new("/tmp/pg_trickle-runs/r1/installation/root");
        for l in [
            // Debian and Ubuntu packages.
            layout(
                "/usr/lib/postgresql/15/bin",
                "/usr/lib/postgresql/15/lib",
                "/usr/share/postgresql/15",
            ),
            // A source build's default prefix.
            layout(
                "/usr/local/pgsql/bin",
                "/usr/local/pgsql/lib",
                "/usr/local/pgsql/share",
            ),
            // Red Hat packages.
            layout(
                "/usr/pgsql-15/bin",
                "/usr/pgsql-15/lib",
                "/usr/pgsql-15/share",
            ),
            // Directories with nothing in common below the root.
            layout("/opt/pg/bin", "/srv/pglib", "/data/share/pg"),
        ] {
            let copy = l.mirrored(root);
            let bin = copy.bindir.display().to_string();
            for (orig, moved) in [
                (&l.pkglibdir, &copy.pkglibdir),
                (&l.sharedir, &copy.sharedir),
            ] {
                assert_eq!(
                    postgres_relocates(
                        &orig.display().to_string(),
                        &l.bindir.display().to_string(),
                        &bin
                    ),
                    moved.display().to_string(),
                    "{l:?}"
                );
            }
            assert!(copy.dirs().iter().all(|d| d.starts_with(root)));
        }
    }

    #[test]
    fn the_model_of_postgres_keeps_compiled_in_paths_when_the_layout_differs() {
        // A copy with the bin directory somewhere else finds the original
        // share directory: why the copy keeps the layout.
        assert_eq!(
            postgres_relocates(
                "/usr/share/postgresql/15",
                "/usr/lib/postgresql/15/bin",
                "/tmp/x/bin"
            ),
            "/usr/share/postgresql/15"
        );
    }

    #[test]
    fn mirroring_keeps_the_absolute_path_below_the_root() {
        assert_eq!(
            mirrored(Path::new("/tmp/i"), Path::new("/usr/lib/postgresql/15/lib")),
            Path::new("/tmp/i/usr/lib/postgresql/15/lib")
        );
        assert_eq!(
            mirrored(Path::new("/tmp/i"), Path::new("usr/share/../share/x")),
            Path::new("/tmp/i/usr/share/x")
        );
        // `..` cannot climb out of the root.
        assert_eq!(
            mirrored(Path::new("/tmp/i"), Path::new("/../../etc")),
            Path::new("/tmp/i/etc")
        );
    }

    #[test]
    fn only_pg_trickle_files_are_the_extensions() {
        for yes in [
            "pg_trickle.so",
            "pg_trickle-0.39.0.so",
            "pg_trickle.control",
            "pg_trickle--0.40.0.sql",
            "pg_trickle--0.39.1--0.40.0.sql",
        ] {
            assert!(is_extension_file(yes), "{yes}");
        }
        for no in [
            "pg_stat_statements.so",
            "pg_trickler.so",
            "plpgsql.control",
            "pg_trickle",
        ] {
            assert!(!is_extension_file(no), "{no}");
        }
    }

    #[test]
    fn package_files_go_to_the_library_and_extension_directories_only() {
        let l = layout(
            "/usr/lib/postgresql/15/bin",
            "/usr/lib/postgresql/15/lib",
            "/usr/share/postgresql/15",
        );
        for ok in [
            "usr/lib/postgresql/15/lib/pg_trickle.so",
            "usr/share/postgresql/15/extension/pg_trickle.control",
            "usr/share/postgresql/15/extension/pg_trickle--0.40.0.sql",
            "usr/share/postgresql/15/extension/pg_trickle--0.39.1--0.40.0.sql",
        ] {
            assert_eq!(
                placement(Path::new(ok), &l).unwrap(),
                Path::new("/").join(ok),
                "{ok}"
            );
        }
        for bad in [
            "usr/lib/postgresql/15/bin/postgres",
            "usr/lib/postgresql/15/lib/plpgsql.so",
            "usr/share/postgresql/15/extension/pg_trickle.so",
            "usr/lib/postgresql/15/lib/pg_trickle.control",
            "usr/share/postgresql/15/pg_trickle--0.40.0.sql",
            "usr/share/postgresql/15/extension/../../../../etc/pg_trickle.control",
        ] {
            assert!(placement(Path::new(bad), &l).is_err(), "{bad}");
        }
    }
}
