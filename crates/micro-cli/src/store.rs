//! `micro store`: read, write, delete and list records, and show databases and tables
//! (docs/compatibility.md §2.12). The database defaults to the current namespace, the table to `micro`.

use std::time::Duration;

use clap::{Args, Subcommand};
use micro_proto::store::store_client::StoreClient;
use micro_proto::store::{
    DatabasesRequest, DeleteOptions, DeleteRequest, ListOptions, ListRequest, ReadOptions, ReadRequest,
    Record, TablesRequest, WriteOptions, WriteRequest,
};
use serde_json::json;

use crate::error::{CliError, Result};
use crate::table::Output;
use crate::{Global, out, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Read records and print their values, one per line
    Read(ReadArgs),
    /// Write a record; the value is the remaining arguments joined by spaces
    Write(WriteArgs),
    /// Delete a record
    Delete(DeleteArgs),
    /// List keys, one per line
    List(ListArgs),
    /// List the databases
    Databases {
        /// Output format: names, one a line, or a JSON array of them
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List the tables of a database
    Tables {
        #[command(flatten)]
        scope: Scope,
        /// Output format: names, one a line, or a JSON array of them
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

/// Where records live.
#[derive(Args, Debug, Default)]
pub struct Scope {
    /// Database [default: the current namespace]
    #[arg(short = 'd', long)]
    database: Option<String>,
    /// Table [default: micro]
    #[arg(short = 't', long)]
    table: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReadArgs {
    /// The key, or with --prefix/--suffix the start/end of the keys
    key: String,
    #[command(flatten)]
    scope: Scope,
    /// Read every record whose key starts with KEY
    #[arg(short = 'p', long)]
    prefix: bool,
    /// Read every record whose key ends with KEY
    #[arg(long, conflicts_with = "prefix")]
    suffix: bool,
    /// Read at most this many records
    #[arg(short = 'l', long, default_value_t = 0, hide_default_value = true)]
    limit: u64,
    /// Skip this many records
    #[arg(short = 'o', long, default_value_t = 0, hide_default_value = true)]
    offset: u64,
    /// Print a table of key, value and expiry
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Args, Debug)]
pub struct WriteArgs {
    key: String,
    /// The value; several words are joined with spaces. Flags may come before, between or
    /// after them; put `--` before a value that starts with a dash
    #[arg(required = true, num_args = 1..)]
    value: Vec<String>,
    #[command(flatten)]
    scope: Scope,
    /// Delete the record after this long, e.g. 30s, 5m, 1h30m
    #[arg(short = 'e', long, value_parser = parse_expiry)]
    expiry: Option<Duration>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    key: String,
    #[command(flatten)]
    scope: Scope,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only keys starting with this
    #[arg(value_name = "PREFIX")]
    key: Option<String>,
    #[command(flatten)]
    scope: Scope,
    /// Treat the argument as a prefix (it always is; kept for the original's grammar)
    #[arg(short = 'p', long)]
    prefix: bool,
    /// Only keys ending with this
    #[arg(long, value_name = "SUFFIX")]
    suffix: Option<String>,
    /// List at most this many keys
    #[arg(short = 'l', long, default_value_t = 0, hide_default_value = true)]
    limit: u64,
    /// Skip this many keys
    #[arg(short = 'o', long, default_value_t = 0, hide_default_value = true)]
    offset: u64,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

fn parse_expiry(input: &str) -> std::result::Result<Duration, String> {
    match micro_core::duration::parse(input) {
        Ok(duration) if duration.is_zero() => Err("the expiry must be a positive duration".to_string()),
        Ok(duration) => Ok(duration),
        Err(err) => Err(err.to_string()),
    }
}

pub async fn run(global: &Global, command: StoreCommand) -> Result<()> {
    if let StoreCommand::Unknown(args) = &command {
        return Err(unrecognized_subcommand("store", args));
    }
    let client = global.connect().await?;
    let mut store = StoreClient::new(client.channel.clone());
    match command {
        StoreCommand::Read(args) => {
            let options = ReadOptions {
                database: args.scope.database.unwrap_or_default(),
                table: args.scope.table.unwrap_or_default(),
                prefix: args.prefix,
                suffix: args.suffix,
                limit: args.limit,
                offset: args.offset,
            };
            // The server returns a capped page per call (docs/security.md): page on until done.
            let scan = args.prefix || args.suffix;
            let paging = Paging { offset: options.offset, limit: options.limit };
            let mut records = Vec::new();
            loop {
                let (offset, limit) = paging.next(records.len());
                let page = ReadOptions { offset, limit, ..options.clone() };
                let request = client.request(ReadRequest { key: args.key.clone(), options: Some(page) });
                let got =
                    store.read(request).await.map_err(|status| client.error(status))?.into_inner().records;
                let got_none = got.is_empty();
                records.extend(got);
                if !scan || paging.done(got_none, records.len()) {
                    break;
                }
            }
            if records.is_empty() {
                return Err(CliError::not_found());
            }
            out(&format_records(&records, args.verbose, args.output));
        }
        StoreCommand::Write(args) => {
            let expiry = args.expiry.unwrap_or_default();
            let record = Record {
                key: args.key,
                value: args.value.join(" ").into_bytes(),
                expiry: i64::try_from(expiry.as_secs()).unwrap_or(i64::MAX),
                expiry_ms: i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX),
                metadata: Default::default(),
            };
            let options = WriteOptions {
                database: args.scope.database.unwrap_or_default(),
                table: args.scope.table.unwrap_or_default(),
            };
            let request = client.request(WriteRequest { record: Some(record), options: Some(options) });
            store.write(request).await.map_err(|status| client.error(status))?;
        }
        StoreCommand::Delete(args) => {
            let options = DeleteOptions {
                database: args.scope.database.unwrap_or_default(),
                table: args.scope.table.unwrap_or_default(),
            };
            let request = client.request(DeleteRequest { key: args.key, options: Some(options) });
            store.delete(request).await.map_err(|status| client.error(status))?;
        }
        StoreCommand::List(args) => {
            let options = ListOptions {
                database: args.scope.database.unwrap_or_default(),
                table: args.scope.table.unwrap_or_default(),
                prefix: args.key.unwrap_or_default(),
                suffix: args.suffix.unwrap_or_default(),
                limit: args.limit,
                offset: args.offset,
            };
            let paging = Paging { offset: options.offset, limit: options.limit };
            let mut keys = Vec::new();
            loop {
                let (offset, limit) = paging.next(keys.len());
                let page = ListOptions { offset, limit, ..options.clone() };
                let request = client.request(ListRequest { options: Some(page) });
                let mut stream =
                    store.list(request).await.map_err(|status| client.error(status))?.into_inner();
                let before = keys.len();
                while let Some(page) = stream.message().await.map_err(|status| client.error(status))? {
                    keys.extend(page.keys);
                }
                if paging.done(keys.len() == before, keys.len()) {
                    break;
                }
            }
            out(&names(&keys, args.output));
        }
        StoreCommand::Databases { output } => {
            let request = client.request(DatabasesRequest {});
            let reply = store.databases(request).await.map_err(|status| client.error(status))?.into_inner();
            out(&names(&reply.databases, output));
        }
        StoreCommand::Tables { scope, output } => {
            let request = client.request(TablesRequest { database: scope.database.unwrap_or_default() });
            let reply = store.tables(request).await.map_err(|status| client.error(status))?.into_inner();
            out(&names(&reply.tables, output));
        }
        StoreCommand::Unknown(_) => unreachable!("handled before connecting"),
    }
    Ok(())
}

/// What the user asked of a read or list that the server answers a capped page at a time
/// (docs/security.md): skip `offset`, then at most `limit` (0: all).
#[derive(Clone, Copy, Debug)]
struct Paging {
    offset: u64,
    limit: u64,
}

impl Paging {
    /// The offset and limit of the next page, `taken` items in.
    fn next(self, taken: usize) -> (u64, u64) {
        let taken = taken as u64;
        // `done` ends the paging once `taken` reaches the limit, so this never goes below zero.
        let limit = if self.limit == 0 { 0 } else { self.limit - taken };
        (self.offset.saturating_add(taken), limit)
    }

    /// Whether paging ends: the last page brought nothing, or `taken` items fill the limit.
    fn done(self, got_none: bool, taken: usize) -> bool {
        got_none || (self.limit > 0 && taken as u64 >= self.limit)
    }
}

/// Keys, databases or tables: one a line, or a JSON array of strings.
fn names(items: &[String], output: Output) -> String {
    match output {
        Output::Table => items.iter().map(|item| format!("{item}\n")).collect(),
        Output::Json => crate::table::json(&items),
    }
}

fn format_records(records: &[Record], verbose: bool, output: Output) -> String {
    match output {
        Output::Json => {
            let json: Vec<_> = records
                .iter()
                .map(|record| {
                    let metadata: serde_json::Map<_, _> = record
                        .metadata
                        .iter()
                        .map(|(key, field)| {
                            (key.clone(), json!({"type": field.r#type, "value": field.value}))
                        })
                        .collect();
                    json!({
                        "key": record.key,
                        "value": String::from_utf8_lossy(&record.value),
                        "expiry": record.ttl().map(go_duration),
                        "metadata": metadata,
                    })
                })
                .collect();
            format!("{}\n", serde_json::to_string_pretty(&json).expect("JSON values serialise"))
        }
        Output::Table if verbose => {
            let mut rows = vec![vec!["KEY".to_string(), "VALUE".to_string(), "EXPIRY".to_string()]];
            rows.extend(records.iter().map(|record| {
                vec![
                    record.key.clone(),
                    String::from_utf8_lossy(&record.value).into_owned(),
                    record.ttl().map_or_else(|| "None".to_string(), go_duration),
                ]
            }));
            crate::table::render(&rows)
        }
        Output::Table => {
            records.iter().map(|record| format!("{}\n", String::from_utf8_lossy(&record.value))).collect()
        }
    }
}

/// A duration the way `--expiry` takes one, to the second: `1h2m3s`, `45s`.
fn go_duration(duration: Duration) -> String {
    let total = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &str, expiry_ms: i64) -> Record {
        Record { key: key.into(), value: value.into(), expiry: 0, expiry_ms, metadata: Default::default() }
    }

    #[test]
    fn records_print_as_values_table_or_json() {
        let records = [record("a", "one", 0), record("b", "two words", 61_500)];
        assert_eq!(format_records(&records, false, Output::Table), "one\ntwo words\n");
        assert_eq!(
            format_records(&records, true, Output::Table),
            "KEY  VALUE      EXPIRY\na    one        None\nb    two words  1m2s\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&format_records(&records, false, Output::Json)).unwrap();
        assert_eq!(json[1]["value"], "two words");
        assert_eq!(json[1]["expiry"], "1m2s");
        assert_eq!(json[0]["expiry"], serde_json::Value::Null);
    }

    #[derive(clap::Parser, Debug)]
    struct Write {
        #[command(flatten)]
        args: WriteArgs,
    }

    fn write(args: &[&str]) -> std::result::Result<WriteArgs, clap::Error> {
        use clap::Parser as _;
        Write::try_parse_from(std::iter::once("write").chain(args.iter().copied())).map(|write| write.args)
    }

    #[test]
    fn write_takes_flags_anywhere_and_dashed_values_after_a_double_dash() {
        for args in
            [&["--expiry", "1s", "k", "v"][..], &["k", "v", "--expiry", "1s"], &["k", "--expiry", "1s", "v"]]
        {
            let parsed = write(args).unwrap();
            assert_eq!((parsed.key.as_str(), parsed.value.join(" ")), ("k", "v".to_string()), "{args:?}");
            assert_eq!(parsed.expiry, Some(Duration::from_secs(1)), "{args:?}");
        }
        let words = write(&["k", "two", "words", "-t", "other"]).unwrap();
        assert_eq!(
            (words.value.join(" "), words.scope.table.as_deref()),
            ("two words".to_string(), Some("other"))
        );
        let dashed = write(&["k", "--", "-1", "--expiry"]).unwrap();
        assert_eq!((dashed.value.join(" "), dashed.expiry), ("-1 --expiry".to_string(), None));
        let error = write(&["k", "-1"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument, "{error}");
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
        assert_eq!(go_duration(Duration::from_millis(100)), "1s", "a live record never shows 0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn pages_continue_where_the_last_ended_until_the_limit_or_an_empty_page() {
        let limited = Paging { offset: 10, limit: 250 };
        assert_eq!(limited.next(0), (10, 250));
        assert_eq!(limited.next(100), (110, 150), "the rest of the limit, after what came");
        assert!(!limited.done(false, 100));
        assert!(limited.done(false, 250), "the limit is filled");
        assert!(limited.done(true, 100), "an empty page ends it");
        let all = Paging { offset: 0, limit: 0 };
        assert_eq!(all.next(1000), (1000, 0), "no limit stays no limit");
        assert!(!all.done(false, usize::MAX));
        assert_eq!(Paging { offset: u64::MAX, limit: 0 }.next(5), (u64::MAX, 0));
    }

    #[test]
    fn expiry_must_be_a_positive_duration() {
        assert_eq!(parse_expiry("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_expiry("0").is_err());
        assert!(parse_expiry("soon").unwrap_err().contains("duration"));
    }
}
