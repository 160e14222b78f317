//! `micro run`, `micro update`, `micro kill`, `micro status` and `micro logs` (docs/compatibility.md §2.9):
//! services run from source by the server's runtime.
//!
//! A local folder is packed and uploaded with `Source.Upload` ([`crate::source`]), a git
//! repository is passed to the server as is; `Runtime.Create`/`Update` then build and start it.
//! `run`, `update` and `kill` print nothing on success. On a terminal, `run` and `update` say on
//! stderr how much of a local folder they upload, then follow the build (`Build.Read`: cargo's
//! current status line and how many crates it compiled) and wait for the service to run, ending
//! with the outcome, or with cargo's own errors when the build fails; elsewhere (scripts, CI)
//! they return once the server has accepted the service. `micro logs --build` prints the last
//! build's output.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use micro_core::names::service_name;
use micro_core::time;
use micro_proto::runtime::build_client::BuildClient;
use micro_proto::runtime::runtime_client::RuntimeClient;
use micro_proto::runtime::source_client::SourceClient;
use micro_proto::runtime::{
    CreateOptions, CreateRequest, DeleteOptions, DeleteRequest, LogRecord, LogsOptions, LogsRequest,
    ReadOptions, ReadRequest, Resource, Service, UpdateOptions, UpdateRequest,
};
use serde_json::json;
use tonic::Code;

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::settings::Settings;
use crate::source::{self, Location, Source, validate_name, validate_version};
use crate::table::Output;
use crate::{Global, out};

/// Lines `micro logs` prints without `-n`.
const DEFAULT_LOG_LINES: u32 = 15;
/// How often a terminal `run`/`update` asks the server how the build is going.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Most lines of cargo's errors a failed `run`/`update` prints (the rest: `micro logs --build`).
const DIAGNOSTIC_LINES: usize = 60;
/// The words cargo starts its status lines with (right-aligned: `   Compiling tokio v1.54.0`).
const CARGO_STATUS: &[&str] = &[
    "Adding",
    "Blocking",
    "Building",
    "Checking",
    "Compiling",
    "Downloaded",
    "Downloading",
    "Fresh",
    "Finished",
    "Locking",
    "Updating",
];
/// The secret the server's git checkout reads a token from.
const GIT_CREDENTIALS: &str = "GIT_CREDENTIALS";

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// A service's folder (./helloworld, ., ../x) or a git repository (host/org/repo[/folder],
    /// file:///path/repo.git), optionally with @ref: a branch, tag or commit, shown as VERSION
    #[arg(value_name = "SOURCE")]
    pub(crate) source: String,
    /// Name of the service [default: the folder's or repository's name]
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Command to run instead of the built binary, e.g. "python3 app.py" (split on spaces)
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) command: Option<String>,
    /// Arguments for the command (split on spaces)
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) args: Option<String>,
    /// Environment variables for the service: K=V[,K=V]; may be repeated
    #[arg(long = "env_vars", alias = "env-vars", value_name = "K=V[,K=V]")]
    pub(crate) env_vars: Vec<String>,
    /// Type of the service, recorded by the runtime
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) kind: Option<String>,
    /// Container image, for runtimes that run containers
    #[arg(long)]
    pub(crate) image: Option<String>,
    /// Keep watching the folder: on every change, upload it again and swap in the rebuilt
    /// service without a failed call (what `micro dev` does); Ctrl-C stops watching
    #[arg(long)]
    pub(crate) watch: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The service's folder or git repository, or the name of a running service to rebuild from
    /// the source it was run from
    #[arg(value_name = "SOURCE")]
    source: String,
    /// Name of the service [default: the folder's or repository's name]
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// The service to stop and remove, with an optional @version [default version: latest]
    #[arg(value_name = "NAME[@VERSION]", required_unless_present = "name", conflicts_with = "name")]
    service: Option<String>,
    /// The service's name, as an alternative to the argument
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this service
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// Only this version of it
    #[arg(value_name = "VERSION")]
    version: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The service whose logs to print
    #[arg(value_name = "NAME")]
    name: String,
    /// Keep printing new lines until interrupted
    #[arg(short = 'f', long)]
    follow: bool,
    /// How many of the last lines to print
    #[arg(short = 'n', long, default_value_t = DEFAULT_LOG_LINES)]
    lines: u32,
    /// Only lines from this long ago, e.g. 10m, 1h
    #[arg(long, value_parser = parse_since)]
    since: Option<Duration>,
    /// Output format: the messages, or one JSON record per line
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: LogFormat,
    /// Print the output of the service's last build (cargo's progress and errors) instead,
    /// following it while the build runs; NAME may be name@version
    #[arg(long, conflicts_with_all = ["lines", "since", "output"])]
    build: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn parse_since(input: &str) -> std::result::Result<Duration, String> {
    micro_core::duration::parse(input).map_err(|err| err.to_string())
}

