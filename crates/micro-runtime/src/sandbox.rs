//! The box every process the runtime starts runs in: the `cargo fetch` and `cargo build` of a
//! service's source (build scripts and proc macros are the tenant's code) and the service itself
//! (docs/runtime.md, "Sandbox"; the threat model is in docs/security.md).
//!
//! - [`Sandbox`]: what the kernel offers, detected once at boot ([`Sandbox::detect`]), or turned
//!   off by `micro server --unsandboxed-runtime`.
//! - [`Cell`]: the places one service owns. [`Cell::confine_fetch`], [`Cell::confine_build`] and
//!   [`Cell::confine_service`] turn them into the rules of each kind of process and apply them
//!   to its `Command`.
//!
//! Each process gets Landlock rules: read-write beneath its own dirs (source, data, and for a
//! build its namespace's cargo target dir), read-only beneath the system and the Rust toolchain,
//! and nothing else: not `MICRO_HOME/server` (signing key, store), not `MICRO_HOME/logs`, not
//! another service's source, data or build output, not `/proc/<pid>` of any process. The same
//! Landlock domain denies `ptrace` of every process outside it, the server included, and from
//! ABI 6 its signal scope stops the process from signalling anything outside it. The network
//! is left open.
//!
//! How the rules reach the child: Landlock confines the calling thread and whatever it execs, so
//! it has to be applied in the child, between fork and exec. After a fork of a multi-threaded
//! process (tokio's) only async-signal-safe work is allowed there: no allocation, no locks. So
//! everything else happens in the parent before the spawn: resolving paths, opening each allowed
//! path (`O_PATH`), creating the ruleset and adding its rules. The `pre_exec` closure only takes
//! the finished ruleset and makes two system calls on it (`prctl(PR_SET_NO_NEW_PRIVS)`,
//! `landlock_restrict_self`), then closes its descriptor (`O_CLOEXEC` from the start, so no
//! other child inherits it). The alternative, a re-exec helper (`micro` started as
//! `micro sandbox-exec RULES -- program`), needs no `unsafe` but needs an entry point that runs
//! before the binary's normal start-up, a second exec per process and the rules serialised into
//! argv; one reviewed `unsafe` block is the smaller cost.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::RuntimeError;

/// How the runtime confines the processes it starts; decided once at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sandbox {
    /// Landlock, at this ABI version (signals are scoped from 6 on).
    Landlock { abi: u8 },
    /// The kernel has no Landlock: services of namespace `micro` run unconfined, tenants' are
    /// refused.
    Unavailable,
    /// `micro server --unsandboxed-runtime`: every process runs with the server's own access.
    Disabled,
}

impl Sandbox {
    /// Landlock when the running kernel supports it, else [`Sandbox::Unavailable`].
    pub fn detect() -> Self {
        #[cfg(target_os = "linux")]
        if let Some(abi) = linux::detect() {
            return Sandbox::Landlock { abi };
        }
        Sandbox::Unavailable
    }

    /// Whether services of `namespace` may run at all: without a sandbox only the platform's
    /// own (namespace `micro`) do, unless the server was told `--unsandboxed-runtime`.
    pub fn admit_namespace(&self, namespace: &str) -> Result<(), RuntimeError> {
        if *self == Sandbox::Unavailable && namespace != micro_core::DEFAULT_NAMESPACE {
            return Err(RuntimeError::Forbidden(
                "this server cannot sandbox tenant code (its kernel has no Landlock), so it runs only \
                 services of the micro namespace"
                    .into(),
            ));
        }
        Ok(())
    }

    /// One line for the boot log.
    pub fn summary(&self) -> String {
        match self {
            Sandbox::Landlock { abi } if *abi >= linux_abi::SIGNAL_SCOPE => {
                format!("landlock (ABI {abi}): files, ptrace and signals confined")
            }
            Sandbox::Landlock { abi } => format!(
                "landlock (ABI {abi}): files and ptrace confined; signals are not scoped \
                 (needs ABI {}, Linux 6.12)",
                linux_abi::SIGNAL_SCOPE
            ),
            Sandbox::Unavailable => "none: the kernel has no Landlock, so only services of the micro \
                                     namespace run (unconfined); start the server with \
                                     --unsandboxed-runtime to run tenants' too"
                .to_string(),
            Sandbox::Disabled => "none (--unsandboxed-runtime): builds and services run with the \
                                  server's own access to every file"
                .to_string(),
        }
    }

