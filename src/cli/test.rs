//! `kefu test`: runs a rules directory's conversation tests and knowledge-base checks and
//! prints each result, what failed, the coverage, and every script that failed at run
//! time (the text is [`conversation::Suite::render`]'s, which the console shows too).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use kefu::conversation;

use super::load;

/// Runs every test of the rules in `dir`; fails when any of them fails.
pub fn run(dir: &Path, verbose: bool) -> Result<ExitCode> {
    let rules = Arc::new(load(dir)?);
    let files = conversation::files(dir).with_context(|| format!("reading {}", dir.join("tests").display()))?;
    if files.is_empty() {
        bail!("no conversation tests in {}", dir.join("tests").display());
    }
    // The same run `kefu publish` requires to pass (conversation::Suite).
    let suite =
        conversation::Suite::run(&rules, dir).with_context(|| format!("reading {}", dir.join("tests").display()))?;
    print!("{}", suite.render(&rules, verbose));
    Ok(if suite.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
