//! [`Jobs`]: job definitions and run records in the store, the claim that makes each firing
//! happen once across servers, and the scheduler loop every server runs.
//!
//! # Storage (database [`DATABASE`])
//!
//! | table | key | value |
//! |---|---|---|
//! | [`JOBS_TABLE`] | `<namespace>/<name>` | the [`Job`] as JSON |
//! | [`RUNS_TABLE`] | `<namespace>/<name>/<scheduled ms, 20 digits>` | the [`Run`] as JSON (a manual run's key ends in `-manual`) |
//!
//! A run record is first written with [`Store::create`] and a TTL of [`LEASE`] (the claim),
//! then replaced without a TTL once the action is done (the record). See docs/jobs.md for the
//! guarantee this gives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use micro_core::task::AbortOnDrop;
use micro_store::{ListOptions, ReadOptions, Record, Store, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::JobError;
use crate::job::{Job, Missed, Outcome, Run, Trigger, cut_error, validate_name};
use crate::schedule::{Due, Schedule};

/// The store database jobs live in: the platform's, reachable by `micro` administrators only.
pub const DATABASE: &str = "micro";
/// Job definitions.
pub const JOBS_TABLE: &str = "jobs";
/// Claims and records of runs.
pub const RUNS_TABLE: &str = "job_runs";

/// Most jobs one namespace may have.
pub const MAX_JOBS_PER_NAMESPACE: usize = 100;
/// Run records kept per job; older ones are removed as new ones are recorded.
pub const HISTORY_KEPT: usize = 100;
/// How long an action may take before its run is recorded as failed.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds a firing: past it, a claim that was never turned into a record (its
/// server died) expires and another server takes the firing over. Longer than
/// [`ACTION_TIMEOUT`], so a live server always records its run before its claim expires.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often the scheduler looks for due firings.
pub const TICK: Duration = Duration::from_millis(200);
/// How often the scheduler re-reads the job definitions (jobs created on another server start
/// firing here within this; those created on this server at once).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// A firing more than this late when a server first sees it due counts as missed (every
/// server was down, or none had the job yet) and follows the job's [`Missed`] policy.
pub const MAX_LATENESS: Duration = Duration::from_secs(10);
/// Most firings one server runs at once; more wait for the next tick.
pub const MAX_RUNNING: usize = 64;

/// Performs a job's action. The server implements it on its own call path (docs/jobs.md).
#[async_trait]
pub trait Actions: Send + Sync {
    /// Performs `job`'s action once, as the job's owner, in the job's namespace, for `run`.
    /// `Err` is the reason recorded in the run's history: clear, without internals.
    async fn perform(&self, job: &Job, run: &Run) -> Result<(), String>;
}

/// The jobs service. Cheap to share behind an `Arc`.
pub struct Jobs {
    store: Arc<dyn Store>,
    actions: Arc<dyn Actions>,
    server: String,
    /// Woken when a job is created or deleted here, so this server's scheduler reloads at once.
    changed: Notify,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("server", &self.server).finish_non_exhaustive()
    }
}

fn job_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn runs_prefix(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}/")
}

fn run_key(namespace: &str, name: &str, scheduled: u64, trigger: Trigger) -> String {
    let suffix = if trigger == Trigger::Manual { "-manual" } else { "" };
    format!("{namespace}/{name}/{scheduled:020}{suffix}")
}

fn store_error(err: StoreError) -> JobError {
    JobError::Store(err)
}

fn decode<T: serde::de::DeserializeOwned>(record: &Record) -> Result<T, JobError> {
    serde_json::from_slice(&record.value)
        .map_err(|err| JobError::Corrupt(format!("stored record {} cannot be read: {err}", record.key)))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("jobs and runs are plain data that always serialise")
}

/// How a claim attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This server holds the firing and must perform and record it.
    Won,
    /// Another server holds it and has not recorded it yet: look again later (it may die).
    Held,
    /// It has been recorded: nothing to do.
    Done,
}

/// One firing to claim: its key time and what it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Firing {
    /// The scheduled time the claim is keyed by.
    pub scheduled: u64,
    pub trigger: Trigger,
    /// For a catch-up, how many missed firings it stands for.
    pub missed: u64,
    /// The latest scheduled time it stands for (its own, or the last missed one).
    pub through: u64,
}

