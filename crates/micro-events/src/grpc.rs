//! The `events.Stream` and `events.Store` gRPC services (docs/compatibility.md §3.5) over any [`Events`].
//!
//! - **Namespace.** Every call acts in the request [`Context`]'s namespace (inserted by the
//!   server's interceptor), after [`Context::authorize`]: an account is required, and an
//!   account issued by `foo` sees only `foo`'s topics. (The original allowed only `micro`
//!   accounts and had one global topic space; topics here are per namespace.)
//! - **Consume.** `sequence` > 0 starts at that sequence, else `offset` > 0 (unix seconds) at
//!   that time, else at the newest event. `retry_limit` < 0 = unlimited. With `auto_ack`
//!   false, `ack_wait` (nanoseconds) must be positive and the client settles each event with
//!   `Ack`/`Nack` naming its id, topic and group (empty group = the caller's private
//!   consumers of the topic). `Nack` with `permanent` moves the event to the group's dead
//!   letters at once; `reason` is kept as the dead letter's error.
//! - **Dead letters.** `DeadLetters`, `Release` and `DropDeadLetters` act on a named group of
//!   the caller's namespace, with the same check as every other call; a release or drop names
//!   ids or sets `all` (not both).
//! - **Replay** moves a named group of the caller's namespace back: `from_sequence` or
//!   `from_time_ms` (exactly one), optionally `to_sequence` or `to_time_ms` (at most one).
//! - **Topics** lists the caller's namespace's topics only.
//! - **Errors** become [`Status`] in one place, `From<EventsError> for Status`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use micro_core::Context;
use micro_proto::events::store_server::{self, StoreServer};
use micro_proto::events::stream_server::{self, StreamServer};
use micro_proto::events::{
    AckRequest, AckResponse, ConsumeRequest, DeadLetter as WireDeadLetter, DeadLettersRequest,
    DeadLettersResponse, DropDeadLettersRequest, DropDeadLettersResponse, Event as WireEvent, NackRequest,
    NackResponse, PublishRequest, PublishResponse, ReadRequest, ReadResponse, ReleaseRequest,
    ReleaseResponse, ReplayRequest, ReplayResponse, Topic as WireTopic, TopicsRequest, TopicsResponse,
    WriteRequest, WriteResponse,
};
use tonic::{Request, Response, Status};

use crate::{
    ConsumeOptions, DeadLetter, Event, Events, EventsError, Nack, Position, PublishOptions, Replay,
    Selection, Start,
};

/// The gRPC face of an [`Events`] backend, serving both `events.Stream` and `events.Store`.
#[derive(Clone)]
pub struct EventsService {
    events: Arc<dyn Events>,
}

impl std::fmt::Debug for EventsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsService").field("events", &self.events.summary()).finish()
    }
}

impl EventsService {
    /// Serves `events` over gRPC.
    pub fn new(events: Arc<dyn Events>) -> Self {
        Self { events }
    }
}

/// The ready-to-mount `events.Stream` server for `events`.
pub fn stream_server(events: Arc<dyn Events>) -> StreamServer<EventsService> {
    StreamServer::new(EventsService::new(events))
}

/// The ready-to-mount `events.Store` server for `events`.
pub fn store_server(events: Arc<dyn Events>) -> StoreServer<EventsService> {
    StoreServer::new(EventsService::new(events))
}

impl From<EventsError> for Status {
    fn from(err: EventsError) -> Self {
        match err {
            EventsError::NotFound => Status::not_found("not found"),
            EventsError::Invalid(message) => Status::invalid_argument(message),
            EventsError::Unavailable(cause) => {
                tracing::error!(%cause, "events unavailable");
                Status::unavailable("events are unavailable; see the server log")
            }
            EventsError::Internal(cause) => {
                tracing::error!(%cause, "events failed");
                Status::internal("events failed; see the server log")
            }
        }
    }
}

/// The namespace a request acts in, once the caller is authorised for it.
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn namespace<T>(request: &Request<T>) -> Result<String, Status> {
    let context = request.extensions().get::<Context>().cloned().unwrap_or_default();
    context.authorize(&context.namespace).map_err(Status::from)?;
    Ok(context.namespace)
}

fn to_wire(event: Event) -> WireEvent {
    let timestamp_ms = i64::try_from(event.timestamp_ms).unwrap_or(i64::MAX);
    WireEvent {
        id: event.id,
        topic: event.topic,
        metadata: event.metadata.into_iter().collect(),
        payload: event.payload,
        timestamp: timestamp_ms / 1000,
        sequence: event.sequence,
        timestamp_ms,
    }
}