    /// What a service in it shows as metadata `sandbox`.
    pub fn name(&self) -> &'static str {
        match self {
            Sandbox::Landlock { .. } => "landlock",
            Sandbox::Unavailable | Sandbox::Disabled => "none",
        }
    }
}

/// ABI numbers the summary needs on every platform.
mod linux_abi {
    /// `LANDLOCK_SCOPE_SIGNAL` came with ABI 6.
    pub const SIGNAL_SCOPE: u8 = 6;
}

/// What a rule lets a process do beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// Read files, list directories, execute.
    Read,
    /// Everything: also write, create, remove, rename, truncate.
    Write,
}

/// The system, read-only: programs, shared libraries and configuration (DNS, TLS roots, users);
/// `/run/systemd/resolve` because `/etc/resolv.conf` often links there; the CPU, memory and
/// cgroup files programs read to size their thread pools, and kernel settings (`/proc/sys`).
///
/// Not `/proc` as a whole: Landlock's ptrace restriction stops `ptrace` and `/proc/<pid>/mem` of
/// processes outside the domain, but on Linux 6.18 a process running as the same user still
/// read `/proc/<server pid>/environ`, `maps` and the `fd/` list (read-mode checks), and the
/// environment of the server and of other services holds secrets. So no process path is
/// granted; the price is that a process cannot read its own `/proc/self/*` either.
const SYSTEM: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    // Of /etc only what programs and builds read: not all of it, which holds /etc/shadow and
    // other secrets readable by a server running as root.
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/os-release",
    "/etc/mime.types",
    "/etc/gitconfig",
    "/run/systemd/resolve",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/version",
    "/proc/filesystems",
    "/proc/sys",
    "/sys/fs/cgroup",
    "/sys/devices/system/cpu",
];

/// Device files every program may expect to open, read-write.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// The rules of one process.
#[derive(Debug, Default)]
struct Rules(Vec<(PathBuf, Grant)>);

impl Rules {
    fn add(&mut self, path: impl Into<PathBuf>, grant: Grant) {
        self.0.push((path.into(), grant));
    }

    /// The system, the devices and the Rust toolchain (read-only): every process needs them.
    fn base() -> Self {
        let mut rules = Rules::default();
        for path in SYSTEM {
            rules.add(path, Grant::Read);
        }
        for path in DEVICES {
            rules.add(path, Grant::Write);
        }
        let toolchain = Toolchain::from_env();
        if let Some(cargo_home) = &toolchain.cargo_home {
            // Not all of CARGO_HOME: `credentials.toml` holds registry tokens.
            for entry in ["bin", "registry", "git", "config.toml", "config"] {
                rules.add(cargo_home.join(entry), Grant::Read);
            }
        }
        if let Some(rustup_home) = toolchain.rustup_home {
            rules.add(rustup_home, Grant::Read);
        }
        if let Some(cargo) = toolchain.cargo_root {
            rules.add(cargo, Grant::Read);
        }
        rules
    }

    /// The first granted path `home` lies beneath, if any: a rule there would open the server's
    /// own state to the process.
    fn covering(&self, home: &Path) -> Option<PathBuf> {
        let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
        self.0.iter().find_map(|(path, _)| {
            let path = std::fs::canonicalize(path).ok()?;
            home.starts_with(&path).then_some(path)
        })
    }
}

/// Where the server's Rust toolchain lives (the processes it starts inherit its environment).
struct Toolchain {
    /// `CARGO_HOME`, else `~/.cargo`.
    cargo_home: Option<PathBuf>,
    /// `RUSTUP_HOME`, else `~/.rustup`.
    rustup_home: Option<PathBuf>,
    /// The installation `CARGO` (set when the server runs under cargo) belongs to: `X` for
    /// `X/bin/cargo`.
    cargo_root: Option<PathBuf>,
}