/// The firings to claim for the due window `due` of `schedule` at `now`, by `policy`: each
/// firing at most [`MAX_LATENESS`] late on its own, and the older ones (missed) either
/// skipped or made up for by one catch-up keyed by the first of them — a key every server
/// computes alike from the same last record.
pub(crate) fn plan(schedule: &Schedule, due: Due, now: u64, policy: Missed) -> Vec<Firing> {
    let lateness = u64::try_from(MAX_LATENESS.as_millis()).unwrap_or(u64::MAX);
    let boundary = now.saturating_sub(lateness);
    let mut firings = Vec::new();
    if due.first <= boundary && policy == Missed::CatchUp {
        let on_time = schedule.due(boundary, now).map_or(0, |recent| recent.count);
        let through =
            schedule.due(due.first.saturating_sub(1), boundary).map_or(due.first, |missed| missed.latest);
        firings.push(Firing {
            scheduled: due.first,
            trigger: Trigger::CatchUp,
            missed: due.count.saturating_sub(on_time),
            through,
        });
    }
    let mut next = schedule.next_after(boundary.max(due.first.saturating_sub(1)));
    while let Some(at) = next.filter(|at| *at <= now) {
        firings.push(Firing { scheduled: at, trigger: Trigger::Schedule, missed: 0, through: at });
        next = schedule.next_after(at);
    }
    firings
}

impl Jobs {
    /// Jobs kept in `store`, performed through `actions`, run records naming `server`.
    pub fn new(store: Arc<dyn Store>, actions: Arc<dyn Actions>, server: impl Into<String>) -> Self {
        Self { store, actions, server: server.into(), changed: Notify::new() }
    }

    /// Creates `job` (validated here) unless its name is taken or its namespace is full.
    pub async fn create(&self, job: Job) -> Result<Job, JobError> {
        job.validate()?;
        let existing = self
            .store
            .list(
                DATABASE,
                JOBS_TABLE,
                ListOptions { prefix: format!("{}/", job.namespace), ..Default::default() },
            )
            .await
            .map_err(store_error)?;
        if existing.len() >= MAX_JOBS_PER_NAMESPACE {
            return Err(JobError::Limit(format!(
                "namespace {} already has {MAX_JOBS_PER_NAMESPACE} jobs, the limit: delete one first",
                job.namespace
            )));
        }
        let record = Record::new(job_key(&job.namespace, &job.name), encode(&job));
        if !self.store.create(DATABASE, JOBS_TABLE, record).await.map_err(store_error)? {
            return Err(JobError::Exists(format!(
                "a job named {} already exists in namespace {}: delete it first or choose another name",
                job.name, job.namespace
            )));
        }
        self.changed.notify_one();
        Ok(job)
    }