/// `--since` as `LogsRequest.since`: whole seconds, a part of one counting as one (so `500ms`
/// is a window, not none).
fn since_seconds(since: Duration) -> i64 {
    let seconds = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// What `run` and `update` were asked to start, ready to send.
struct Prepared {
    source: Source,
    /// The packed tarball of a local source.
    tarball: Option<Vec<u8>>,
}

/// Settings, the environment and the working directory a source is resolved against.
struct Context {
    settings: Settings,
    env: String,
    cwd: PathBuf,
}

impl Context {
    fn load(global: &Global) -> Result<Self> {
        let settings = Settings::load(&global.settings_path())?;
        let env = global.env_name(&settings);
        let cwd = std::env::current_dir()
            .map_err(|err| CliError::new(format!("cannot read the current folder: {err}")))?;
        Ok(Self { settings, env, cwd })
    }

    fn parse(&self, arg: &str) -> Result<Source> {
        let baseurl = self
            .settings
            .user(&format!("git.{}.baseurl", self.env))
            .or_else(|| self.settings.user("git.baseurl"));
        Source::parse(arg, &self.cwd, baseurl.as_deref())
    }

    /// The token for `host`, matched exactly (docs/security.md): `git.credentials.<host>`;
    /// `git.credentials.github` / `gitlab` / `bitbucket` for github.com, gitlab.com and
    /// bitbucket.org only; or `git.credentials.token` when `git.credentials.url` names this very
    /// host. A look-alike host (`github.evil.com`, `xgithub.com`) gets nothing.
    fn git_credentials(&self, host: &str) -> Option<String> {
        let lookup = |key: &str| self.settings.user(key);
        credential_for(host, &lookup)
    }

    async fn connect(&self) -> Result<Client> {
        Client::connect(&self.settings, &self.env).await
    }
}

/// The git token for `host` from the settings `lookup` reads (see `git_credentials`).
fn credential_for(host: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let provider = match host.as_str() {
        "github.com" => Some("github"),
        "gitlab.com" => Some("gitlab"),
        "bitbucket.org" => Some("bitbucket"),
        _ => None,
    };
    lookup(&format!("git.credentials.{host}"))
        .or_else(|| provider.and_then(|label| lookup(&format!("git.credentials.{label}"))))
        .or_else(|| {
            let url = lookup("git.credentials.url")?;
            let named = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            let named = named.split(['/', ':']).next().unwrap_or_default().to_ascii_lowercase();
            (named == host).then(|| lookup("git.credentials.token")).flatten()
        })
}

/// Packs a local source (on a blocking thread: it walks and compresses the tree). Ignore-file
/// patterns that were not applied are always shown on stderr; the size of the upload only on a
/// terminal, like the build's progress, so scripts see stderr only for what went wrong.
async fn prepare(source: Source) -> Result<Prepared> {
    let tarball = match &source.location {
        Location::Local { root, .. } => {
            let root = root.clone();
            let packed = tokio::task::spawn_blocking(move || source::pack(&root))
                .await
                .map_err(|err| CliError::new(format!("packing the source failed: {err}")))??;
            for warning in &packed.warnings {
                eprintln!("Warning: {warning}");
            }
            if std::io::stderr().is_terminal() {
                eprintln!("{}", packed.summary(&source.name));
            }
            Some(packed.bytes)
        }
        Location::Git { .. } => None,
    };
    Ok(Prepared { source, tarball })
}

/// Uploads a local source's tarball and returns the service to create or update.
async fn service_for(client: &Client, prepared: Prepared) -> Result<Service> {
    let Prepared { source, tarball } = prepared;
    let location = match (&source.location, tarball) {
        (Location::Local { .. }, Some(tarball)) => {
            let chunks = source::chunks(&tarball, &source.name, &source.version);
            let mut sources = SourceClient::new(client.channel.clone());
            let reply = sources
                .upload(client.request(tokio_stream::iter(chunks)))
                .await
                .map_err(|status| client.error(status))?;
            reply.into_inner().id
        }
        (Location::Git { url, .. }, _) => url.clone(),
        (Location::Local { .. }, None) => unreachable!("local sources are packed by prepare"),
    };
    Ok(Service {
        name: source.name,
        version: source.version,
        source: location,
        metadata: HashMap::from([("source".to_string(), source.display)]),
        status: 0,
    })
}

fn entrypoint(source: &Source) -> String {
    match &source.location {
        Location::Local { entrypoint, .. } => entrypoint.clone(),
        Location::Git { .. } => String::new(),
    }
}

/// `micro run <source>[@ref]`; with `--watch`, [`crate::watch::run`].
pub async fn run(global: &Global, args: RunArgs) -> Result<()> {
    if args.watch {
        return crate::watch::run(global, args).await;
    }
    let planned = plan(global, &args).await?;
    let (name, version) = create(&planned).await?;
    follow_progress(&planned.client, &name, &version).await
}

/// A `micro run` resolved: the server, the parsed source and what to create it with.
pub(crate) struct Planned {
    pub(crate) client: Client,
    pub(crate) source: Source,
    /// The argument as given, for messages.
    pub(crate) arg: String,
    options: CreateOptions,
}

/// Parses `micro run`'s source and options and connects to the server.
pub(crate) async fn plan(global: &Global, args: &RunArgs) -> Result<Planned> {
    let context = Context::load(global)?;
    let mut source = context.parse(&args.source)?;
    if let Some(name) = &args.name {
        validate_name(name)?;
        source.name = name.clone();
    }
    let env = parse_env_vars(&args.env_vars)?;
    let mut secrets = HashMap::new();
    if let Location::Git { host, .. } = &source.location
        && let Some(token) = context.git_credentials(host)
    {
        secrets.insert(GIT_CREDENTIALS.to_string(), token);
    }
    let options = CreateOptions {
        command: split_words(args.command.as_deref()),
        args: split_words(args.args.as_deref()),
        env,
        r#type: args.kind.clone().unwrap_or_default(),
        image: args.image.clone().unwrap_or_default(),
        secrets,
        entrypoint: entrypoint(&source),
        ..Default::default()
    };
    let client = context.connect().await?;
    Ok(Planned { client, source, arg: args.source.clone(), options })
}

/// Uploads a local source and creates the service (`Runtime.Create`); its name and version.
pub(crate) async fn create(planned: &Planned) -> Result<(String, String)> {
    let client = &planned.client;
    let prepared = prepare(planned.source.clone()).await?;
    let service = service_for(client, prepared).await?;
    let (name, version) = (service.name.clone(), service.version.clone());
    let request = CreateRequest {
        resource: Some(Resource { service: Some(service), ..Default::default() }),
        options: Some(CreateOptions { namespace: client.namespace.clone(), ..planned.options.clone() }),
    };
    let mut runtime = RuntimeClient::new(client.channel.clone());
    runtime.create(client.request(request)).await.map_err(|status| match status.code() {
        Code::AlreadyExists => CliError::new(format!(
            "service {name} {version} already exists: rebuild it with `micro update {}` or stop it with \
             `micro kill {name}`",
            planned.arg
        )),
        _ => client.error(status),
    })?;
    Ok((name, version))
}

/// Uploads `source` again and rebuilds the service from it (`Runtime.Update`), as `micro update`
/// does; returns once the server has accepted the update.
pub(crate) async fn upload_and_update(client: &Client, source: Source) -> Result<()> {
    let entrypoint = entrypoint(&source);
    let prepared = prepare(source).await?;
    let service = service_for(client, prepared).await?;
    let request = UpdateRequest {
        resource: Some(Resource { service: Some(service), ..Default::default() }),
        options: Some(UpdateOptions { namespace: client.namespace.clone(), entrypoint }),
    };
    let mut runtime = RuntimeClient::new(client.channel.clone());
    runtime.update(client.request(request)).await.map_err(|status| client.error(status))?;
    Ok(())
}

/// The service `name` at `version`, when the runtime has it.
pub(crate) async fn find(client: &Client, name: &str, version: &str) -> Result<Option<Service>> {
    let services = read(client, name, version).await?;
    Ok(services.into_iter().find(|service| service.name == name && service.version == version))
}

/// The last `count` lines of `name`'s log (`Runtime.Logs`), oldest first.
pub(crate) async fn log_tail(client: &Client, name: &str, count: u32) -> Result<Vec<String>> {
    let mut runtime = RuntimeClient::new(client.channel.clone());
    let request = LogsRequest {
        service: name.to_string(),
        stream: false,
        count: i64::from(count),
        since: 0,
        options: Some(LogsOptions { namespace: client.namespace.clone() }),
    };
    let mut stream =
        runtime.logs(client.request(request)).await.map_err(|status| client.error(status))?.into_inner();
    let mut lines = Vec::new();
    while let Some(record) = stream.message().await.map_err(|status| client.error(status))? {
        lines.push(record.message.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(lines)
}

/// `micro update <source>`: a folder or repository as for `run`; a bare name of a service that
/// exists reuses the source it was run from (a recorded folder is read relative to the current
/// folder).
pub async fn update(global: &Global, args: UpdateArgs) -> Result<()> {
    let context = Context::load(global)?;
    let client = context.connect().await?;
    let parsed = context.parse(&args.source);
    let mut source = match parsed {
        Ok(source @ Source { location: Location::Local { .. }, .. }) => source,
        parsed => match recorded_source(&context, &client, &args.source).await? {
            Some(source) => source,
            None => parsed?,
        },
    };
    if let Some(name) = args.name {
        validate_name(&name)?;
        source.name = name;
    }
    let entrypoint = entrypoint(&source);
    let prepared = prepare(source).await?;
    let service = service_for(&client, prepared).await?;
    let (name, version) = (service.name.clone(), service.version.clone());
    let request = UpdateRequest {
        resource: Some(Resource { service: Some(service), ..Default::default() }),
        options: Some(UpdateOptions { namespace: client.namespace.clone(), entrypoint }),
    };
    let mut runtime = RuntimeClient::new(client.channel.clone());
    runtime.update(client.request(request)).await.map_err(|status| client.error(status))?;
    follow_progress(&client, &name, &version).await
}

/// The source service `arg` (`name[@version]`) was run from, when `arg` names one.
async fn recorded_source(context: &Context, client: &Client, arg: &str) -> Result<Option<Source>> {
    let (name, version) = split_version(arg);
    if validate_name(name).is_err() {
        return Ok(None);
    }
    let services = read(client, name, version.unwrap_or_default()).await?;
    let Some(existing) = services.into_iter().find(|service| service.name == name) else { return Ok(None) };
    let recorded = existing.metadata.get("source").cloned().unwrap_or_else(|| existing.source.clone());
    let mut source = if Source::is_git_display(&recorded) {
        context.parse(&format!("{recorded}@{}", existing.version))?
    } else {
        let path = source::display_to_path(&recorded);
        if !context.cwd.join(&path).is_dir() {
            return Err(CliError::new(format!(
                "service {name} was run from folder {recorded}, which is not in the current folder: \
                 run `micro update <folder>` with the service's folder"
            )));
        }
        context.parse(&format!("{path}@{}", existing.version))?
    };
    source.name = existing.name;
    source.version = existing.version;
    Ok(Some(source))
}

/// `micro kill <name>[@version]`.
pub async fn kill(global: &Global, args: KillArgs) -> Result<()> {
    let arg = args.service.or(args.name).expect("clap requires the argument or --name");
    let (name, version) = split_version(&arg);
    let name = service_name(name).to_string();
    let version = version.unwrap_or(source::DEFAULT_VERSION);
    validate_name(&name)?;
    validate_version(version)?;
    let client = global.connect().await?;
    let mut runtime = RuntimeClient::new(client.channel.clone());
    let service = Service { name: name.clone(), version: version.to_string(), ..Default::default() };
    let request = DeleteRequest {
        resource: Some(Resource { service: Some(service), ..Default::default() }),
        options: Some(DeleteOptions { namespace: client.namespace.clone() }),
    };
    match runtime.delete(client.request(request)).await {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::NotFound => Err(CliError::new(format!(
            "Service {name} {version} not found: `micro status` lists the services"
        ))),
        Err(status) => Err(client.error(status)),
    }
}

/// `micro status [name [version]]`.
pub async fn status(global: &Global, args: StatusArgs) -> Result<()> {
    let name =
        args.name.as_deref().map(|arg| service_name(split_version(arg).0).to_string()).unwrap_or_default();
    let version = args
        .version
        .clone()
        .or_else(|| args.name.as_deref().and_then(|arg| split_version(arg).1.map(str::to_string)))
        .unwrap_or_default();
    let client = global.connect().await?;
    let mut services = read(&client, &name, &version).await?;
    services.retain(|service| {
        (name.is_empty() || service.name == name) && (version.is_empty() || service.version == version)
    });
    services.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out(&match args.output {
        Output::Json => status_json(&services),
        Output::Table => status_table(&services, time::unix_seconds()),
    });
    Ok(())
}

/// `micro logs [-f] [-n N] [-o json] [--since D] <name>`; `micro logs --build <name>`.
pub async fn logs(global: &Global, args: LogsArgs) -> Result<()> {
    if args.build {
        return build_logs(global, &args.name).await;
    }
    let name = service_name(split_version(&args.name).0).to_string();
    validate_name(&name)?;
    let client = global.connect().await?;
    let mut runtime = RuntimeClient::new(client.channel.clone());
    let request = LogsRequest {
        service: name.clone(),
        stream: args.follow,
        count: i64::from(args.lines),
        since: args.since.map_or(0, since_seconds),
        options: Some(LogsOptions { namespace: client.namespace.clone() }),
    };
    let not_found = |status: tonic::Status| match status.code() {
        Code::NotFound => CliError::new(format!("Logs not found for service {name}")),
        _ => client.error(status),
    };
    let mut stream = runtime.logs(client.request(request)).await.map_err(not_found)?.into_inner();
    while let Some(record) = stream.message().await.map_err(not_found)? {
        out(&format_record(&record, args.output));
    }
    Ok(())
}

async fn read(client: &Client, name: &str, version: &str) -> Result<Vec<Service>> {
    let mut runtime = RuntimeClient::new(client.channel.clone());
    let options = ReadOptions {
        service: name.to_string(),
        version: version.to_string(),
        namespace: client.namespace.clone(),
        ..Default::default()
    };
    let request = client.request(ReadRequest { options: Some(options) });
    match runtime.read(request).await {
        Ok(reply) => Ok(reply.into_inner().services),
        Err(status) if status.code() == Code::NotFound => Ok(Vec::new()),
        Err(status) => Err(client.error(status)),
    }
}

/// `micro logs --build <name>[@version]`: the output of the service's last build as the server
/// kept it, followed while that build runs (`Build.Read`).
async fn build_logs(global: &Global, arg: &str) -> Result<()> {
    let (name, version) = split_version(arg);
    let name = service_name(name).to_string();
    validate_name(&name)?;
    if let Some(version) = version {
        validate_version(version)?;
    }
    let client = global.connect().await?;
    let error = |status: tonic::Status| build_error(&client, status);
    let mut stream = BuildClient::new(client.channel.clone())
        .read(client.request(build_request(&client, &name, version.unwrap_or_default())))
        .await
        .map_err(error)?
        .into_inner();
    while let Some(chunk) = stream.message().await.map_err(error)? {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&chunk.data).and_then(|()| stdout.flush());
    }
    Ok(())
}

/// The `Build.Read` request for a service version of the client's namespace.
fn build_request(client: &Client, name: &str, version: &str) -> Service {
    Service {
        name: name.to_string(),
        version: version.to_string(),
        metadata: HashMap::from([("namespace".to_string(), client.namespace.clone())]),
        ..Default::default()
    }
}

/// A failed `Build.Read` as the CLI says it: the server's own words for a build it does not
/// have (it says why), a server that keeps no builds, or what any other call failing gets.
fn build_error(client: &Client, status: tonic::Status) -> CliError {
    match status.code() {
        Code::NotFound if !status.message().is_empty() => CliError::new(status.message()),
        Code::Unimplemented => {
            CliError::new("this server keeps no build output (it has no runtime.Build): see `micro logs`")
        }
        _ => client.error(status),
    }
}

/// On a terminal, shows how the service gets on, on stderr, until it runs, fails or stops:
/// while it builds, the build itself (`Build.Read`: cargo's current status line and the crates
/// compiled so far); a failed build prints cargo's errors. Elsewhere returns at once. A failure
/// is the command's error. A server without `Build.Read` gets the status alone
/// ([`poll_progress`]).
async fn follow_progress(client: &Client, name: &str, version: &str) -> Result<()> {
    if !std::io::stderr().is_terminal() {
        return Ok(());
    }
    let mut progress = BuildProgress::new(name, version);
    // Whether the build of the current pending/building phase was followed already.
    let mut followed = false;
    loop {
        let services = read(client, name, version).await?;
        let Some(service) = services.iter().find(|s| s.name == name && s.version == version) else {
            progress.clear();
            return Ok(());
        };
        match Phase::of(service) {
            Phase::Done(status) => {
                progress.finish(&format!("{name} {version} {status}"));
                return Ok(());
            }
            Phase::Failed(error) => {
                progress.clear();
                return Err(failure(client, name, version, &error).await);
            }
            Phase::Busy(status) => {
                let building = status == "pending" || status == "building";
                progress.status(&status);
                if !building {
                    followed = false;
                } else if !followed {
                    followed = true;
                    match follow_build(client, name, version, &mut progress).await {
                        Ok(()) => continue,
                        Err(status) if status.code() == Code::Unimplemented => {
                            progress.clear();
                            return poll_progress(client, name, version).await;
                        }
                        // Nothing to build (a command), or the service went: the status says.
                        Err(status) if status.code() == Code::NotFound => continue,
                        Err(status) => {
                            progress.clear();
                            return Err(client.error(status));
                        }
                    }
                }
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Where a service being run or updated is, as [`follow_progress`] shows it.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Still on its way: `pending`, `building`, `starting`, … (an update's own phase while the
    /// old process serves).
    Busy(String),
    /// `running` or `stopped`.
    Done(String),
    /// Failed, with the service's error (or the update's).
    Failed(String),
}

impl Phase {
    fn of(service: &Service) -> Self {
        // A zero-downtime update keeps the service running: its own progress is metadata
        // `update` (`building`, `starting`, `failed` with `update_error`).
        match metadata(service, "update") {
            "building" | "starting" => return Phase::Busy(metadata(service, "update").to_string()),
            "failed" => {
                return Phase::Failed(format!(
                    "the update failed, the running version keeps serving: {}",
                    metadata(service, "update_error")
                ));
            }
            _ => {}
        }
        match service_status(service) {
            status @ ("running" | "stopped") => Phase::Done(status.to_string()),
            "error" => Phase::Failed(
                service.metadata.get("error").map_or("unknown error", String::as_str).to_string(),
            ),
            status => Phase::Busy(status.to_string()),
        }
    }
}

/// The error of a run or update that failed with `error`: a failed build first prints cargo's
/// errors from the build log (on stderr), whose error message already names `micro logs --build`.
async fn failure(client: &Client, name: &str, version: &str, error: &str) -> CliError {
    if !(error.contains("cargo build failed") || error.contains("cargo fetch failed")) {
        return CliError::new(format!("service {name} {version} failed: {error}. See `micro logs {name}`"));
    }
    if let Ok(log) = read_build_log(client, name, version).await {
        let shown = diagnostics(&log, name);
        if !shown.is_empty() {
            eprintln!("{shown}");
        }
    }
    CliError::new(format!("service {name} {version} failed: {error}"))
}

/// The whole log of the last build (it has ended).
async fn read_build_log(
    client: &Client,
    name: &str,
    version: &str,
) -> std::result::Result<String, tonic::Status> {
    let mut stream = BuildClient::new(client.channel.clone())
        .read(client.request(build_request(client, name, version)))
        .await?
        .into_inner();
    let mut log = Vec::new();
    while let Some(chunk) = stream.message().await? {
        log.extend_from_slice(&chunk.data);
    }
    Ok(String::from_utf8_lossy(&log).into_owned())
}

/// Follows the build of the service (`Build.Read`) until it ends, showing each status line.
async fn follow_build(
    client: &Client,
    name: &str,
    version: &str,
    progress: &mut BuildProgress,
) -> std::result::Result<(), tonic::Status> {
    let mut stream = BuildClient::new(client.channel.clone())
        .read(client.request(build_request(client, name, version)))
        .await?
        .into_inner();
    progress.build_started();
    let mut partial: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.message().await? {
        partial.extend_from_slice(&chunk.data);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            progress.line(String::from_utf8_lossy(&line).trim_end());
        }
    }
    Ok(())
}

/// The word a cargo status line starts with (`   Compiling tokio v1.54.0` → `Compiling`).
fn cargo_status(line: &str) -> Option<&str> {
    let (word, rest) = line.trim_start().split_once(' ')?;
    (CARGO_STATUS.contains(&word) && !rest.trim().is_empty()).then_some(word)
}

/// What of a failed build's log to show: cargo's rendered diagnostics, from the first error (else
/// the first warning) on, without cargo's status lines and micro's own; at most
/// [`DIAGNOSTIC_LINES`] lines, then how many more `micro logs --build` has.
fn diagnostics(log: &str, name: &str) -> String {
    let lines: Vec<&str> =
        log.lines().filter(|line| cargo_status(line).is_none() && !line.starts_with("micro: ")).collect();
    let start = lines
        .iter()
        .position(|line| line.starts_with("error"))
        .or_else(|| lines.iter().position(|line| line.starts_with("warning")))
        .unwrap_or(0);
    let mut shown: Vec<&str> = lines[start..].to_vec();
    while shown.last().is_some_and(|line| line.trim().is_empty()) {
        shown.pop();
    }
    let more = shown.len().saturating_sub(DIAGNOSTIC_LINES);
    shown.truncate(DIAGNOSTIC_LINES);
    let mut text = shown.join("\n");
    if more > 0 {
        text.push_str(&format!("\n… {more} more lines: `micro logs --build {name}`"));
    }
    text
}

/// The spinner of a terminal `run`/`update` on stderr: `⠙ greeter latest: building 1m5s · 57
/// crates compiled · Compiling tokio v1.54.0`.
struct BuildProgress {
    bar: indicatif::ProgressBar,
    name: String,
    version: String,
    status: String,
    /// Crates compiled in the build followed, and cargo's last status line.
    compiled: usize,
    current: String,
}

impl BuildProgress {
    fn new(name: &str, version: &str) -> Self {
        let style = indicatif::ProgressStyle::with_template("{spinner} {prefix} {since}{wide_msg}")
            .expect("the template is valid")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
            .with_key("since", |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{}", format_elapsed(state.elapsed().as_secs()));
            });
        let bar = indicatif::ProgressBar::new_spinner().with_style(style);
        let progress = Self {
            bar,
            name: name.to_string(),
            version: version.to_string(),
            status: String::from("pending"),
            compiled: 0,
            current: String::new(),
        };
        progress.show();
        progress.bar.enable_steady_tick(Duration::from_millis(100));
        progress
    }

    /// The service's status; past the build, cargo's last line goes (the count stays).
    fn status(&mut self, status: &str) {
        if self.status != status {
            self.status = status.to_string();
            if !matches!(status, "pending" | "building") {
                self.current.clear();
            }
            self.show();
        }
    }

    /// A build's output begins (again: each build is counted from the start).
    fn build_started(&mut self) {
        self.status = String::from("building");
        self.compiled = 0;
        self.current.clear();
        self.show();
    }

    /// One line of the build's output: a cargo status line is shown, `Compiling` counted.
    fn line(&mut self, line: &str) {
        if let Some(word) = cargo_status(line) {
            if word == "Compiling" {
                self.compiled += 1;
            }
            self.current = line.trim().to_string();
            self.show();
        }
    }

    fn show(&self) {
        self.bar.set_prefix(format!("{} {}: {}", self.name, self.version, self.status));
        let mut message = String::new();
        if self.compiled > 0 {
            let crates = if self.compiled == 1 { "crate" } else { "crates" };
            message.push_str(&format!(" · {} {crates} compiled", self.compiled));
        }
        if !self.current.is_empty() {
            message.push_str(&format!(" · {}", self.current));
        }
        self.bar.set_message(message);
    }

    /// Replaces the spinner with `outcome` and how long it took.
    fn finish(&self, outcome: &str) {
        let elapsed = format_elapsed(self.bar.elapsed().as_secs());
        self.bar.finish_and_clear();
        eprintln!("{outcome} ({elapsed})");
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// Shows the service's status on stderr until it runs, fails or stops: how a terminal `run` or
/// `update` follows a server without `Build.Read`.
async fn poll_progress(client: &Client, name: &str, version: &str) -> Result<()> {
    let mut stderr = std::io::stderr();
    if !stderr.is_terminal() {
        return Ok(());
    }
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let started = Instant::now();
    let mut frame = 0;
    let mut status = String::from("pending");
    let mut last_poll: Option<Instant> = None;
    loop {
        if last_poll.is_none_or(|at| at.elapsed() >= POLL_INTERVAL) {
            last_poll = Some(Instant::now());
            let services = read(client, name, version).await?;
            let Some(service) = services.iter().find(|s| s.name == name && s.version == version) else {
                let _ = write!(stderr, "\r\x1b[2K");
                return Ok(());
            };
            status = service_status(service).to_string();
            let elapsed = format_elapsed(started.elapsed().as_secs());
            match status.as_str() {
                "running" | "stopped" => {
                    let _ = writeln!(stderr, "\r\x1b[2K{name} {version} {status} ({elapsed})");
                    return Ok(());
                }
                "error" => {
                    let _ = write!(stderr, "\r\x1b[2K");
                    let error = service.metadata.get("error").map(String::as_str).unwrap_or("unknown error");
                    return Err(CliError::new(format!(
                        "service {name} {version} failed: {error}. See `micro logs {name}`"
                    )));
                }
                _ => {}
            }
        }
        let elapsed = format_elapsed(started.elapsed().as_secs());
        let _ =
            write!(stderr, "\r\x1b[2K{} {name} {version}: {status} {elapsed}", FRAMES[frame % FRAMES.len()]);
        let _ = stderr.flush();
        frame += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `name@version` → (`name`, `version`); no `@` → no version.
fn split_version(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('@') {
        Some((name, version)) if !version.is_empty() => (name, Some(version)),
        Some((name, _)) => (name, None),
        None => (arg, None),
    }
}

/// `--command "python3 app.py"` → `["python3", "app.py"]`.
fn split_words(text: Option<&str>) -> Vec<String> {
    text.map(|text| text.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

/// `--env_vars A=1,B=2 --env_vars C=3` → `["A=1", "B=2", "C=3"]`.
fn parse_env_vars(values: &[String]) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for pair in values.iter().flat_map(|value| value.split(',')) {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let valid_key = pair.split_once('=').is_some_and(|(key, _)| {
            !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !valid_key {
            return Err(CliError::new(format!(
                "invalid environment variable {pair:?}: use KEY=VALUE, e.g. --env_vars FOO=bar,DEBUG=1"
            )));
        }
        env.push(pair.to_string());
    }
    Ok(env)
}

/// A service's status name: metadata `status`, else the numeric field.
pub(crate) fn service_status(service: &Service) -> &str {
    if let Some(status) = service.metadata.get("status").filter(|status| !status.is_empty()) {
        return status;
    }
    match service.status {
        1 => "pending",
        2 => "building",
        3 => "starting",
        4 => "running",
        5 => "stopping",
        6 => "stopped",
        7 => "error",
        _ => "unknown",
    }
}

pub(crate) fn metadata<'a>(service: &'a Service, key: &str) -> &'a str {
    service.metadata.get(key).map(String::as_str).unwrap_or_default()
}

/// The status table of docs/compatibility.md §2.9; nothing when there are no services.
fn status_table(services: &[Service], now: i64) -> String {
    if services.is_empty() {
        return String::new();
    }
    let mut rows = vec![
        ["NAME", "VERSION", "SOURCE", "STATUS", "BUILD", "UPDATED", "METADATA"].map(str::to_string).to_vec(),
    ];
    for service in services {
        let status = service_status(service);
        let source = match metadata(service, "source") {
            "" if service.source.is_empty() => "n/a".to_string(),
            "" => service.source.clone(),
            source => source.to_string(),
        };
        let build = match metadata(service, "build") {
            "" => "n/a".to_string(),
            build => build.chars().take(7).collect(),
        };
        let updated = time::parse_rfc3339(metadata(service, "started")).map_or_else(
            || "n/a".to_string(),
            |started| format!("{} ago", format_elapsed((now - started).max(0).unsigned_abs())),
        );
        let mut meta = format!("owner={}, group={}", metadata(service, "owner"), metadata(service, "group"));
        // Which box the service runs in (docs/runtime.md): `landlock`, or `none`.
        if let Some(sandbox) = service.metadata.get("sandbox") {
            meta.push_str(&format!(", sandbox={sandbox}"));
        }
        if status == "error" {
            meta.push_str(&format!(", error={}", metadata(service, "error")));
        }
        // An update of a running service (docs/runtime.md#zero-downtime-update): its phase, and
        // why it failed while the old version keeps serving.
        if let Some(update) = service.metadata.get("update").filter(|update| !update.is_empty()) {
            meta.push_str(&format!(", update={update}"));
            if update == "failed" {
                meta.push_str(&format!(", update_error={}", metadata(service, "update_error")));
            }
        }
        rows.push(vec![
            service.name.clone(),
            service.version.clone(),
            source.split_whitespace().collect::<Vec<_>>().join("%20"),
            status.to_string(),
            build,
            updated,
            meta,
        ]);
    }
    crate::table::render(&rows)
}

fn status_json(services: &[Service]) -> String {
    let list: Vec<_> = services
        .iter()
        .map(|service| {
            json!({
                "name": service.name,
                "version": service.version,
                "source": service.metadata.get("source").unwrap_or(&service.source),
                "status": service_status(service),
                "metadata": service.metadata,
            })
        })
        .collect();
    format!("{}\n", serde_json::to_string_pretty(&list).expect("JSON values serialise"))
}

fn format_record(record: &LogRecord, format: LogFormat) -> String {
    match format {
        LogFormat::Text => format!("{}\n", record.message.trim_end_matches(['\n', '\r'])),
        LogFormat::Json => {
            let value = json!({
                "timestamp": record.timestamp,
                "metadata": record.metadata,
                "message": record.message.trim_end_matches(['\n', '\r']),
            });
            format!("{value}\n")
        }
    }
}

/// `<d>d<h>h<m>m<s>s` with leading zero units left out: `4s`, `5m59s`, `20h43m45s`, `1d0h0m5s`.
fn format_elapsed(secs: u64) -> String {
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d{hours}h{minutes}m{seconds}s")
    } else if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, status: &str, extra: &[(&str, &str)]) -> Service {
        let mut metadata: HashMap<String, String> = [
            ("status", status),
            ("owner", "admin"),
            ("group", "micro"),
            ("source", "./helloworld"),
            ("started", "2026-11-23T16:00:00Z"),
        ]
        .iter()
        .chain(extra)
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        metadata.retain(|_, value| !value.is_empty());
        Service { name: name.into(), version: "latest".into(), metadata, ..Default::default() }
    }

    #[test]
    fn updated_counts_leading_units_only() {
        assert_eq!(format_elapsed(4), "4s");
        assert_eq!(format_elapsed(5 * 60 + 59), "5m59s");
        assert_eq!(format_elapsed(20 * 3600 + 43 * 60 + 45), "20h43m45s");
        assert_eq!(format_elapsed(86_400 + 5), "1d0h0m5s");
        assert_eq!(format_elapsed(0), "0s");
    }

    #[test]
    fn status_table_matches_the_reference() {
        let now = time::parse_rfc3339("2026-11-23T16:05:59Z").unwrap();
        let services = [
            service("helloworld", "running", &[("build", "0123456789abcdef")]),
            service("crasher", "error", &[("error", "exit status 3"), ("started", ""), ("source", "")]),
        ];
        let mut sorted = services.to_vec();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let table = status_table(&sorted, now);
        let expected = [
            "NAME        VERSION  SOURCE        STATUS   BUILD    UPDATED    METADATA",
            "crasher     latest   n/a           error    n/a      n/a        owner=admin, group=micro, error=exit status 3",
            "helloworld  latest   ./helloworld  running  0123456  5m59s ago  owner=admin, group=micro",
        ];
        assert_eq!(table.lines().collect::<Vec<_>>(), expected);
        assert_eq!(status_table(&[], now), "");
        let updating = [
            service("a", "running", &[("update", "building")]),
            service(
                "b",
                "running",
                &[("update", "failed"), ("update_error", "build failed: cargo build failed")],
            ),
        ];
        let table = status_table(&updating, now);
        let rows: Vec<&str> = table.lines().skip(1).map(|line| line.rsplit("  ").next().unwrap()).collect();
        assert_eq!(
            rows,
            [
                "owner=admin, group=micro, update=building",
                "owner=admin, group=micro, update=failed, update_error=build failed: cargo build failed"
            ],
            "{table}"
        );

        let json: serde_json::Value = serde_json::from_str(&status_json(&sorted)).unwrap();
        assert_eq!(json[1]["source"], "./helloworld");
        assert_eq!(json[0]["status"], "error");
        assert_eq!(json[0]["metadata"]["error"], "exit status 3");
    }

    #[test]
    fn numeric_statuses_are_named() {
        let mut unnamed = Service { status: 7, ..Default::default() };
        assert_eq!(service_status(&unnamed), "error");
        unnamed.status = 0;
        assert_eq!(service_status(&unnamed), "unknown");
    }

    #[test]
    fn arguments_split_into_names_versions_words_and_env() {
        assert_eq!(split_version("helloworld@v2"), ("helloworld", Some("v2")));
        assert_eq!(split_version("helloworld"), ("helloworld", None));
        assert_eq!(service_name("./services/helloworld/"), "helloworld");
        assert_eq!(service_name("github.com/org/repo.git"), "repo");
        assert_eq!(split_words(Some("python3  app.py")), ["python3", "app.py"]);
        assert!(split_words(None).is_empty());
        assert_eq!(parse_env_vars(&["A=1,B=x=y".into(), "C=".into()]).unwrap(), ["A=1", "B=x=y", "C="]);
        assert!(parse_env_vars(&["novalue".into()]).unwrap_err().message.contains("KEY=VALUE"));
        assert!(parse_env_vars(&["1A=b".into()]).is_err());
    }

    #[test]
    fn log_records_print_as_text_or_json_lines() {
        let record = LogRecord { timestamp: 7, metadata: HashMap::new(), message: "Listening on x\n".into() };
        assert_eq!(format_record(&record, LogFormat::Text), "Listening on x\n");
        let json: serde_json::Value =
            serde_json::from_str(format_record(&record, LogFormat::Json).trim()).unwrap();
        assert_eq!((json["timestamp"].as_i64(), json["message"].as_str()), (Some(7), Some("Listening on x")));
    }

    #[test]
    fn since_is_whole_seconds_rounded_up() {
        assert_eq!(since_seconds(Duration::from_secs(3600)), 3600);
        assert_eq!(since_seconds(Duration::from_millis(500)), 1, "a part of a second is a window");
        assert_eq!(since_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(since_seconds(Duration::ZERO), 0);
    }

    #[test]
    fn cargo_status_lines_are_told_from_diagnostics() {
        assert_eq!(cargo_status("   Compiling tokio v1.54.0"), Some("Compiling"));
        assert_eq!(cargo_status("  Downloaded serde v1.0.228"), Some("Downloaded"));
        assert_eq!(
            cargo_status("    Finished `release` profile [optimized] target(s) in 3.1s"),
            Some("Finished")
        );
        assert_eq!(cargo_status("error[E0308]: mismatched types"), None);
        assert_eq!(cargo_status("Compiling"), None, "a word alone is no status line");
        assert_eq!(cargo_status("  |"), None);

        let mut progress = BuildProgress::new("greeter", "latest");
        progress.build_started();
        for line in
            ["    Updating crates.io index", "   Compiling a v1.0.0", "   Compiling b v2.0.0", "warning: x"]
        {
            progress.line(line);
        }
        assert_eq!((progress.compiled, progress.current.as_str()), (2, "Compiling b v2.0.0"));
        progress.build_started();
        assert_eq!((progress.compiled, progress.current.as_str()), (0, ""), "each build counts afresh");
        progress.clear();
    }

    #[test]
    fn a_failed_build_shows_cargos_errors_without_its_progress() {
        let log = "    Updating crates.io index\n   Compiling broken v0.1.0 (/src)\n\
                   warning: unused variable: `x`\n\
                   error[E0308]: mismatched types\n --> src/main.rs:2:18\n  |\n\
                   2 |     let x: i32 = \"text\";\n  |            ---   ^^^^^^ expected `i32`, found `&str`\n\n\
                   error: could not compile `broken` (bin \"broken\") due to 1 previous error\n\
                   micro: cargo build failed (exit status: 101)\n";
        let shown = diagnostics(log, "broken");
        assert!(shown.starts_with("error[E0308]: mismatched types\n --> src/main.rs:2:18"), "{shown}");
        assert!(shown.ends_with("due to 1 previous error"), "{shown}");
        assert!(!shown.contains("Compiling") && !shown.contains("micro:"), "{shown}");

        // Without an error, from the first warning; without either, all of it.
        assert_eq!(diagnostics("   Compiling a v1.0.0\nwarning: w\nmore\n", "a"), "warning: w\nmore");
        assert_eq!(diagnostics("something odd\n", "a"), "something odd");
        // Long: the first lines, then where the rest is.
        let long: String = (0..100).map(|i| format!("error: e{i}\n")).collect();
        let shown = diagnostics(&long, "svc");
        assert_eq!(shown.lines().count(), DIAGNOSTIC_LINES + 1);
        assert!(shown.ends_with("… 40 more lines: `micro logs --build svc`"), "{shown}");
    }

    #[test]
    fn phases_follow_the_status_and_an_update_in_progress() {
        let phase = |status: &str, extra: &[(&str, &str)]| Phase::of(&service("svc", status, extra));
        assert_eq!(phase("building", &[]), Phase::Busy("building".into()));
        assert_eq!(phase("running", &[]), Phase::Done("running".into()));
        assert_eq!(phase("stopped", &[]), Phase::Done("stopped".into()));
        assert_eq!(phase("error", &[("error", "boom")]), Phase::Failed("boom".into()));
        // A zero-downtime update: the service keeps running while its update builds and starts.
        assert_eq!(phase("running", &[("update", "building")]), Phase::Busy("building".into()));
        assert_eq!(phase("running", &[("update", "starting")]), Phase::Busy("starting".into()));
        let Phase::Failed(error) =
            phase("running", &[("update", "failed"), ("update_error", "build failed: x")])
        else {
            panic!("a failed update fails the command");
        };
        assert!(error.contains("keeps serving") && error.ends_with("build failed: x"), "{error}");
    }

    #[test]
    fn git_credentials_match_hosts_exactly() {
        let settings = std::collections::HashMap::from([
            ("git.credentials.github", "gh-token"),
            ("git.credentials.git.example.org", "own-token"),
            ("git.credentials.url", "https://code.corp.example/"),
            ("git.credentials.token", "corp-token"),
        ]);
        let lookup = |key: &str| settings.get(key).map(|v| v.to_string());
        let token = |host: &str| super::credential_for(host, &lookup);
        assert_eq!(token("github.com").as_deref(), Some("gh-token"));
        assert_eq!(token("GitHub.com.").as_deref(), Some("gh-token"));
        assert_eq!(token("git.example.org").as_deref(), Some("own-token"));
        assert_eq!(token("code.corp.example").as_deref(), Some("corp-token"));
        for stranger in ["github.evil.com", "xgithub.com", "corp.example", "example", "b.com", ""] {
            assert_eq!(token(stranger), None, "{stranger}");
        }
    }
}
