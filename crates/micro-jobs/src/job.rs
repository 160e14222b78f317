//! A job as it is stored and validated: its name, schedule, action, missed-firing policy and
//! the account it fires as; and a run's record. Both are stored as JSON (docs/jobs.md).

use serde::{Deserialize, Serialize};

use crate::JobError;
use crate::schedule::{self, Schedule};

/// Longest job name.
pub const MAX_NAME_BYTES: usize = 64;
/// Largest `data` (the event payload or request body), in bytes.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Longest service name or endpoint of a `--call` job.
pub const MAX_TARGET_BYTES: usize = 256;
/// Longest error kept in a run's record; longer ones are cut.
pub const MAX_ERROR_BYTES: usize = 1024;

/// What a firing does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Publishes an event to `topic` in the job's namespace.
    Publish { topic: String },
    /// Calls `endpoint` (`Handler.Method`) of `service` in the job's namespace.
    Call { service: String, endpoint: String },
}

/// What happens to firings missed while every server was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// They are dropped; the schedule goes on from now.
    #[default]
    Skip,
    /// They are made up for with one firing, whatever their number.
    CatchUp,
}

impl Missed {
    pub fn parse(text: &str) -> Result<Self, JobError> {
        match text {
            "" | "skip" => Ok(Self::Skip),
            "catch-up" => Ok(Self::CatchUp),
            other => Err(JobError::Invalid(format!("invalid missed policy {other:?}: use skip or catch-up"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::CatchUp => "catch-up",
        }
    }
}

/// The account a job fires as: the one that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The account's id.
    pub id: String,
    /// The namespace that issued it (`micro` for an administrator acting in another namespace).
    pub issuer: String,
}

/// The schedule as given, kept as text so the stored job reads as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Cron(String),
    /// A period in milliseconds.
    Every(u64),
    /// Unix milliseconds.
    At(u64),
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub namespace: String,
    pub when: When,
    pub action: Action,
    /// JSON text: the event's payload or the call's request body; empty for none.
    #[serde(default)]
    pub data: String,
    #[serde(default)]
    pub missed: Missed,
    pub owner: Owner,
    /// Unix milliseconds.
    pub created: u64,
}

impl Job {
    /// The schedule to compute firings with. A stored job was checked when it was created.
    pub fn schedule(&self) -> Result<Schedule, JobError> {
        Ok(match &self.when {
            When::Cron(expression) => Schedule::Cron(Box::new(schedule::parse_cron(expression)?)),
            When::Every(period) => Schedule::Every { period: (*period).max(1), anchor: self.created },
            When::At(at) => Schedule::At(*at),
        })
    }

    /// Checks every field of a job about to be created; the message names what to fix.
    pub fn validate(&self) -> Result<(), JobError> {
        validate_name(&self.name)?;
        self.schedule()?;
        match &self.action {
            Action::Publish { topic } => micro_events::validate::topic(topic)
                .map_err(|err| JobError::Invalid(format!("invalid topic: {err}")))?,
            Action::Call { service, endpoint } => {
                micro_core::names::validate_name(service)
                    .map_err(|err| JobError::Invalid(err.to_string()))?;
                let well_formed = endpoint.len() <= MAX_TARGET_BYTES
                    && endpoint.split_once('.').is_some_and(|(handler, method)| {
                        let part = |part: &str| {
                            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        };
                        part(handler) && part(method)
                    });
                if !well_formed {
                    return Err(JobError::Invalid(format!(
                        "invalid endpoint {endpoint:?}: name it Handler.Method, e.g. Greeter.Call"
                    )));
                }
            }
        }
        if self.data.len() > MAX_DATA_BYTES {
            return Err(JobError::Invalid(format!(
                "the data is {} bytes, larger than the limit of {MAX_DATA_BYTES} bytes",
                self.data.len()
            )));
        }
        if !self.data.is_empty() {
            let value: serde_json::Value = serde_json::from_str(&self.data)
                .map_err(|err| JobError::Invalid(format!("the data is not valid JSON: {err}")))?;
            if matches!(self.action, Action::Call { .. }) && !value.is_object() {
                return Err(JobError::Invalid("the data of a call must be a JSON object".into()));
            }
        }
        Ok(())
    }
}

/// Checks a job name: 1–[`MAX_NAME_BYTES`] of `[a-z0-9_-]`, starting with a letter or digit
/// (it becomes part of store keys, and `/` separates those).
pub fn validate_name(name: &str) -> Result<(), JobError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(JobError::Invalid(format!(
            "invalid job name {name:?}: use 1-{MAX_NAME_BYTES} lowercase letters, digits, '-' or '_', \
             starting with a letter or digit"
        )))
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Its time on the schedule came.
    Schedule,
    /// It stands for firings missed while every server was down.
    CatchUp,
    /// `micro jobs run`.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::CatchUp => "catch-up",
            Self::Manual => "manual",
        }
    }
}