impl Toolchain {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
        let home = var("HOME");
        let cargo_root = var("CARGO").filter(|cargo| cargo.is_absolute()).and_then(|cargo| {
            let dir = cargo.parent()?;
            Some(if dir.ends_with("bin") { dir.parent()?.to_path_buf() } else { dir.to_path_buf() })
        });
        Self {
            cargo_home: var("CARGO_HOME").or_else(|| home.as_ref().map(|home| home.join(".cargo"))),
            rustup_home: var("RUSTUP_HOME").or_else(|| home.as_ref().map(|home| home.join(".rustup"))),
            cargo_root,
        }
    }
}

/// The places one service owns, from which the rules of each of its processes follow.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub sandbox: Sandbox,
    pub namespace: String,
    /// `MICRO_HOME`, which no rule may cover.
    pub home: PathBuf,
    /// The service's source (the upload, the checkout, an admin's folder), read-write.
    pub source: Option<PathBuf>,
    /// The service's own data dir, read-write: the working dir of a service without a source;
    /// `tmp/` in it is every process's `TMPDIR`.
    pub data: PathBuf,
    /// Where this binary's SDK is installed (`RuntimeOptions::sdk_dir`): its `<version>/` is
    /// readable by fetches and builds, which depend on it (src/manifest.rs).
    pub sdk: PathBuf,
}

impl Cell {
    /// The private `TMPDIR` of the service's processes (a shared `/tmp` would be a way between
    /// tenants, and would open a `MICRO_HOME` that lies under it).
    pub fn tmp(&self) -> PathBuf {
        self.data.join("tmp")
    }

    /// Whether the service may run here at all; the name of the sandbox it runs in.
    pub fn admit(&self) -> Result<&'static str, RuntimeError> {
        self.sandbox.admit_namespace(&self.namespace)?;
        if let Sandbox::Landlock { .. } = self.sandbox {
            self.uncovered(&self.own())?;
        }
        Ok(self.sandbox.name())
    }

    /// Refuses rules that would grant a path containing `MICRO_HOME` (e.g. a home under `/usr`,
    /// or an admin's source folder around it): they would open the server's state.
    fn uncovered(&self, rules: &Rules) -> Result<(), RuntimeError> {
        match rules.covering(&self.home) {
            Some(path) => Err(RuntimeError::Invalid(format!(
                "the sandbox would expose the server's state: MICRO_HOME ({}) lies inside {}, which \
                 the service may access; move MICRO_HOME",
                self.home.display(),
                path.display()
            ))),
            None => Ok(()),
        }
    }

    /// `cargo fetch`: no code of the tenant runs there (the caller runs it outside the source,
    /// so the source's `.cargo/config.toml` is not read), but cargo reads the manifest, which may
    /// name paths anywhere; so it too gets only the source, plus write access to the cargo
    /// registry it downloads into, and the registry credentials.
    pub fn confine_fetch(&self, command: &mut tokio::process::Command) -> Result<(), RuntimeError> {
        let mut rules = self.own();
        rules.add(self.installed_sdk(), Grant::Read);
        if let Some(cargo_home) = Toolchain::from_env().cargo_home {
            for dir in ["registry", "git"] {
                let _ = std::fs::create_dir_all(cargo_home.join(dir));
                rules.add(cargo_home.join(dir), Grant::Write);
            }
            // Cargo's lock files: created here, as the rule needs them to exist.
            for lock in [".package-cache", ".package-cache-mutate"] {
                let path = cargo_home.join(lock);
                let _ = std::fs::OpenOptions::new().create(true).append(true).open(&path);
                rules.add(path, Grant::Write);
            }
            for credentials in ["credentials.toml", "credentials"] {
                rules.add(cargo_home.join(credentials), Grant::Read);
            }
        }
        self.confine(command, rules)
    }

    /// `cargo build --offline`: the source, the namespace's target dir, the SDK and the registry
    /// read-only.
    pub fn confine_build(
        &self,
        command: &mut tokio::process::Command,
        target_dir: &Path,
    ) -> Result<(), RuntimeError> {
        let mut rules = self.own();
        rules.add(self.installed_sdk(), Grant::Read);
        rules.add(target_dir, Grant::Write);
        self.confine(command, rules)
    }

    /// The service: its own dirs, and `program` (its binary, or an admin's command) read-only.
    pub fn confine_service(
        &self,
        command: &mut tokio::process::Command,
        program: &Path,
        dir: &Path,
    ) -> Result<(), RuntimeError> {
        let mut rules = self.own();
        if let Some(program) = resolve(program, dir) {
            rules.add(program, Grant::Read);
        }
        self.confine(command, rules)
    }

    /// This binary's installed SDK, `<sdk>/<version>`.
    fn installed_sdk(&self) -> PathBuf {
        self.sdk.join(micro_sdk::VERSION)
    }

    /// The base rules and the service's own dirs.
    fn own(&self) -> Rules {
        let mut rules = Rules::base();
        if let Some(source) = &self.source {
            rules.add(source, Grant::Write);
        }
        rules.add(&self.data, Grant::Write);
        rules
    }

    fn confine(&self, command: &mut tokio::process::Command, rules: Rules) -> Result<(), RuntimeError> {
        // `rules` starts with `own()`, so `uncovered(&rules)` below covers what `admit` checks.
        self.sandbox.admit_namespace(&self.namespace)?;
        let tmp = self.tmp();
        std::fs::create_dir_all(&tmp).map_err(crate::error::internal)?;
        command.env("TMPDIR", &tmp);
        let Sandbox::Landlock { abi } = self.sandbox else { return Ok(()) };
        self.uncovered(&rules)?;
        #[cfg(target_os = "linux")]
        {
            linux::confine(command, abi, &rules)
                .map_err(|err| RuntimeError::Internal(format!("cannot sandbox the process: {err}")))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (command, abi);
            Err(RuntimeError::Internal("Landlock exists on Linux only".into()))
        }
    }
}