    /// The job `name` of `namespace`.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Job, JobError> {
        validate_name(name)?;
        let records = self
            .store
            .read(DATABASE, JOBS_TABLE, &job_key(namespace, name), ReadOptions::default())
            .await
            .map_err(|err| match err {
                StoreError::NotFound => JobError::NotFound,
                err => store_error(err),
            })?;
        records.first().map(decode).transpose()?.ok_or(JobError::NotFound)
    }

    /// The jobs of `namespace`, by name.
    pub async fn list(&self, namespace: &str) -> Result<Vec<Job>, JobError> {
        self.read_jobs(&format!("{namespace}/")).await
    }

    async fn read_jobs(&self, prefix: &str) -> Result<Vec<Job>, JobError> {
        let options = ReadOptions { prefix: true, ..ReadOptions::default() };
        let records = self.store.read(DATABASE, JOBS_TABLE, prefix, options).await.map_err(store_error)?;
        records.iter().map(decode).collect()
    }

    /// Deletes the job `name` of `namespace` and its run records.
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<(), JobError> {
        self.get(namespace, name).await?;
        self.store.delete(DATABASE, JOBS_TABLE, &job_key(namespace, name)).await.map_err(store_error)?;
        self.changed.notify_one();
        for key in self.run_keys(namespace, name).await? {
            self.store.delete(DATABASE, RUNS_TABLE, &key).await.map_err(store_error)?;
        }
        Ok(())
    }

    /// The recent runs of the job `name`, newest first, at most `limit` (0 = all kept).
    pub async fn history(&self, namespace: &str, name: &str, limit: usize) -> Result<Vec<Run>, JobError> {
        self.get(namespace, name).await?;
        let options = ReadOptions { prefix: true, ..ReadOptions::default() };
        let records = self
            .store
            .read(DATABASE, RUNS_TABLE, &runs_prefix(namespace, name), options)
            .await
            .map_err(store_error)?;
        let mut runs = records.iter().map(decode::<Run>).collect::<Result<Vec<_>, _>>()?;
        runs.sort_by_key(|run| std::cmp::Reverse((run.scheduled, run.started)));
        if limit > 0 {
            runs.truncate(limit);
        }
        Ok(runs)
    }

    /// Fires the job `name` now, once, on this server, and answers its record.
    pub async fn run_now(&self, namespace: &str, name: &str) -> Result<Run, JobError> {
        let job = self.get(namespace, name).await?;
        let mut scheduled = micro_core::time::unix_millis();
        // Two manual runs in one millisecond get neighbouring keys.
        loop {
            let firing = Firing { scheduled, trigger: Trigger::Manual, missed: 0, through: scheduled };
            match self.claim(&job, firing).await? {
                Claim::Won => return self.perform(&job, firing).await,
                Claim::Held | Claim::Done => scheduled += 1,
            }
        }
    }

    async fn run_keys(&self, namespace: &str, name: &str) -> Result<Vec<String>, JobError> {
        let options = ListOptions { prefix: runs_prefix(namespace, name), ..ListOptions::default() };
        self.store.list(DATABASE, RUNS_TABLE, options).await.map_err(store_error)
    }

    fn started(&self, job: &Job, firing: Firing) -> Run {
        Run {
            job: job.name.clone(),
            scheduled: firing.scheduled,
            started: micro_core::time::unix_millis(),
            finished: 0,
            server: self.server.clone(),
            outcome: Outcome::Running,
            error: String::new(),
            trigger: firing.trigger,
            missed: firing.missed,
            through: firing.through,
        }
    }

    /// Claims `firing` of `job` with the store's create-if-absent: of all servers trying, one
    /// wins; a claim whose server died expires after [`LEASE`] and can be won again.
    pub(crate) async fn claim(&self, job: &Job, firing: Firing) -> Result<Claim, JobError> {
        let key = run_key(&job.namespace, &job.name, firing.scheduled, firing.trigger);
        for _ in 0..2 {
            let claim = Record::new(key.clone(), encode(&self.started(job, firing))).with_expiry(LEASE);
            if self.store.create(DATABASE, RUNS_TABLE, claim).await.map_err(store_error)? {
                return Ok(Claim::Won);
            }
            match self.store.read(DATABASE, RUNS_TABLE, &key, ReadOptions::default()).await {
                Ok(records) => {
                    let run: Run = records.first().map(decode).transpose()?.ok_or(JobError::NotFound)?;
                    return Ok(if run.outcome == Outcome::Running { Claim::Held } else { Claim::Done });
                }
                // The claim expired between the two calls: try to take it once more.
                Err(StoreError::NotFound) => continue,
                Err(err) => return Err(store_error(err)),
            }
        }
        Ok(Claim::Held)
    }

    /// Performs a claimed firing and records how it went.
    async fn perform(&self, job: &Job, firing: Firing) -> Result<Run, JobError> {
        let mut run = self.started(job, firing);
        let outcome = tokio::time::timeout(ACTION_TIMEOUT, self.actions.perform(job, &run)).await;
        match outcome {
            Ok(Ok(())) => run.outcome = Outcome::Ok,
            Ok(Err(message)) => {
                run.outcome = Outcome::Failed;
                run.error = cut_error(&message);
            }
            Err(_) => {
                run.outcome = Outcome::Failed;
                run.error = format!("the action did not finish within {ACTION_TIMEOUT:?}");
            }
        }
        run.finished = micro_core::time::unix_millis();
        let key = run_key(&job.namespace, &job.name, firing.scheduled, firing.trigger);
        self.store.write(DATABASE, RUNS_TABLE, Record::new(key, encode(&run))).await.map_err(store_error)?;
        if let Err(err) = self.prune(job).await {
            tracing::warn!(job = %job.name, namespace = %job.namespace, cause = %err, "cannot prune job history");
        }
        Ok(run)
    }

    /// Keeps the newest [`HISTORY_KEPT`] run records of `job`.
    async fn prune(&self, job: &Job) -> Result<(), JobError> {
        let keys = self.run_keys(&job.namespace, &job.name).await?;
        if keys.len() > HISTORY_KEPT {
            // Keys sort by scheduled time (fixed-width digits).
            for key in &keys[..keys.len() - HISTORY_KEPT] {
                self.store.delete(DATABASE, RUNS_TABLE, key).await.map_err(store_error)?;
            }
        }
        Ok(())
    }

    /// Where the scheduler starts looking for due firings of `job`: after the latest firing
    /// recorded (or claimed), else after its creation.
    async fn cursor(&self, job: &Job) -> Result<u64, JobError> {
        let keys = self.run_keys(&job.namespace, &job.name).await?;
        let Some(key) = keys.iter().rev().find(|key| !key.ends_with("-manual")) else {
            return Ok(job.created);
        };
        match self.store.read(DATABASE, RUNS_TABLE, key, ReadOptions::default()).await {
            Ok(records) => {
                let run: Run = records.first().map(decode).transpose()?.ok_or(JobError::NotFound)?;
                Ok(run.scheduled.max(run.through).max(job.created))
            }
            Err(StoreError::NotFound) => Ok(job.created),
            Err(err) => Err(store_error(err)),
        }
    }

    /// Starts this server's scheduler; it stops when the returned guard is dropped (firings in
    /// flight are abandoned with it, and their claims expire for another server to take over).
    pub fn spawn_scheduler(self: &Arc<Self>) -> AbortOnDrop {
        let jobs = self.clone();
        AbortOnDrop::from(tokio::spawn(async move { jobs.schedule().await }))
    }

    async fn schedule(self: Arc<Self>) {
        let mut state = Scheduler::default();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh_due = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.changed.notified() => refresh_due = tokio::time::Instant::now(),
            }
            if tokio::time::Instant::now() >= refresh_due {
                match self.refresh(&mut state).await {
                    Ok(()) => refresh_due = tokio::time::Instant::now() + REFRESH_INTERVAL,
                    Err(err) => tracing::warn!(cause = %err, "cannot load jobs; retrying next tick"),
                }
            }
            self.dispatch(&mut state);
        }
    }

    /// Re-reads every job definition; a job seen for the first time gets its cursor.
    async fn refresh(&self, state: &mut Scheduler) -> Result<(), JobError> {
        let jobs = self.read_jobs("").await?;
        let mut entries = HashMap::with_capacity(jobs.len());
        for job in jobs {
            let key = job_key(&job.namespace, &job.name);
            let known = state.entries.remove(&key).filter(|entry| entry.job.created == job.created);
            let entry = match known {
                Some(entry) => entry,
                None => {
                    let schedule = match job.schedule() {
                        Ok(schedule) => schedule,
                        Err(err) => {
                            tracing::warn!(job = %job.name, namespace = %job.namespace, cause = %err, "job has an unusable schedule");
                            continue;
                        }
                    };
                    let cursor = self.cursor(&job).await?;
                    Entry { job: Arc::new(job), schedule, cursor }
                }
            };
            entries.insert(key, entry);
        }
        state.entries = entries;
        Ok(())
    }

    /// Collects finished firings, retries held ones, and starts the firings now due.
    fn dispatch(self: &Arc<Self>, state: &mut Scheduler) {
        while let Some(done) = state.running.try_join_next() {
            match done {
                Ok(Some(held)) => state.held.push(held),
                Ok(None) => {}
                Err(err) => tracing::error!(cause = %err, "a job firing task failed"),
            }
        }
        let now = micro_core::time::unix_millis();
        for (job, firing) in std::mem::take(&mut state.held) {
            if state.running.len() >= MAX_RUNNING {
                state.held.push((job, firing));
                continue;
            }
            let key = job_key(&job.namespace, &job.name);
            if state.entries.get(&key).is_some_and(|entry| entry.job.created == job.created) {
                state.running.spawn(self.clone().fire(job, firing));
            }
        }
        for entry in state.entries.values_mut() {
            if state.running.len() >= MAX_RUNNING {
                break;
            }
            let Some(due) = entry.schedule.due(entry.cursor, now) else { continue };
            for firing in plan(&entry.schedule, due, now, entry.job.missed) {
                state.running.spawn(self.clone().fire(entry.job.clone(), firing));
            }
            entry.cursor = due.latest;
        }
    }

    /// Claims and performs one firing; answers it back when another server holds it, to be
    /// looked at again (that server may die before recording it).
    async fn fire(self: Arc<Self>, job: Arc<Job>, firing: Firing) -> Option<(Arc<Job>, Firing)> {
        // The job may have been deleted on another server since this one last read it.
        match self.get(&job.namespace, &job.name).await {
            Ok(current) if current.created == job.created => {}
            Ok(_) | Err(JobError::NotFound) => return None,
            Err(err) => {
                tracing::warn!(job = %job.name, cause = %err, "cannot read job; trying again");
                return Some((job, firing));
            }
        }
        match self.claim(&job, firing).await {
            Ok(Claim::Won) => {
                if let Err(err) = self.perform(&job, firing).await {
                    tracing::warn!(job = %job.name, namespace = %job.namespace, cause = %err, "cannot record job run");
                }
                None
            }
            Ok(Claim::Held) => Some((job, firing)),
            Ok(Claim::Done) => None,
            Err(err) => {
                tracing::warn!(job = %job.name, cause = %err, "cannot claim job firing; trying again");
                Some((job, firing))
            }
        }
    }
}

struct Entry {
    job: Arc<Job>,
    schedule: Schedule,
    /// Firings at or before this time have been handed out (claimed here or elsewhere).
    cursor: u64,
}

#[derive(Default)]
struct Scheduler {
    entries: HashMap<String, Entry>,
    /// Firings another server held when this one tried: tried again each tick until recorded.
    held: Vec<(Arc<Job>, Firing)>,
    running: JoinSet<Option<(Arc<Job>, Firing)>>,
}

#[cfg(test)]
mod tests;