/// How a run ended, or that it has not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Ok,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

/// One run of a job: its claim while it runs, its record once done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub job: String,
    /// Unix ms: the firing's time on the schedule (when it was asked, for a manual run).
    pub scheduled: u64,
    pub started: u64,
    /// Unix ms; 0 while running.
    #[serde(default)]
    pub finished: u64,
    /// The id of the server that ran it.
    pub server: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub error: String,
    pub trigger: Trigger,
    /// For a catch-up: how many missed firings it stands for.
    #[serde(default)]
    pub missed: u64,
    /// The latest scheduled time this run stands for: its own, or for a catch-up the last
    /// missed firing. Servers resume the schedule after it.
    #[serde(default)]
    pub through: u64,
}

/// `message`, cut to [`MAX_ERROR_BYTES`] on a character boundary.
pub fn cut_error(message: &str) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message.to_string();
    }
    let mut end = MAX_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(action: Action, data: &str) -> Job {
        Job {
            name: "nightly".into(),
            namespace: "foo".into(),
            when: When::Every(1000),
            action,
            data: data.into(),
            missed: Missed::Skip,
            owner: Owner { id: "bob".into(), issuer: "foo".into() },
            created: 0,
        }
    }

    #[test]
    fn jobs_are_validated_with_clear_errors() {
        let publish = || Action::Publish { topic: "ticks".into() };
        let call = |service: &str, endpoint: &str| Action::Call {
            service: service.into(),
            endpoint: endpoint.into(),
        };
        assert!(job(publish(), "").validate().is_ok());
        assert!(job(publish(), "[1,2]").validate().is_ok());
        assert!(job(call("greeter", "Greeter.Call"), r#"{"name":"x"}"#).validate().is_ok());

        let cases = [
            (job(publish(), "{oops"), "not valid JSON"),
            (job(publish(), &format!("\"{}\"", "x".repeat(MAX_DATA_BYTES))), "larger than the limit"),
            (job(call("greeter", "Greeter.Call"), "[1]"), "must be a JSON object"),
            (job(call("greeter", "Call"), ""), "Handler.Method"),
            (job(call("greeter", "Greeter.Call/x"), ""), "Handler.Method"),
            (job(call("../etc", "Greeter.Call"), ""), "invalid service name"),
            (job(Action::Publish { topic: String::new() }, ""), "invalid topic"),
        ];
        for (job, expected) in cases {
            let err = job.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        for bad in ["", "Nightly", "-x", "a/b", "a b", &"a".repeat(MAX_NAME_BYTES + 1)] {
            let mut bad_job = job(publish(), "");
            bad_job.name = bad.to_string();
            assert!(bad_job.validate().unwrap_err().to_string().contains("invalid job name"), "{bad:?}");
        }
        let mut cron = job(publish(), "");
        cron.when = When::Cron("* * *".into());
        assert!(cron.validate().unwrap_err().to_string().contains("five fields"));
        assert_eq!(Missed::parse("").unwrap(), Missed::Skip);
        assert_eq!(Missed::parse("catch-up").unwrap(), Missed::CatchUp);
        assert!(Missed::parse("later").unwrap_err().to_string().contains("skip or catch-up"));
    }

    #[test]
    fn errors_are_cut_on_character_boundaries() {
        assert_eq!(cut_error("short"), "short");
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = cut_error(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES + '…'.len_utf8() && cut.ends_with('…'));
    }
}
