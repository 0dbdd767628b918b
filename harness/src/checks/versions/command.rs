//! `harness versions`: fail when the crate manifests, the control file, the
//! SQL scripts, the changelog and the upgrade guide disagree on the version.

use std::path::PathBuf;

use clap::Args;

use crate::cli::Failure;

/// Options of `harness versions`.
#[derive(Args, Clone)]
pub struct VersionsArgs {
    /// Repository root (default: the current directory).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
}

/// Run `harness versions`.
pub fn run(args: &VersionsArgs) -> Result<(), Failure> {
    let problems = crate::checks::versions::problems(&args.root);
    if problems.is_empty() {
        let v = crate::checks::versions::workspace_version(&args.root).unwrap_or_default();
        println!("versions: every place says {v}");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("versions: {p}");
        }
        Err(Failure::Check(format!(
            "{} version disagreement(s)",
            problems.len()
        )))
    }
}
