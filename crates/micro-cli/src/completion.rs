//! `micro completion SHELL`: the shell completion script of micro's commands and flags,
//! generated from the clap definition (docs/cli.md, "Shell completion and man pages").
//!
//! It covers the static command tree only: the dynamic commands of running services (`micro
//! helloworld call --name x`) are looked up in the registry when run, so no script knows them.

use clap::Args;
use clap_complete::Shell;

use crate::error::Result;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete in
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: &CompletionArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut crate::command(), "micro", &mut script);
    crate::out(&String::from_utf8_lossy(&script));
    Ok(())
}
