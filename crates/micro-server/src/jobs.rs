//! How a scheduled job's firing acts (docs/jobs.md): as the account that created the job, in
//! the job's namespace, through the gateway's own call path — the same admission (the
//! namespace's rules), JSON mapping, node choice and forwarded identity as an HTTP call of that
//! account ([`crate::gateway`]). A `--publish` job calls `events.Stream/Publish` that way, a
//! `--call` job the endpoint it names. The account is looked up at every firing: a deleted
//! account's job fails with a clear error in its history, never acting with anyone else's rights.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use base64::Engine as _;
use http::{Method, Request, header};
use micro_auth::Auth;
use micro_jobs::{Action, Job, Run};

use crate::gateway::Gateway;
use crate::gateway::resolve::Route;

/// How long the token a firing acts with is valid: past the action's own timeout.
pub const FIRING_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Metadata of every event a `--publish` job publishes: the job's name, the firing's scheduled
/// time (unix ms) and why it ran (`schedule`, `catch-up`, `manual`).
pub const JOB_METADATA: &str = "micro-job";
pub const SCHEDULED_METADATA: &str = "micro-job-scheduled";
pub const TRIGGER_METADATA: &str = "micro-job-trigger";

/// Performs firings through `gateway`, as accounts of `auth`.
pub struct Executor {
    gateway: Gateway,
    auth: Arc<Auth>,
}

impl Executor {
    pub fn new(gateway: Gateway, auth: Arc<Auth>) -> Self {
        Self { gateway, auth }
    }
}

/// The route and JSON body of `job`'s action for `run`.
fn request(job: &Job, run: &Run) -> (Route, Vec<u8>) {
    match &job.action {
        Action::Publish { topic } => {
            let payload = if job.data.is_empty() {
                serde_json::json!({ "job": job.name, "scheduled": run.scheduled }).to_string()
            } else {
                job.data.clone()
            };
            let body = serde_json::json!({
                "topic": topic,
                "payload": base64::engine::general_purpose::STANDARD.encode(payload),
                "metadata": {
                    JOB_METADATA: job.name,
                    SCHEDULED_METADATA: run.scheduled.to_string(),
                    TRIGGER_METADATA: run.trigger.as_str(),
                },
            });
            let route =
                Route { service: "events".into(), handler: "Stream".into(), method: "Publish".into() };
            (route, body.to_string().into_bytes())
        }
        Action::Call { service, endpoint } => {
            let (handler, method) = endpoint.split_once('.').unwrap_or((endpoint, ""));
            let route = Route { service: service.clone(), handler: handler.into(), method: method.into() };
            let body = if job.data.is_empty() { b"{}".to_vec() } else { job.data.clone().into_bytes() };
            (route, body)
        }
    }
}

#[async_trait]
impl micro_jobs::Actions for Executor {
    async fn perform(&self, job: &Job, run: &Run) -> Result<(), String> {
        let owner = &job.owner;
        let account = self
            .auth
            .account(&owner.issuer, &owner.id)
            .await
            .map_err(|err| format!("cannot look up the job's account {}: {err}", owner.id))?
            .ok_or_else(|| {
                format!(
                    "the account {} of namespace {} that created this job no longer exists: \
                     create the job again as an existing account",
                    owner.id, owner.issuer
                )
            })?;
        let token = self.auth.mint(&account, FIRING_TOKEN_LIFETIME).map_err(|err| {
            tracing::error!(cause = %err, "cannot sign a job's token");
            "the server cannot sign a token for the job's account".to_string()
        })?;
        let (route, body) = request(job, run);
        let path = format!("/{}/{}/{}", route.service, route.handler, route.method);
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(micro_core::NAMESPACE_HEADER, &job.namespace)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|err| format!("cannot build the request: {err}"))?;
        match self.gateway.serve(Some(route), request).await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the call answered HTTP {}", response.status())),
            Err(error) => Err(format!("{} ({})", error.detail, error.status)),
        }
    }
}
