//! `micro jobs`: create, list, run, show the history of and delete scheduled jobs (docs/jobs.md).

use clap::{ArgGroup, Subcommand};
use micro_proto::jobs::jobs_client::JobsClient;
use micro_proto::jobs::{CreateRequest, DeleteRequest, HistoryRequest, Job, ListRequest, Run, RunRequest};

use crate::error::{CliError, Result};
use crate::table::Output;
use crate::{Global, out, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Create a job that publishes an event or calls an endpoint on a schedule, as you
    #[command(
        group(ArgGroup::new("schedule").required(true).args(["cron", "every", "at"])),
        group(ArgGroup::new("action").required(true).args(["publish", "call"])),
    )]
    Create {
        /// The job's name: lowercase letters, digits, '-' and '_'
        name: String,
        /// A 5-field cron expression in UTC (minute hour day-of-month month day-of-week), e.g. "*/5 * * * *"
        #[arg(long, value_name = "EXPR")]
        cron: Option<String>,
        /// A fixed period, e.g. 30s, 5m, 1h30m (at least 1s)
        #[arg(long, value_name = "DURATION")]
        every: Option<String>,
        /// Once, at an RFC 3339 time (2030-01-02T03:04:05Z) or after a duration from now (+10m)
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Publish an event to this topic
        #[arg(long, value_name = "TOPIC")]
        publish: Option<String>,
        /// Call this service's endpoint, e.g. --call greeter Greeter.Call
        #[arg(long, num_args = 2, value_names = ["SERVICE", "ENDPOINT"])]
        call: Option<Vec<String>>,
        /// JSON: the event's payload, or the request body of the call
        #[arg(long, value_name = "JSON")]
        data: Option<String>,
        /// Firings missed while every server was down: skip them, or catch up once for all
        #[arg(long, value_name = "POLICY", value_parser = ["skip", "catch-up"], default_value = "skip")]
        missed: String,
    },
    /// List the namespace's jobs and their next firing
    List {
        /// Output format: a table, or one JSON object per line
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Fire a job now, once, and print how it went
    Run {
        name: String,
        /// Output format: a table, or one JSON object per line
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show a job's recent runs, newest first
    History {
        name: String,
        /// At most this many runs (0 = all that are kept)
        #[arg(long, default_value_t = 25)]
        limit: u32,
        /// Output format: a table, or one JSON object per line
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Delete a job and its history
    #[command(alias = "del")]
    Delete { name: String },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

pub async fn run(global: &Global, command: JobsCommand) -> Result<()> {
    if let JobsCommand::Unknown(args) = &command {
        return Err(unrecognized_subcommand("jobs", args));
    }
    // Bad input is refused before anything is sent.
    let job = match &command {
        JobsCommand::Create { name, cron, every, at, publish, call, data, missed } => {
            let at = at.as_deref().map(parse_at).transpose()?.unwrap_or(0);
            let (service, endpoint) = match call.as_deref() {
                Some([service, endpoint]) => (service.clone(), endpoint.clone()),
                _ => Default::default(),
            };
            Some(Job {
                name: name.clone(),
                cron: cron.clone().unwrap_or_default(),
                every: every.clone().unwrap_or_default(),
                at,
                topic: publish.clone().unwrap_or_default(),
                service,
                endpoint,
                data: data.clone().unwrap_or_default(),
                missed: missed.clone(),
                ..Job::default()
            })
        }
        _ => None,
    };
    let client = global.connect().await?;
    let mut jobs = JobsClient::new(client.channel.clone());
    let namespace = client.namespace.clone();
    let failed = |status| client.error(status);
    match command {
        JobsCommand::Create { .. } => {
            let request = client.request(CreateRequest { job, namespace });
            jobs.create(request).await.map_err(failed)?;
        }
        JobsCommand::List { output } => {
            let reply = jobs.list(client.request(ListRequest { namespace })).await.map_err(failed)?;
            out(&render_jobs(&reply.into_inner().jobs, output));
        }
        JobsCommand::Run { name, output } => {
            let reply = jobs.run(client.request(RunRequest { namespace, name })).await.map_err(failed)?;
            let run = reply.into_inner().run.unwrap_or_default();
            out(&render_runs(std::slice::from_ref(&run), output));
            if run.outcome != "ok" {
                return Err(CliError::new(format!("The job failed: {}", run.error)));
            }
        }
        JobsCommand::History { name, limit, output } => {
            let request = client.request(HistoryRequest { namespace, name, limit });
            let reply = jobs.history(request).await.map_err(failed)?;
            out(&render_runs(&reply.into_inner().runs, output));
        }
        JobsCommand::Delete { name } => {
            jobs.delete(client.request(DeleteRequest { namespace, name })).await.map_err(failed)?;
        }
        JobsCommand::Unknown(_) => unreachable!("handled before connecting"),
    }
    Ok(())
}

/// `--at`: an RFC 3339 time, or `+DURATION` from now; unix milliseconds.
fn parse_at(text: &str) -> Result<i64> {
    if let Some(after) = text.strip_prefix('+') {
        let after = micro_core::duration::parse(after).map_err(|_| {
            CliError::usage(format!("Invalid --at {text:?}: give a duration after '+', e.g. +10m"))
        })?;
        let now = i64::try_from(micro_core::time::unix_millis()).unwrap_or(i64::MAX);
        return Ok(now.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)));
    }
    micro_core::time::parse_rfc3339(text).map(|secs| secs.saturating_mul(1000)).ok_or_else(|| {
        CliError::usage(format!(
            "Invalid --at {text:?}: give an RFC 3339 time such as 2030-01-02T03:04:05Z, or +10m"
        ))
    })
}

/// Unix milliseconds as RFC 3339, to the second; `-` for none.
fn time(ms: i64) -> String {
    u64::try_from(ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map_or_else(|| "-".to_string(), |ms| micro_core::time::rfc3339(ms / 1000))
}

fn schedule(job: &Job) -> String {
    if !job.cron.is_empty() {
        format!("cron {}", job.cron)
    } else if !job.every.is_empty() {
        format!("every {}", job.every)
    } else {
        format!("at {}", time(job.at))
    }
}

fn action(job: &Job) -> String {
    if job.topic.is_empty() {
        format!("call {} {}", job.service, job.endpoint)
    } else {
        format!("publish {}", job.topic)
    }
}

fn render_jobs(jobs: &[Job], output: Output) -> String {
    match output {
        Output::Json => jobs
            .iter()
            .map(|job| {
                let json = serde_json::json!({
                    "name": job.name,
                    "namespace": job.namespace,
                    "cron": job.cron,
                    "every": job.every,
                    "at": time(job.at),
                    "topic": job.topic,
                    "service": job.service,
                    "endpoint": job.endpoint,
                    "data": job.data,
                    "missed": job.missed,
                    "owner": job.owner,
                    "created": time(job.created),
                    "next": time(job.next),
                });
                format!("{json}\n")
            })
            .collect(),
        Output::Table => {
            let mut rows = vec![["NAME", "SCHEDULE", "ACTION", "MISSED", "NEXT"].map(String::from).to_vec()];
            rows.extend(jobs.iter().map(|job| {
                vec![job.name.clone(), schedule(job), action(job), job.missed.clone(), time(job.next)]
            }));
            crate::table::render(&rows)
        }
    }
}

fn render_runs(runs: &[Run], output: Output) -> String {
    match output {
        Output::Json => runs
            .iter()
            .map(|run| {
                let json = serde_json::json!({
                    "job": run.job,
                    "scheduled": time(run.scheduled),
                    "scheduled_ms": run.scheduled,
                    "started": time(run.started),
                    "finished": time(run.finished),
                    "server": run.server,
                    "trigger": run.trigger,
                    "missed": run.missed,
                    "outcome": run.outcome,
                    "error": run.error,
                });
                format!("{json}\n")
            })
            .collect(),
        Output::Table => {
            let mut rows = vec![
                ["SCHEDULED", "STARTED", "FINISHED", "SERVER", "TRIGGER", "OUTCOME", "ERROR"]
                    .map(String::from)
                    .to_vec(),
            ];
            rows.extend(runs.iter().map(|run| {
                let trigger = if run.missed > 0 {
                    format!("{} ({} missed)", run.trigger, run.missed)
                } else {
                    run.trigger.clone()
                };
                vec![
                    time(run.scheduled),
                    time(run.started),
                    time(run.finished),
                    run.server.clone(),
                    trigger,
                    run.outcome.clone(),
                    run.error.clone(),
                ]
            }));
            crate::table::render(&rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_takes_rfc3339_or_a_duration_from_now() {
        assert_eq!(parse_at("2030-01-02T03:04:05Z").unwrap(), 1_893_553_445_000);
        let soon = parse_at("+10m").unwrap();
        let now = i64::try_from(micro_core::time::unix_millis()).unwrap();
        assert!((now + 590_000..=now + 610_000).contains(&soon));
        for bad in ["tomorrow", "+ten", "2030-01-02"] {
            assert!(parse_at(bad).unwrap_err().message.starts_with("Invalid --at"), "{bad}");
        }
    }

    #[test]
    fn tables_show_schedule_action_and_runs() {
        let job = Job {
            name: "ticks".into(),
            every: "1s".into(),
            topic: "ticks".into(),
            missed: "skip".into(),
            next: 1_893_553_445_000,
            ..Job::default()
        };
        assert_eq!(
            render_jobs(&[job], Output::Table),
            "NAME   SCHEDULE  ACTION         MISSED  NEXT\nticks  every 1s  publish ticks  skip    2030-01-02T03:04:05Z\n"
        );
        let run = Run {
            job: "ticks".into(),
            scheduled: 1_893_553_445_000,
            server: "a1".into(),
            outcome: "failed".into(),
            error: "no such service".into(),
            trigger: "catch-up".into(),
            missed: 3,
            ..Run::default()
        };
        let table = render_runs(std::slice::from_ref(&run), Output::Table);
        assert!(table.contains("catch-up (3 missed)  failed   no such service"), "{table}");
        let json: serde_json::Value = serde_json::from_str(render_runs(&[run], Output::Json).trim()).unwrap();
        assert_eq!(
            (json["outcome"].as_str(), json["scheduled_ms"].as_i64()),
            (Some("failed"), Some(1_893_553_445_000))
        );
    }
}
