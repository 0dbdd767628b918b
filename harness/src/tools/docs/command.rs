//! `harness docs`: write the generated documentation (`docs/CONFIGURATION.md`
//! and the exactness matrix in `docs/DIFFERENTIAL.md`), or with `--check`,
//! fail when a committed file is stale.

use std::path::PathBuf;

use crate::tools::docs::{configuration_md, CONFIGURATION_MD};
use clap::Args;

use crate::cli::Failure;

/// Options of `harness docs`.
#[derive(Args, Clone)]
pub struct DocsArgs {
    /// Only check that the committed file is up to date.
    #[arg(long)]
    pub check: bool,
    /// Repository root (default: the current directory).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
}

/// Where the exactness matrix is, relative to the repository root.
const DIFFERENTIAL_MD: &str = "docs/DIFFERENTIAL.md";

/// Run `harness docs`.
pub fn run(args: &DocsArgs) -> Result<(), Failure> {
    write_or_check(args, CONFIGURATION_MD, |_| Ok(configuration_md()))?;
    write_or_check(args, DIFFERENTIAL_MD, |current| {
        crate::checks::exactness::splice(current).ok_or_else(|| {
            Failure::CouldNotRun(format!(
                "{DIFFERENTIAL_MD} lacks the marks {} ... {}",
                crate::checks::exactness::BEGIN_MARK,
                crate::checks::exactness::END_MARK
            ))
        })
    })
}

/// Write the generated text of `rel` (made from its current text), or
/// with `--check` fail when the committed text differs.
fn write_or_check(
    args: &DocsArgs,
    rel: &str,
    generate: impl FnOnce(&str) -> Result<String, Failure>,
) -> Result<(), Failure> {
    let path = args.root.join(rel);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let text = generate(&current)?;
    if args.check {
        if current != text {
            return Err(Failure::Check(format!(
                "{} is stale: run `harness docs` and commit it",
                path.display()
            )));
        }
        println!("docs: {} is up to date", path.display());
        return Ok(());
    }
    std::fs::write(&path, text)
        .map_err(|e| Failure::CouldNotRun(format!("writing {}: {e}", path.display())))?;
    println!("docs: wrote {}", path.display());
    Ok(())
}
