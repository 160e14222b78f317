//! Scheduled jobs (docs/jobs.md): a job publishes an event or calls an endpoint on a schedule
//! (a 5-field cron expression, a fixed period, or one time), as the account that created it, in
//! its namespace; each firing happens **once across all servers** sharing the store.
//!
//! Layout:
//!
//! - [`schedule`]: pure schedule arithmetic — parsing cron expressions and periods, the next
//!   firing, the firings due in a window;
//! - [`job`]: the stored [`Job`] and [`Run`], their validation and limits;
//! - [`service`]: [`Jobs`] — definitions and run records in the store, the claim (the store's
//!   create-if-absent with a lease) and the scheduler loop each server runs. The action itself
//!   goes through the [`Actions`] the server provides, on its own call path;
//! - [`grpc`]: the `jobs.Jobs` gRPC service and the one place [`JobError`] becomes a
//!   [`tonic::Status`].

pub mod grpc;
pub mod job;
pub mod schedule;
pub mod service;

pub use job::{Action, Job, Missed, Outcome, Owner, Run, Trigger, When};
pub use service::{Actions, Jobs};

/// Why a jobs operation failed. Messages are lowercase and name what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// No such job.
    #[error("not found")]
    NotFound,
    /// The request broke a rule or limit; the message says which.
    #[error("{0}")]
    Invalid(String),
    /// A job of that name exists.
    #[error("{0}")]
    Exists(String),
    /// A namespace limit is reached.
    #[error("{0}")]
    Limit(String),
    /// A stored record cannot be read.
    #[error("{0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(micro_store::StoreError),
}
