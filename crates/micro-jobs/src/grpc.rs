//! The `jobs.Jobs` gRPC service over [`Jobs`]: the namespace is the request's (when set) or the
//! caller's, checked with [`Context::authorize`]; a job created here fires as the calling
//! account. Errors become a [`Status`] in one place, `From<JobError> for Status`.

use std::sync::Arc;

use micro_core::Context;
use micro_proto::jobs::jobs_server::{self, JobsServer};
use micro_proto::jobs::{
    CreateRequest, CreateResponse, DeleteRequest, DeleteResponse, HistoryRequest, HistoryResponse,
    Job as WireJob, ListRequest, ListResponse, Run as WireRun, RunRequest, RunResponse,
};
use micro_store::StoreError;
use tonic::{Request, Response, Status};

use crate::JobError;
use crate::job::{Action, Job, Missed, Owner, Run, When};
use crate::schedule;
use crate::service::Jobs;

/// The message of every not-found answer (the CLI prints it).
pub const NOT_FOUND: &str = "Not found";

/// The gRPC face of [`Jobs`].
#[derive(Debug, Clone)]
pub struct JobsService {
    jobs: Arc<Jobs>,
}

/// The ready-to-mount tonic server for `jobs`.
pub fn server(jobs: Arc<Jobs>) -> JobsServer<JobsService> {
    JobsServer::new(JobsService { jobs })
}

impl From<JobError> for Status {
    fn from(err: JobError) -> Self {
        match err {
            JobError::NotFound => Status::not_found(NOT_FOUND),
            JobError::Invalid(message) => Status::invalid_argument(message),
            JobError::Exists(message) => Status::already_exists(message),
            JobError::Limit(message) => Status::resource_exhausted(message),
            JobError::Corrupt(message) => {
                tracing::error!(cause = %message, "job record corrupt");
                Status::internal("a stored job cannot be read; see the server log")
            }
            JobError::Store(StoreError::Unavailable(cause)) => {
                tracing::warn!(%cause, "jobs store unavailable");
                Status::unavailable("the jobs store is unavailable; try again")
            }
            JobError::Store(err) => {
                tracing::error!(cause = %err, "jobs store failed");
                Status::internal("the jobs store failed; see the server log")
            }
        }
    }
}

/// The namespace a request acts in and its context: the one it names, else its context's; the
/// caller must be authorised for it.
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn namespace<T>(request: &Request<T>, requested: &str) -> Result<(String, Context), Status> {
    let context = request.extensions().get::<Context>().cloned().unwrap_or_default();
    let namespace = if requested.is_empty() { context.namespace.clone() } else { requested.to_string() };
    context.authorize(&namespace).map_err(Status::from)?;
    micro_core::validate_namespace(&namespace).map_err(|err| Status::invalid_argument(err.to_string()))?;
    Ok((namespace, context))
}

/// The domain job a `Create` asks for, in `namespace`, owned by `owner`, created `now`.
pub fn job_from_wire(wire: WireJob, namespace: &str, owner: Owner, now: u64) -> Result<Job, JobError> {
    let when = match (wire.cron.is_empty(), wire.every.is_empty(), wire.at == 0) {
        (false, true, true) => When::Cron(wire.cron),
        (true, false, true) => {
            let period = micro_core::duration::parse(&wire.every).map_err(|_| {
                JobError::Invalid(format!(
                    "invalid period {:?}: use a duration such as 30s, 5m or 1h30m",
                    wire.every
                ))
            })?;
            When::Every(schedule::check_period(period)?)
        }
        (true, true, false) => {
            let at = u64::try_from(wire.at).unwrap_or(0);
            if at <= now {
                return Err(JobError::Invalid("the time to run at is in the past".into()));
            }
            When::At(at)
        }
        _ => return Err(JobError::Invalid("give exactly one schedule: cron, every or at".into())),
    };
    let action = match (wire.topic.is_empty(), wire.service.is_empty() && wire.endpoint.is_empty()) {
        (false, true) => Action::Publish { topic: wire.topic },
        (true, false) => Action::Call { service: wire.service, endpoint: wire.endpoint },
        _ => {
            return Err(JobError::Invalid(
                "give exactly one action: a topic to publish to, or a service and endpoint to call".into(),
            ));
        }
    };
    let job = Job {
        name: wire.name,
        namespace: namespace.to_string(),
        when,
        action,
        data: wire.data,
        missed: Missed::parse(&wire.missed)?,
        owner,
        created: now,
    };
    job.validate()?;
    Ok(job)
}

fn millis(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The wire form of `job`, with its next firing after `now`.
pub fn job_to_wire(job: &Job, now: u64) -> WireJob {
    let mut wire = WireJob {
        name: job.name.clone(),
        namespace: job.namespace.clone(),
        data: job.data.clone(),
        missed: job.missed.as_str().to_string(),
        owner: job.owner.id.clone(),
        created: millis(job.created),
        next: job.schedule().ok().and_then(|schedule| schedule.next_after(now)).map_or(0, millis),
        ..WireJob::default()
    };
    match &job.when {
        When::Cron(expression) => wire.cron = expression.clone(),
        When::Every(period) => wire.every = period_text(*period),
        When::At(at) => wire.at = millis(*at),
    }
    match &job.action {
        Action::Publish { topic } => wire.topic = topic.clone(),
        Action::Call { service, endpoint } => {
            wire.service = service.clone();
            wire.endpoint = endpoint.clone();
        }
    }
    wire
}

/// A period as `micro jobs create --every` takes it: `1h30m`, `45s`, `1500ms`.
fn period_text(ms: u64) -> String {
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (hours, minutes, seconds) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut text = String::new();
    for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s")] {
        if value > 0 {
            text.push_str(&format!("{value}{unit}"));
        }
    }
    if text.is_empty() { "0s".to_string() } else { text }
}

