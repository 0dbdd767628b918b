//! `harness docs`: write the generated documentation (`docs/CONFIGURATION.md`),
//! or with `--check`, fail when the committed file is stale.

use std::path::PathBuf;

use clap::Args;
use harness::docs::{configuration_md, CONFIGURATION_MD};

use super::Failure;

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

/// Run `harness docs`.
pub fn run(args: &DocsArgs) -> Result<(), Failure> {
    let path = args.root.join(CONFIGURATION_MD);
    let text = configuration_md();
    if args.check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != text {
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
