//! The `micro` command line: one binary that is both the platform server (`micro server`) and
//! the client of one (`micro store`, `micro config`, `micro env`, `micro services` ...).
//!
//! Grammar, output strings and exit codes follow the original Micro v3 CLI (docs/compatibility.md §2): data
//! goes to stdout, each error is one line on stderr, and the exit code says what kind of failure
//! it was (see [`error`]).

mod auth;
mod broker;
mod call;
mod client;
mod completion;
mod config;
mod dynamic;
mod env;
pub mod error;
mod events;
mod jobs;
mod login;
mod man;
mod new;
mod openapi;
mod prompt;
mod proto;
mod runtime;
mod services;
mod settings;
mod source;
mod stats;
mod store;
mod table;
mod tokens;
mod trace;
mod user;
mod watch;
mod web;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::settings::Settings;

/// `micro <cmd> - <about>` first, as every help page of the original began.
macro_rules! help {
    ($name:literal) => {
        concat!($name, " - {about}\n\n{usage-heading} {usage}\n\n{all-args}{after-help}")
    };
}

#[derive(Parser, Debug)]
#[command(
    name = "micro",
    about = "A cloud-native development platform",
    disable_version_flag = true,
    help_template = help!("micro"),
    subcommand_help_heading = "Commands",
)]
struct Cli {
    /// Environment to talk to [default: the one selected with `micro env set`, else local]
    #[arg(short = 'e', long = "env", env = "MICRO_ENV", value_name = "NAME")]
    env: Option<String>,
    /// The CLI's settings file [default: $MICRO_HOME/config.json]
    #[arg(short = 'c', env = "MICRO_CONFIG_FILE", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Print the version
    #[arg(long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the platform: auth, config, store, registry and the gateways, in one process
    #[command(help_template = help!("micro server"))]
    Server(Box<micro_server::Args>),
    /// Manage environments: the servers this CLI talks to
    #[command(help_template = help!("micro env"))]
    Env {
        /// Output format of the listing
        #[arg(long, value_enum, default_value_t)]
        output: table::Output,
        #[command(subcommand)]
        command: Option<env::EnvCommand>,
    },
    /// Read and write the key-value store
    #[command(help_template = help!("micro store"), subcommand_required = true, arg_required_else_help = true)]
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Get, set and delete configuration values
    #[command(help_template = help!("micro config"), subcommand_required = true, arg_required_else_help = true)]
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Call a service endpoint with a JSON request and print the response
    #[command(help_template = help!("micro call"))]
    Call(call::CallArgs),
    /// Call a streaming endpoint and print each response until the stream ends
    #[command(help_template = help!("micro stream"))]
    Stream(call::CallArgs),
    /// Log in to the current environment and namespace
    #[command(help_template = help!("micro login"))]
    Login(login::LoginArgs),
    /// Log out of the current environment and namespace
    #[command(help_template = help!("micro logout"))]
    Logout,
    /// Show who you are logged in as; your token, namespace and settings; change your password
    #[command(help_template = help!("micro user"))]
    User {
        #[command(subcommand)]
        command: Option<user::UserCommand>,
    },
    /// Manage accounts and rules
    #[command(help_template = help!("micro auth"), subcommand_required = true, arg_required_else_help = true)]
    Auth {
        #[command(subcommand)]
        command: auth::AuthCommand,
    },
    /// Publish, consume and read durable event streams
    #[command(help_template = help!("micro events"), subcommand_required = true, arg_required_else_help = true)]
    Events {
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Create, list, run and delete scheduled jobs that fire once across all servers
    #[command(help_template = help!("micro jobs"), subcommand_required = true, arg_required_else_help = true)]
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Publish and subscribe to ephemeral messages
    #[command(help_template = help!("micro broker"), subcommand_required = true, arg_required_else_help = true)]
    Broker {
        #[command(subcommand)]
        command: broker::BrokerCommand,
    },
    /// List the services running in the current namespace
    #[command(help_template = help!("micro services"))]
    Services(services::ServicesArgs),
    /// Show the server's recent traces, or one as a tree of spans with their timings
    #[command(help_template = help!("micro trace"))]
    Trace(trace::TraceArgs),
    /// Show the server's request counts and latencies per endpoint, and its processes' usage
    #[command(help_template = help!("micro stats"))]
    Stats(stats::StatsArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API of the namespace's services (or of one)
    #[command(help_template = help!("micro openapi"))]
    Openapi(openapi::OpenapiArgs),
    /// Write a service's .proto files, rebuilt from its registered descriptors, into a folder
    #[command(help_template = help!("micro proto"))]
    Proto(proto::ProtoArgs),
    /// Create a new service: a Rust project in ./<name> that builds and runs as is
    #[command(help_template = help!("micro new"))]
    New(new::NewArgs),
    /// Run a service from its folder or git repository: build it, start it, keep it running
    #[command(help_template = help!("micro run"))]
    Run(runtime::RunArgs),
    /// Rebuild and restart a running service from its source
    #[command(help_template = help!("micro update"))]
    Update(runtime::UpdateArgs),
    /// Run a service from its folder and rebuild it on every change (`micro run --watch`)
    #[command(help_template = help!("micro dev"))]
    Dev(watch::DevArgs),
    /// Stop a service started with `micro run` and remove it
    #[command(help_template = help!("micro kill"))]
    Kill(runtime::KillArgs),
    /// Show the services started with `micro run`: source, status, build and age
    #[command(help_template = help!("micro status"))]
    Status(runtime::StatusArgs),
    /// Print a service's logs; -f keeps following them
    #[command(help_template = help!("micro logs"))]
    Logs(runtime::LogsArgs),
    /// Print the web dashboard's URL and open it in a browser
    #[command(help_template = help!("micro web"))]
    Web(web::WebArgs),
    /// Print the version
    #[command(help_template = help!("micro version"))]
    Version,
    /// Print a shell completion script for micro's commands and flags
    #[command(help_template = help!("micro completion"))]
    Completion(completion::CompletionArgs),
    /// Print micro's man page, or write one page per command into a folder
    #[command(help_template = help!("micro man"))]
    Man(man::ManArgs),
    #[command(external_subcommand)]
    External(Vec<String>),
}

/// What every command may need: which settings file and environment to use.
pub(crate) struct Global {
    env: Option<String>,
    config_file: Option<PathBuf>,
}

impl Global {
    pub(crate) fn settings_path(&self) -> PathBuf {
        self.config_file.clone().unwrap_or_else(Settings::default_path)
    }

    /// The environment this invocation talks to: `-e`, else the saved selection.
    pub(crate) fn env_name(&self, settings: &Settings) -> String {
        self.env.clone().unwrap_or_else(|| settings.selected().to_string())
    }

    /// The environment and namespace this invocation acts in.
    pub(crate) fn env_and_namespace(&self) -> Result<(String, String)> {
        let settings = Settings::load(&self.settings_path())?;
        let env = self.env_name(&settings);
        let namespace = settings.namespace(&env);
        Ok((env, namespace))
    }

    pub(crate) async fn connect(&self) -> Result<Client> {
        let settings = Settings::load(&self.settings_path())?;
        Client::connect(&settings, &self.env_name(&settings)).await
    }

    /// Fails when `-e` names an environment that does not exist.
    fn check_env(&self) -> Result<()> {
        let Some(env) = &self.env else { return Ok(()) };
        let settings = Settings::load(&self.settings_path())?;
        if settings.env(env).is_none() {
            return Err(client::env_not_found(env));
        }
        Ok(())
    }
}

/// Writes command output to stdout; a closed pipe (`micro store list | head`) is not an error.
pub(crate) fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

pub(crate) fn unrecognized_subcommand(command: &str, args: &[String]) -> CliError {
    let sub = args.first().map(String::as_str).unwrap_or_default();
    CliError::new(format!(
        "Unrecognized subcommand for micro {command}: {sub}. Please refer to 'micro {command} --help'"
    ))
}

/// Runs the CLI on this process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // `--help` and `--version` are "errors" clap prints to stdout; the rest are usage errors.
            return if err.use_stderr() { ExitCode::from(error::EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if !err.message.is_empty() {
                eprintln!("{err}");
            }
            err.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let global = Global { env: cli.env, config_file: cli.config_file };
    if cli.version {
        out(&format!("micro version {}\n", micro_core::VERSION));
        return Ok(());
    }
    let Some(command) = cli.command else {
        return Err(CliError::new("No command provided to micro. Please refer to 'micro --help'"));
    };
    match command {
        Command::Server(args) => return server(*args),
        Command::New(args) => return new::run(args),
        Command::Version => {
            out(&format!("micro version {}\n", micro_core::VERSION));
            return Ok(());
        }
        Command::External(args) => return external(&global, &args),
        Command::Completion(args) => return completion::run(&args),
        Command::Man(args) => return man::run(&args),
        _ => {}
    }
    global.check_env()?;
    match command {
        Command::Env { output, command } => env::run(&global, command, output),
        Command::Store { command } => block_on(store::run(&global, command)),
        Command::Config { command } => block_on(config::run(&global, command)),
        Command::Services(args) => block_on(services::run(&global, args)),
        Command::Trace(args) => block_on(trace::run(&global, args)),
        Command::Stats(args) => block_on(stats::run(&global, args)),
        Command::Openapi(args) => block_on(openapi::run(&global, args)),
        Command::Proto(args) => block_on(proto::run(&global, args)),
        Command::Broker { command } => block_on(broker::run(&global, command)),
        Command::Events { command } => block_on(events::run(&global, command)),
        Command::Jobs { command } => block_on(jobs::run(&global, command)),
        Command::Login(args) => block_on(login::login(&global, args)),
        Command::Logout => login::logout(&global),
        Command::User { command } => block_on(user::run(&global, command)),
        Command::Auth { command } => block_on(auth::run(&global, command)),
        Command::Call(args) => block_on(call::run(&global, args)),
        // The call path already prints every message of a server stream as it arrives.
        Command::Stream(args) => block_on(call::run(&global, args)),
        Command::Run(args) => block_on(runtime::run(&global, args)),
        Command::Update(args) => block_on(runtime::update(&global, args)),
        Command::Dev(args) => block_on(watch::run(&global, args.into())),
        Command::Kill(args) => block_on(runtime::kill(&global, args)),
        Command::Status(args) => block_on(runtime::status(&global, args)),
        Command::Logs(args) => block_on(runtime::logs(&global, args)),
        Command::Web(args) => web::run(&global, args),
        Command::Server(_)
        | Command::New(_)
        | Command::Version
        | Command::External(_)
        | Command::Completion(_)
        | Command::Man(_) => {
            unreachable!("handled above")
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| CliError::new(format!("cannot start the async runtime: {err}")))
}

fn block_on<F: Future<Output = Result<()>>>(future: F) -> Result<()> {
    runtime()?.block_on(future)
}

fn server(args: micro_server::Args) -> Result<()> {
    runtime()?.block_on(micro_server::run(args)).map_err(|err| CliError::new(format!("Error: {err:#}")))
}

/// `micro <x> ...` for a command we do not have (docs/compatibility.md §2.2): run `micro-<x>` from `PATH`
/// when there is one (the original's plugin convention), else the dynamic command of service
/// `<x>` when the registry has it, else fail as the original did.
fn external(global: &Global, args: &[String]) -> Result<()> {
    let name = args.first().map(String::as_str).unwrap_or_default();
    let unrecognized =
        || CliError::new(format!("Unrecognized micro command: {name}. Please refer to 'micro --help'"));
    let plausible = !name.is_empty() && !name.starts_with('-') && !name.contains(['/', '\\']);
    if !plausible {
        return Err(unrecognized());
    }
    let Some(program) = find_on_path(&format!("micro-{name}")) else {
        return match runtime()?.block_on(dynamic::run(global, name, &args[1..]))? {
            true => Ok(()),
            false => Err(unrecognized()),
        };
    };
    let status = std::process::Command::new(&program)
        .args(&args[1..])
        .status()
        .map_err(|err| CliError::new(format!("cannot run {}: {err}", program.display())))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(CliError::with_code("", u8::try_from(code).unwrap_or(error::EXIT_FAILURE))),
        None => Err(CliError::with_code("", error::EXIT_FAILURE)),
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// The clap definition, for tests and generated docs.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cli_definition_is_consistent() {
        super::command().debug_assert();
    }
}
