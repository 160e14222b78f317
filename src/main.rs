//! The one `micro` binary: the platform server (`micro server`) and the CLI.

fn main() -> std::process::ExitCode {
    micro_cli::main()
}
