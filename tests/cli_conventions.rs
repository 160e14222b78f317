//! The CLI's conventions (docs/cli.md): shell completion and man pages generated from the
//! command tree, `--output json` on every listing, exit code 2 for usage errors, and
//! `NO_COLOR`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, json, micro_in, stderr, stdout};

/// Runs `script` in a non-interactive bash with the completion script at `completion` sourced
/// and returns what it printed.
fn bash(completion: &Path, script: &str) -> String {
    let output = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(format!("source {}\n{script}", completion.display()))
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "bash failed: {}", stderr(&output));
    stdout(&output)
}

/// What bash offers for the last word of `line`, asking the completion function as bash does
/// on TAB: `COMP_WORDS`, `COMP_CWORD`, `COMP_LINE` and `COMP_POINT` set, the function called
/// with the command, the word and the word before it, the offers read from `COMPREPLY`.
fn completions(completion: &Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let quoted: Vec<String> = words.iter().map(|word| format!("'{word}'")).collect();
    let cword = words.len() - 1;
    let previous = if cword > 0 { words[cword - 1] } else { "" };
    let script = format!(
        "COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         _micro micro '{current}' '{previous}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = quoted.join(" "),
        current = words[cword],
    );
    bash(completion, &script).lines().filter(|line| !line.is_empty()).map(str::to_string).collect()
}

#[test]
fn completion_scripts_complete_the_command_tree() {
    let home = tempfile::tempdir().unwrap();
    let output = micro_in(home.path(), &["completion", "bash"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let script = home.path().join("micro.bash");
    std::fs::write(&script, &output.stdout).unwrap();

    assert_eq!(completions(&script, "micro sto"), ["store"]);
    assert_eq!(completions(&script, "micro store re"), ["read"]);
    let flags = completions(&script, "micro store read --pre");
    assert_eq!(flags, ["--prefix"], "flags of a subcommand");
    let shells = completions(&script, "micro completion ");
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|offer| offer == shell), "{shell} in {shells:?}");
    }

    let zsh = micro_in(home.path(), &["completion", "zsh"]);
    assert!(stdout(&zsh).starts_with("#compdef micro"), "{}", stdout(&zsh));
    let fish = micro_in(home.path(), &["completion", "fish"]);
    assert!(stdout(&fish).contains("complete -c micro"), "{}", stdout(&fish));
    let unknown = micro_in(home.path(), &["completion", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2), "an unknown shell is a usage error");
    assert_eq!(stdout(&unknown), "");
}

#[test]
fn man_pages_are_written_for_every_command() {
    let home = tempfile::tempdir().unwrap();
    let top = micro_in(home.path(), &["man"]);
    assert!(top.status.success(), "{}", stderr(&top));
    assert!(stdout(&top).contains(".TH micro 1"), "{}", stdout(&top));

    let dir = home.path().join("man/man1");
    let output = micro_in(home.path(), &["man", "--out", dir.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "");
    for (page, mentions) in [
        ("micro.1", "store"),
        ("micro-store.1", "read"),
        ("micro-store-read.1", "prefix"),
        ("micro-completion.1", "shell"),
        ("micro-auth-list-accounts.1", "output"),
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|err| panic!("{page}: {err}"));
        assert!(text.contains(".TH "), "{page} has a title line");
        assert!(text.contains(mentions), "{page} mentions {mentions}");
    }

    // groff formats the page without a warning, and the reader sees the command and its flags.
    let rendered =
        Command::new("groff").args(["-man", "-Tutf8", "-ww"]).arg(dir.join("micro-store-read.1")).output();
    match rendered {
        Ok(rendered) => {
            assert!(rendered.status.success(), "{}", stderr(&rendered));
            assert_eq!(stderr(&rendered), "", "groff warns");
            let text = stdout(&rendered);
            assert!(text.contains("micro-store-read") && text.contains("--prefix"), "{text}");
        }
        Err(err) => eprintln!("groff not run ({err}): the pages were checked as text only"),
    }

    let unwritable = micro_in(home.path(), &["man", "--out", "/proc/no/such/dir"]);
    assert_eq!(unwritable.status.code(), Some(1), "{}", stderr(&unwritable));
    assert!(stderr(&unwritable).starts_with("Cannot write man pages into /proc/no/such/dir: "));
}