fn dead_to_wire(dead: DeadLetter) -> WireDeadLetter {
    WireDeadLetter {
        event: Some(to_wire(dead.event)),
        attempts: dead.attempts,
        error: dead.error,
        first_delivery_ms: i64::try_from(dead.first_delivery_ms).unwrap_or(i64::MAX),
        last_delivery_ms: i64::try_from(dead.last_delivery_ms).unwrap_or(i64::MAX),
    }
}

/// The dead letters a release or drop names: ids, or all, not both.
fn selection(ids: Vec<String>, all: bool) -> Result<Selection, EventsError> {
    match (all, ids.is_empty()) {
        (true, false) => Err(EventsError::Invalid("give event ids or all, not both".into())),
        (true, true) => Ok(Selection::All),
        (false, _) => Ok(Selection::Ids(ids)),
    }
}

/// One end of a replay: a sequence, else a time; `None` when neither is given, an error when
/// both are or the time is negative.
fn position(which: &str, sequence: u64, time_ms: i64) -> Result<Option<Position>, EventsError> {
    match (sequence, time_ms) {
        (0, 0) => Ok(None),
        (0, ms) => u64::try_from(ms)
            .map(|ms| Some(Position::Time(ms)))
            .map_err(|_| EventsError::Invalid(format!("{which}_time_ms is negative"))),
        (sequence, 0) => Ok(Some(Position::Sequence(sequence))),
        _ => Err(EventsError::Invalid(format!("give {which}_sequence or {which}_time_ms, not both"))),
    }
}

/// The replay a request asks for.
fn replay_of(request: &ReplayRequest) -> Result<Replay, EventsError> {
    let from = position("from", request.from_sequence, request.from_time_ms)?
        .ok_or_else(|| EventsError::Invalid("missing from: give from_sequence or from_time_ms".into()))?;
    Ok(Replay { from, to: position("to", request.to_sequence, request.to_time_ms)? })
}

/// The consume options a request asks for.
fn consume_options(request: &ConsumeRequest) -> ConsumeOptions {
    let start = if request.sequence > 0 {
        Start::Sequence(request.sequence)
    } else if request.offset > 0 {
        Start::Time(request.offset.unsigned_abs().saturating_mul(1000))
    } else {
        Start::Newest
    };
    ConsumeOptions {
        group: (!request.group.is_empty()).then(|| request.group.clone()),
        start,
        auto_ack: request.auto_ack,
        ack_wait: Duration::from_nanos(request.ack_wait.max(0).unsigned_abs()),
        retry_limit: u32::try_from(request.retry_limit).ok().or(if request.retry_limit < 0 {
            None
        } else {
            Some(u32::MAX)
        }),
    }
}

type ConsumeStream = Pin<Box<dyn Stream<Item = Result<WireEvent, Status>> + Send>>;

#[tonic::async_trait]
impl stream_server::Stream for EventsService {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<PublishResponse>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        let timestamp_ms =
            (request.timestamp > 0).then(|| request.timestamp.unsigned_abs().saturating_mul(1000));
        let options = PublishOptions { metadata: request.metadata.into_iter().collect(), timestamp_ms };
        let published = self.events.publish(&namespace, &request.topic, request.payload, options).await?;
        Ok(Response::new(PublishResponse { id: published.id, sequence: published.sequence }))
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        let consumer = self.events.consume(&namespace, &request.topic, consume_options(&request)).await?;
        let stream = consumer.map(|delivery| delivery.map(|d| to_wire(d.event)).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        if request.success {
            self.events.ack(&namespace, &request.topic, &request.group, &request.id).await?;
        } else {
            self.events.nack(&namespace, &request.topic, &request.group, &request.id).await?;
        }
        Ok(Response::new(AckResponse {}))
    }

    async fn nack(&self, request: Request<NackRequest>) -> Result<Response<NackResponse>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        let nack = Nack { permanent: request.permanent, reason: request.reason };
        self.events.nack_with(&namespace, &request.topic, &request.group, &request.id, nack).await?;
        Ok(Response::new(NackResponse {}))
    }

    async fn dead_letters(
        &self,
        request: Request<DeadLettersRequest>,
    ) -> Result<Response<DeadLettersResponse>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        let dead = self.events.dead_letters(&namespace, &request.topic, &request.group).await?;
        Ok(Response::new(DeadLettersResponse { dead_letters: dead.into_iter().map(dead_to_wire).collect() }))
    }

    async fn release(&self, request: Request<ReleaseRequest>) -> Result<Response<ReleaseResponse>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        let which = selection(request.ids, request.all)?;
        let ids = self.events.release(&namespace, &request.topic, &request.group, &which).await?;
        Ok(Response::new(ReleaseResponse { ids }))
    }

    async fn drop_dead_letters(
        &self,
        request: Request<DropDeadLettersRequest>,
    ) -> Result<Response<DropDeadLettersResponse>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        let which = selection(request.ids, request.all)?;
        let ids = self.events.drop_dead_letters(&namespace, &request.topic, &request.group, &which).await?;
        Ok(Response::new(DropDeadLettersResponse { ids }))
    }

    async fn replay(&self, request: Request<ReplayRequest>) -> Result<Response<ReplayResponse>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        let replay = replay_of(&request)?;
        let replayed = self.events.replay(&namespace, &request.topic, &request.group, &replay).await?;
        Ok(Response::new(ReplayResponse {
            first_sequence: replayed.first_sequence,
            last_sequence: replayed.last_sequence,
            events: replayed.events,
        }))
    }

    async fn topics(&self, request: Request<TopicsRequest>) -> Result<Response<TopicsResponse>, Status> {
        let namespace = namespace(&request)?;
        let topics = self.events.topics(&namespace).await?;
        let topics = topics
            .into_iter()
            .map(|topic| WireTopic {
                name: topic.name,
                events: topic.events,
                last_sequence: topic.last_sequence,
                last_timestamp_ms: i64::try_from(topic.last_timestamp_ms).unwrap_or(i64::MAX),
            })
            .collect();
        Ok(Response::new(TopicsResponse { topics }))
    }
}