fn run_to_wire(run: &Run) -> WireRun {
    WireRun {
        job: run.job.clone(),
        scheduled: millis(run.scheduled),
        started: millis(run.started),
        finished: millis(run.finished),
        server: run.server.clone(),
        outcome: run.outcome.as_str().to_string(),
        error: run.error.clone(),
        trigger: run.trigger.as_str().to_string(),
        missed: run.missed,
    }
}

#[tonic::async_trait]
impl jobs_server::Jobs for JobsService {
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let (namespace, context) = namespace(&request, &request.get_ref().namespace)?;
        let account = context.account.ok_or_else(|| Status::unauthenticated("An account is required"))?;
        let owner = Owner { id: account.id, issuer: account.issuer };
        let wire = request.into_inner().job.ok_or_else(|| Status::invalid_argument("missing job"))?;
        let now = micro_core::time::unix_millis();
        let job = self.jobs.create(job_from_wire(wire, &namespace, owner, now)?).await?;
        Ok(Response::new(CreateResponse { job: Some(job_to_wire(&job, now)) }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let (namespace, _) = namespace(&request, &request.get_ref().namespace)?;
        let now = micro_core::time::unix_millis();
        let jobs = self.jobs.list(&namespace).await?;
        Ok(Response::new(ListResponse { jobs: jobs.iter().map(|job| job_to_wire(job, now)).collect() }))
    }

    async fn run(&self, request: Request<RunRequest>) -> Result<Response<RunResponse>, Status> {
        let (namespace, _) = namespace(&request, &request.get_ref().namespace)?;
        let run = self.jobs.run_now(&namespace, &request.get_ref().name).await?;
        Ok(Response::new(RunResponse { run: Some(run_to_wire(&run)) }))
    }

    async fn history(&self, request: Request<HistoryRequest>) -> Result<Response<HistoryResponse>, Status> {
        let (namespace, _) = namespace(&request, &request.get_ref().namespace)?;
        let HistoryRequest { name, limit, .. } = request.into_inner();
        let runs = self.jobs.history(&namespace, &name, limit as usize).await?;
        Ok(Response::new(HistoryResponse { runs: runs.iter().map(run_to_wire).collect() }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let (namespace, _) = namespace(&request, &request.get_ref().namespace)?;
        self.jobs.delete(&namespace, &request.get_ref().name).await?;
        Ok(Response::new(DeleteResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(edit: impl FnOnce(&mut WireJob)) -> WireJob {
        let mut job =
            WireJob { name: "ticks".into(), every: "1m30s".into(), topic: "t".into(), ..WireJob::default() };
        edit(&mut job);
        job
    }

    fn owner() -> Owner {
        Owner { id: "bob".into(), issuer: "foo".into() }
    }

    #[test]
    fn wire_jobs_need_one_schedule_and_one_action() {
        let now = 1_767_225_600_000;
        let job = job_from_wire(wire(|_| {}), "foo", owner(), now).unwrap();
        assert_eq!((job.when.clone(), job.created), (When::Every(90_000), now));
        assert_eq!(job_to_wire(&job, now).every, "1m30s", "periods read back as written");
        assert_eq!(job_to_wire(&job, now).next, i64::try_from(now + 90_000).unwrap());
        assert_eq!(period_text(3_600_000), "1h");
        assert_eq!(period_text(1_500), "1500ms");

        let cases = [
            (wire(|job| job.cron = "* * * * *".into()), "exactly one schedule"),
            (wire(|job| job.every.clear()), "exactly one schedule"),
            (wire(|job| job.every = "soon".into()), "invalid period"),
            (wire(|job| job.every = "0s".into()), "out of range"),
            (wire(|job| job.service = "greeter".into()), "exactly one action"),
            (wire(|job| job.topic.clear()), "exactly one action"),
            (wire(|job| job.missed = "sometimes".into()), "skip or catch-up"),
            (
                wire(|job| {
                    job.every.clear();
                    job.at = 1;
                }),
                "in the past",
            ),
        ];
        for (wire, expected) in cases {
            let err = job_from_wire(wire, "foo", owner(), now).unwrap_err();
            assert!(err.to_string().contains(expected), "{err} should contain {expected}");
            assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
        }
        assert_eq!(Status::from(JobError::NotFound).message(), NOT_FOUND);
        assert_eq!(Status::from(JobError::Exists("x".into())).code(), tonic::Code::AlreadyExists);
        let store = Status::from(JobError::Store(StoreError::Internal("/srv/x corrupt".into())));
        assert!(!store.message().contains("/srv"), "no internals on the wire");
    }
}