#[test]
fn usage_errors_exit_2_and_other_failures_keep_their_codes() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    for args in [
        &["store", "read"][..],
        &["store", "list", "--limit", "many"],
        &["store", "--nosuchflag"],
        &["--nosuchflag"],
        &["env", "--output", "yaml"],
        &["jobs", "create", "tick", "--at", "tomorrow", "--publish", "ticks"],
    ] {
        let output = micro_in(h, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert_eq!(stdout(&output), "", "{args:?}");
        assert!(!stderr(&output).trim().is_empty(), "{args:?} says what is wrong");
    }
    let missing = micro_in(h, &["store", "read"]);
    assert!(stderr(&missing).contains("<KEY>"), "clap names the missing argument: {}", stderr(&missing));
    let at = micro_in(h, &["jobs", "create", "tick", "--at", "tomorrow", "--publish", "ticks"]);
    assert!(stderr(&at).starts_with("Invalid --at \"tomorrow\""), "the CLI's own check: {}", stderr(&at));

    // The original's codes for everything else (docs/cli.md, "Exit codes").
    assert_eq!(micro_in(h, &[]).status.code(), Some(1), "no command");
    assert_eq!(micro_in(h, &["frobnicate"]).status.code(), Some(1), "unknown command");
    assert_eq!(micro_in(h, &["config", "asdasd"]).status.code(), Some(1), "unknown subcommand");
    assert!(micro_in(h, &["env", "add", "closed", "127.0.0.1:1"]).status.success());
    let unreachable = micro_in(h, &["-e", "closed", "store", "read", "k"]);
    assert_eq!(unreachable.status.code(), Some(4), "{}", stderr(&unreachable));
    let help = micro_in(h, &["store", "read", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("micro store read"), "{}", stdout(&help));
}

#[test]
fn env_lists_as_json() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    assert!(micro_in(h, &["env", "add", "prod", "proxy.example.com"]).status.success());
    assert!(micro_in(h, &["env", "add", "staging", "10.0.0.5:8081"]).status.success());
    assert!(micro_in(h, &["env", "set", "staging"]).status.success());

    let output = micro_in(h, &["env", "--output", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let envs = json(&stdout(&output));
    let envs = envs.as_array().expect("an array");
    let names: Vec<&str> = envs.iter().map(|env| env["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["local", "prod", "staging"]);
    let env = |name: &str| envs.iter().find(|env| env["name"] == name).unwrap();
    assert_eq!(env("local")["address"], "127.0.0.1:8081");
    assert_eq!(
        (env("prod")["address"].as_str(), env("prod")["tls"].as_bool()),
        (Some("proxy.example.com"), Some(true))
    );
    assert_eq!(
        (env("staging")["current"].as_bool(), env("local")["current"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(env("prod")["ca"].is_null());

    let table = stdout(&micro_in(h, &["env"]));
    assert!(table.lines().any(|line| line.starts_with("* staging")), "the table is unchanged: {table}");
}

#[test]
fn listings_print_json_with_stable_fields() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start(home.path());

    let services = json(&server.ok(&["services", "--output", "json"]));
    let store = services.as_array().unwrap().iter().find(|service| service["name"] == "store");
    assert!(store.is_some_and(|store| store["versions"].is_array()), "{services}");
    let names: Vec<String> = server.ok(&["services"]).lines().map(str::to_string).collect();
    let json_names: Vec<&str> =
        services.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, json_names, "the same services, in the same order");

    let accounts = json(&server.ok(&["auth", "list", "accounts", "--output", "json"]));
    let admin = accounts.as_array().unwrap().iter().find(|account| account["id"] == "admin").expect("admin");
    assert!(admin["scopes"].as_array().unwrap().iter().any(|scope| scope == "admin"), "{admin}");
    assert!(admin.get("secret").is_none(), "no secret is listed: {admin}");

    let rules = json(&server.ok(&["auth", "list", "rules", "--output", "json"]));
    let default =
        rules.as_array().unwrap().iter().find(|rule| rule["id"] == "default").expect("default rule");
    assert_eq!(
        (
            default["scope"].as_str(),
            default["access"].as_str(),
            default["resource"].as_str(),
            default["priority"].as_i64()
        ),
        (Some(""), Some("GRANTED"), Some("*:*:*"), Some(0))
    );

    server.ok(&["store", "write", "-t", "orders", "k", "v"]);
    let tables = json(&server.ok(&["store", "tables", "--output", "json"]));
    assert!(tables.as_array().unwrap().iter().any(|table| table == "orders"), "{tables}");
    let databases = json(&server.ok(&["store", "databases", "--output", "json"]));
    assert!(databases.as_array().unwrap().iter().any(|db| db == "micro"), "{databases}");

    server.ok(&["config", "set", "greeting", "hello"]);
    assert_eq!(server.ok(&["config", "get", "greeting"]), "hello\n");
    assert_eq!(server.ok(&["config", "get", "greeting", "--output", "json"]), "\"hello\"\n");

    // A usage mistake the CLI finds itself: exit 2, nothing created.
    let bad = server.micro(&["auth", "create", "rule", "x", "--resource", "service:store"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let after = json(&server.ok(&["auth", "list", "rules", "--output", "json"]));
    assert!(!after.as_array().unwrap().iter().any(|rule| rule["id"] == "x"), "{after}");
}

/// `micro args` on a terminal (a pseudo-terminal that `script` opens), with `NO_COLOR` set to
/// `no_color` when given; returns what the terminal showed and the exit code.
fn on_terminal(home: &Path, args: &str, no_color: Option<&str>) -> (String, Option<i32>) {
    let mut command = Command::new("script");
    command.args(["-qec", &format!("{} {args}", common::micro_bin()), "/dev/null"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("MICRO_") {
            command.env_remove(key);
        }
    }
    command.env("MICRO_HOME", home).env("TERM", "xterm-256color").env_remove("NO_COLOR");
    command.env_remove("CLICOLOR").env_remove("CLICOLOR_FORCE");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let output = command.output().expect("script (util-linux) runs");
    (stdout(&output), output.status.code())
}

#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(!common::in_ci(), "CI must run this test: script (util-linux) is missing");
        eprintln!("skipped: script (util-linux) is not installed");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // A usage error on a terminal: clap writes `error:` in colour unless NO_COLOR is set.
    let (coloured, code) = on_terminal(home.path(), "store read", None);
    assert_eq!(code, Some(2), "{coloured}");
    assert!(coloured.contains("\u{1b}["), "colour on a terminal: {coloured:?}");
    let (plain, code) = on_terminal(home.path(), "store read", Some("1"));
    assert_eq!(code, Some(2), "{plain}");
    assert!(plain.contains("error:") && !plain.contains('\u{1b}'), "no colour codes: {plain:?}");
    // An empty NO_COLOR is unset (no-color.org).
    let (empty, _) = on_terminal(home.path(), "store read", Some(""));
    assert!(empty.contains("\u{1b}["), "{empty:?}");
}