#[tonic::async_trait]
impl store_server::Store for EventsService {
    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let namespace = namespace(&request)?;
        let request = request.into_inner();
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        let events = self.events.read(&namespace, &request.topic, limit, request.offset).await?;
        Ok(Response::new(ReadResponse { events: events.into_iter().map(to_wire).collect() }))
    }

    async fn write(&self, _request: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        Err(Status::unimplemented("Writing to the store directly is not supported"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryEvents;
    use micro_proto::events::store_server::Store as _;
    use micro_proto::events::stream_server::Stream as _;

    fn request<T>(namespace: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.extensions_mut().insert(Context::member(namespace));
        request
    }

    #[tokio::test]
    async fn publish_consume_ack_read_and_isolation() {
        let service = EventsService::new(Arc::new(MemoryEvents::default()));

        let anonymous =
            service.publish(Request::new(PublishRequest { topic: "t".into(), ..Default::default() })).await;
        assert_eq!(anonymous.unwrap_err().code(), tonic::Code::Unauthenticated);
        let missing = service.publish(request("micro", PublishRequest::default())).await.unwrap_err();
        assert_eq!((missing.code(), missing.message()), (tonic::Code::InvalidArgument, "missing topic"));

        let consume = ConsumeRequest {
            topic: "orders".into(),
            group: "g".into(),
            sequence: 1,
            ack_wait: 50_000_000,
            retry_limit: -1,
            ..Default::default()
        };
        let bad = ConsumeRequest { ack_wait: 0, ..consume.clone() };
        assert_eq!(
            service.consume(request("micro", bad)).await.err().unwrap().code(),
            tonic::Code::InvalidArgument
        );

        for n in 0..3u8 {
            let published = service
                .publish(request(
                    "micro",
                    PublishRequest { topic: "orders".into(), payload: vec![n], ..Default::default() },
                ))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(published.sequence, u64::from(n) + 1);
        }
        service
            .publish(request(
                "foo",
                PublishRequest { topic: "orders".into(), payload: vec![9], ..Default::default() },
            ))
            .await
            .unwrap();

        let mut stream = service.consume(request("micro", consume)).await.unwrap().into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!((first.sequence, first.payload.clone()), (1, vec![0]));
        assert!(first.timestamp_ms > 0 && first.timestamp == first.timestamp_ms / 1000);
        // Nack: the same event comes back at once, ahead of event 2.
        let nack = NackRequest {
            id: first.id.clone(),
            topic: "orders".into(),
            group: "g".into(),
            ..Default::default()
        };
        service.nack(request("micro", nack)).await.unwrap();
        let again = stream.next().await.unwrap().unwrap();
        assert_eq!(again.id, first.id);
        let ack =
            AckRequest { id: first.id.clone(), success: true, topic: "orders".into(), group: "g".into() };
        service.ack(request("micro", ack.clone())).await.unwrap();
        let twice = service.ack(request("micro", ack)).await.unwrap_err();
        assert_eq!(twice.code(), tonic::Code::NotFound);
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(second.sequence, 2);

        let read = service
            .read(request("micro", ReadRequest { topic: "orders".into(), limit: 2, offset: 1 }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [2, 3]);
        let in_foo = service
            .read(request("foo", ReadRequest { topic: "orders".into(), ..Default::default() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(in_foo.events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(), [vec![9]]);

        let write = service.write(request("micro", WriteRequest::default())).await.unwrap_err();
        assert_eq!(write.code(), tonic::Code::Unimplemented);

        // A permanent nack with a reason dead-letters event 2 at once; only micro sees it.
        let nack = NackRequest {
            id: second.id.clone(),
            topic: "orders".into(),
            group: "g".into(),
            permanent: true,
            reason: "bad order".into(),
        };
        service.nack(request("micro", nack)).await.unwrap();
        let list = DeadLettersRequest { topic: "orders".into(), group: "g".into() };
        let dead =
            service.dead_letters(request("micro", list.clone())).await.unwrap().into_inner().dead_letters;
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].event.as_ref().unwrap().id.as_str(), dead[0].attempts, dead[0].error.as_str()),
            (second.id.as_str(), 1, "bad order")
        );
        assert!(
            service
                .dead_letters(request("foo", list.clone()))
                .await
                .unwrap()
                .into_inner()
                .dead_letters
                .is_empty()
        );
        let anonymous = service.dead_letters(Request::new(list.clone())).await.unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        let both = ReleaseRequest {
            topic: "orders".into(),
            group: "g".into(),
            ids: vec![second.id.clone()],
            all: true,
        };
        assert_eq!(
            service.release(request("micro", both)).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let unknown = DropDeadLettersRequest {
            topic: "orders".into(),
            group: "g".into(),
            ids: vec!["nope".into()],
            all: false,
        };
        let unknown = service.drop_dead_letters(request("micro", unknown)).await.unwrap_err();
        assert_eq!(
            (unknown.code(), unknown.message()),
            (tonic::Code::InvalidArgument, "not dead letters of group g: nope")
        );
        let in_foo = ReleaseRequest { topic: "orders".into(), group: "g".into(), ids: Vec::new(), all: true };
        assert!(
            service.release(request("foo", in_foo)).await.unwrap().into_inner().ids.is_empty(),
            "foo cannot release micro's"
        );
        let all = ReleaseRequest { topic: "orders".into(), group: "g".into(), ids: Vec::new(), all: true };
        assert_eq!(
            service.release(request("micro", all)).await.unwrap().into_inner().ids,
            std::slice::from_ref(&second.id)
        );
        let again = stream.next().await.unwrap().unwrap();
        assert_eq!((again.id, again.sequence), (second.id, 2), "released back to the group");
        assert!(
            service.dead_letters(request("micro", list)).await.unwrap().into_inner().dead_letters.is_empty()
        );
    }

    #[tokio::test]
    async fn replay_and_topics() {
        let service = EventsService::new(Arc::new(MemoryEvents::default()));
        for n in 0..3u8 {
            let publish = PublishRequest { topic: "orders".into(), payload: vec![n], ..Default::default() };
            service.publish(request("micro", publish)).await.unwrap();
        }
        let consume = ConsumeRequest {
            topic: "orders".into(),
            group: "g".into(),
            sequence: 1,
            auto_ack: true,
            ..Default::default()
        };
        let mut stream = service.consume(request("micro", consume)).await.unwrap().into_inner();
        for sequence in 1..=3 {
            assert_eq!(stream.next().await.unwrap().unwrap().sequence, sequence);
        }
        let replay = ReplayRequest {
            topic: "orders".into(),
            group: "g".into(),
            from_sequence: 2,
            ..Default::default()
        };
        let replayed = service.replay(request("micro", replay.clone())).await.unwrap().into_inner();
        assert_eq!((replayed.first_sequence, replayed.last_sequence, replayed.events), (2, 3, 2));
        assert_eq!(stream.next().await.unwrap().unwrap().sequence, 2, "replayed");
        for (bad, expected) in [
            (
                ReplayRequest { from_time_ms: 1, ..replay.clone() },
                "give from_sequence or from_time_ms, not both",
            ),
            (
                ReplayRequest { from_sequence: 0, ..replay.clone() },
                "missing from: give from_sequence or from_time_ms",
            ),
            (ReplayRequest { to_time_ms: -1, ..replay.clone() }, "to_time_ms is negative"),
        ] {
            let status = service.replay(request("micro", bad)).await.unwrap_err();
            assert_eq!((status.code(), status.message()), (tonic::Code::InvalidArgument, expected));
        }
        let in_foo = service.replay(request("foo", replay.clone())).await.unwrap_err();
        assert_eq!(
            (in_foo.code(), in_foo.message()),
            (tonic::Code::InvalidArgument, "topic orders has no events to replay"),
            "foo cannot replay micro's group"
        );
        assert_eq!(
            service.replay(Request::new(replay)).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );

        let topics = service.topics(request("micro", TopicsRequest {})).await.unwrap().into_inner().topics;
        assert_eq!(
            topics.iter().map(|t| (t.name.as_str(), t.events, t.last_sequence)).collect::<Vec<_>>(),
            [("orders", 3, 3)]
        );
        assert!(topics[0].last_timestamp_ms > 0);
        assert!(
            service.topics(request("foo", TopicsRequest {})).await.unwrap().into_inner().topics.is_empty()
        );
        let anonymous = service.topics(Request::new(TopicsRequest {})).await.unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    }
}
