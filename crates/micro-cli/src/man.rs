//! `micro man`: man pages generated from the clap definition (docs/cli.md, "Shell completion
//! and man pages"), so building micro needs no extra step: `micro man` prints micro(1);
//! `micro man --out DIR` writes it and one page per command (`micro-store-read.1`, ...).

use std::path::PathBuf;

use clap::Args;

use crate::error::{CliError, Result};

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write micro.1 and one page per command into this folder (created if missing) instead of
    /// printing micro.1
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: &ManArgs) -> Result<()> {
    let Some(dir) = &args.out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(crate::command())
            .render(&mut page)
            .map_err(|err| CliError::new(format!("cannot render the man page: {err}")))?;
        crate::out(&String::from_utf8_lossy(&page));
        return Ok(());
    };
    let failed =
        |err: std::io::Error| CliError::new(format!("cannot write man pages into {}: {err}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    clap_mangen::generate_to(crate::command(), dir).map_err(failed)
}