/// The file `program` runs from `dir`: a path as given (relative to `dir`), a bare name looked
/// up in `PATH` as the child will.
fn resolve(program: &Path, dir: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        let path = dir.join(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|entry| dir.join(entry).join(program)).find(|path| path.is_file())
}

/// A child process of the runtime (a build or a service) in `dir`: its own process group, so a
/// stop reaches everything it started; output piped to its log; killed if the runtime drops it;
/// and none of the server's own `MICRO_*` settings (addresses, admin password, a `MICRO_HOME`
/// with a developer login), which are not the child's business.
pub(crate) fn child_command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MICRO_") {
            command.env_remove(key);
        }
    }
    command
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;

    use landlock::{
        ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
        RulesetCreated, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
    };

    use super::{Grant, Rules, linux_abi};

    /// The ABIs this sandbox is written for, newest first, with their numbers. Newer kernels are
    /// used at ABI 6: later ABIs add rights (e.g. connecting to Unix sockets by path, ABI 9)
    /// that the rules here were not tested with.
    const ABIS: [(ABI, u8); 6] =
        [(ABI::V6, 6), (ABI::V5, 5), (ABI::V4, 4), (ABI::V3, 3), (ABI::V2, 2), (ABI::V1, 1)];

    /// The newest ABI of [`ABIS`] the kernel fully supports (creating a ruleset restricts no one).
    pub(super) fn detect() -> Option<u8> {
        ABIS.iter().find(|(abi, number)| ruleset(*abi, *number).is_ok()).map(|(_, number)| *number)
    }

    /// An empty ruleset handling every right of `abi`, refusing to be weaker than that.
    fn ruleset(abi: ABI, number: u8) -> Result<RulesetCreated, RulesetError> {
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))?;
        if number >= linux_abi::SIGNAL_SCOPE {
            // Only signals: abstract Unix sockets stay reachable, as the network does.
            ruleset = ruleset.scope(Scope::Signal)?;
        }
        ruleset.create()
    }

    /// Builds the ruleset of `rules` now, in the parent, and has the child restrict itself with
    /// it between fork and exec (see the module docs for why).
    pub(super) fn confine(
        command: &mut tokio::process::Command,
        number: u8,
        rules: &Rules,
    ) -> Result<(), RulesetError> {
        let abi = ABIS.iter().find(|(_, n)| *n == number).map_or(ABI::V1, |(abi, _)| *abi);
        let mut created = ruleset(abi, number)?;
        for (path, grant) in &rules.0 {
            // A path that does not exist (no /lib32 here) grants nothing.
            let Ok(fd) = PathFd::new(path) else { continue };
            let mut access = match grant {
                Grant::Read => AccessFs::from_read(abi),
                Grant::Write => AccessFs::from_all(abi),
            };
            if !Path::new(path).is_dir() {
                access &= AccessFs::from_file(abi);
            }
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
        let mut ruleset = Some(created);
        #[allow(unsafe_code, reason = "pre_exec is the only way to act between fork and exec")]
        // SAFETY: the closure runs in the forked child, where only async-signal-safe calls are
        // sound. `restrict` makes two system calls (prctl, landlock_restrict_self) on a
        // ruleset built in the parent, closes its descriptor and builds errors from errno: no
        // allocation, no lock. `take` leaves `None` for a second spawn of the same command,
        // which then fails instead of running unconfined.
        unsafe {
            command.pre_exec(move || restrict(ruleset.take()));
        }
        Ok(())
    }

    /// Confines the calling (child) process; any failure stops the exec.
    fn restrict(ruleset: Option<RulesetCreated>) -> std::io::Result<()> {
        let Some(ruleset) = ruleset else { return Err(std::io::ErrorKind::InvalidInput.into()) };
        match ruleset.restrict_self() {
            Ok(status) if status.ruleset == RulesetStatus::FullyEnforced => Ok(()),
            Ok(_) => Err(std::io::ErrorKind::PermissionDenied.into()),
            Err(_) => Err(std::io::Error::last_os_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A home with a secret, a source and a data dir, as the runtime lays them out.
    struct Layout {
        home: tempfile::TempDir,
        source: PathBuf,
        cell: Cell,
    }

    fn layout(namespace: &str, sandbox: Sandbox) -> Layout {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("server")).unwrap();
        std::fs::write(home.path().join("server/auth_key"), "secret").unwrap();
        let source = home.path().join("sources").join(namespace).join("svc-latest-1");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("input"), "mine").unwrap();
        let other = home.path().join("sources").join(namespace).join("other-latest-2");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("input"), "theirs").unwrap();
        let data = home.path().join("build/services").join(namespace).join("svc-latest/data");
        let cell = Cell {
            sandbox,
            namespace: namespace.into(),
            home: home.path().to_path_buf(),
            source: Some(source.clone()),
            data,
            sdk: home.path().join("sdk"),
        };
        Layout { home, source, cell }
    }

    /// Runs `script` with `sh -c` as the service of `cell` and returns its stdout.
    async fn run(cell: &Cell, dir: &Path, script: &str) -> Result<String, RuntimeError> {
        let mut command = child_command("sh", dir);
        command.args(["-c", script]);
        cell.confine_service(&mut command, Path::new("sh"), dir)?;
        let output = command.output().await.unwrap();
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn attempt(what: &str, command: &str) -> String {
        format!("if {command} >/dev/null 2>&1; then echo '{what}: allowed'; else echo '{what}: denied'; fi\n")
    }

    #[tokio::test]
    async fn a_sandboxed_child_stays_in_its_dirs_and_cannot_signal_its_parent() {
        let sandbox = Sandbox::detect();
        let Sandbox::Landlock { abi } = sandbox else {
            eprintln!("skipped: this kernel has no Landlock");
            return;
        };
        let layout = layout("foo", sandbox);
        let home = layout.home.path().display().to_string();
        let script = [
            attempt("own source read", "cat input"),
            attempt("own source write", "sh -c 'echo out > output && test \"$(cat output)\" = out'"),
            attempt("tmpdir write", "sh -c 'echo t > \"$TMPDIR/t\" && cat \"$TMPDIR/t\"'"),
            attempt("system read", "cat /etc/passwd /usr/bin/env"),
            attempt("auth_key", &format!("cat {home}/server/auth_key")),
            attempt("server dir list", &format!("ls {home}/server")),
            attempt("other source", &format!("cat {home}/sources/foo/other-latest-2/input")),
            attempt("server dir write", &format!("touch {home}/server/planted")),
            attempt("parent environ", "cat /proc/$PPID/environ"),
            attempt("kill parent", "kill -0 $PPID"),
        ]
        .concat();
        let output = run(&layout.cell, &layout.source, &script).await.unwrap();
        for expected in [
            "own source read: allowed",
            "own source write: allowed",
            "tmpdir write: allowed",
            "system read: allowed",
            "auth_key: denied",
            "server dir list: denied",
            "other source: denied",
            "server dir write: denied",
            "parent environ: denied",
        ] {
            assert!(output.contains(expected), "{expected:?} in:\n{output}");
        }
        let signals = if abi >= linux_abi::SIGNAL_SCOPE { "denied" } else { "allowed" };
        assert!(output.contains(&format!("kill parent: {signals}")), "{output}");
        assert!(!layout.home.path().join("server/planted").exists());
        assert_eq!(std::fs::read_to_string(layout.source.join("output")).unwrap(), "out\n");

        // The same child unconfined reads everything: the test itself is sound.
        let open = Cell { sandbox: Sandbox::Disabled, ..layout.cell.clone() };
        let output = run(&open, &layout.source, &attempt("auth_key", &format!("cat {home}/server/auth_key")))
            .await
            .unwrap();
        assert_eq!(output, "auth_key: allowed\n");
    }

    #[tokio::test]
    async fn tenants_are_refused_without_a_sandbox_and_home_is_never_granted() {
        let tenant = layout("foo", Sandbox::Unavailable);
        let refused = run(&tenant.cell, &tenant.source, "echo ran").await.unwrap_err();
        assert!(matches!(&refused, RuntimeError::Forbidden(m) if m.contains("Landlock")), "{refused:?}");
        let admin = layout("micro", Sandbox::Unavailable);
        assert_eq!(admin.cell.admit().unwrap(), "none");
        assert_eq!(run(&admin.cell, &admin.source, "echo ran").await.unwrap(), "ran\n");

        let Sandbox::Landlock { .. } = Sandbox::detect() else { return };
        // A source that contains MICRO_HOME would open it: refused with a reason.
        let mut wide = layout("micro", Sandbox::detect());
        assert_eq!(wide.cell.admit().unwrap(), "landlock");
        wide.cell.source = Some(wide.home.path().parent().unwrap().to_path_buf());
        let err = run(&wide.cell, &wide.source, "echo ran").await.unwrap_err();
        assert!(matches!(&err, RuntimeError::Invalid(m) if m.contains("MICRO_HOME")), "{err:?}");
        assert_eq!(wide.cell.admit().unwrap_err(), err, "refused before anything runs");
    }

    /// The installed SDK is readable by builds (which depend on it) and by nothing else; an SDK
    /// dir around `MICRO_HOME` would open the server's state, and is refused like a source.
    #[tokio::test]
    async fn builds_read_the_sdk_and_services_do_not() {
        let sandbox = Sandbox::detect();
        let Sandbox::Landlock { .. } = sandbox else {
            eprintln!("skipped: this kernel has no Landlock");
            return;
        };
        let mut layout = layout("foo", sandbox);
        let sdk = micro_sdk::install(&layout.cell.sdk).unwrap();
        let manifest = micro_sdk::crate_dir(&sdk, "micro").join("Cargo.toml");
        let script = attempt("sdk read", &format!("cat {}", manifest.display()));
        let target = layout.home.path().join("build/targets/foo");
        std::fs::create_dir_all(&target).unwrap();
        let mut build = child_command("sh", &layout.source);
        build.args(["-c", &script]);
        layout.cell.confine_build(&mut build, &target).unwrap();
        let output = build.output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), "sdk read: allowed\n");
        assert_eq!(run(&layout.cell, &layout.source, &script).await.unwrap(), "sdk read: denied\n");

        let outer = tempfile::tempdir().unwrap();
        layout.cell.sdk = outer.path().to_path_buf();
        layout.cell.home = outer.path().join(micro_sdk::VERSION).join("home");
        std::fs::create_dir_all(&layout.cell.home).unwrap();
        let mut build = child_command("sh", &layout.source);
        let err = layout.cell.confine_build(&mut build, &target).unwrap_err();
        assert!(matches!(&err, RuntimeError::Invalid(m) if m.contains("MICRO_HOME")), "{err:?}");
    }
}
