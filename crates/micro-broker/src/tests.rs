use std::sync::Arc;

use micro_core::Context;
use micro_proto::broker::broker_server::Broker as _;
use micro_proto::broker::{Message as WireMessage, PublishRequest, SubscribeRequest};
use tokio_stream::StreamExt;
use tonic::{Code, Request};

use super::*;
use crate::grpc::BrokerService;

#[test]
fn topics_and_queues_are_validated() {
    for ok in ["a", "orders.created", "A-Z_0.9", &"t".repeat(MAX_TOPIC_BYTES)] {
        assert_eq!(validate_topic(ok), Ok(()), "{ok:?}");
    }
    for bad in
        ["", "has space", "slash/topic", "star.*", "wild>", "ünicode", &"t".repeat(MAX_TOPIC_BYTES + 1)]
    {
        assert!(matches!(validate_topic(bad), Err(BrokerError::Invalid(_))), "{bad:?}");
    }
    assert_eq!(validate_target("micro", "t", Some("workers")), Ok(()));
    assert!(validate_target("micro", "t", Some("bad queue")).is_err());
    assert!(validate_target("Bad NS", "t", None).is_err());
}

#[test]
fn messages_are_size_limited() {
    assert_eq!(validate_message(&Message::new(vec![0; MAX_MESSAGE_BYTES])), Ok(()));
    assert!(matches!(
        validate_message(&Message::new(vec![0; MAX_MESSAGE_BYTES + 1])),
        Err(BrokerError::Invalid(_))
    ));
    let mut message = Message::new("x");
    message.header.insert("big".into(), "v".repeat(MAX_HEADER_BYTES));
    assert!(validate_message(&message).is_err());
}

#[tokio::test]
async fn memory_broker_conforms() {
    let broker = MemoryBroker::new();
    conformance::run_all(&broker).await;
    assert!(broker.summary().starts_with("memory"));
}

#[tokio::test]
async fn invalid_publish_and_subscribe_are_refused() {
    let broker = MemoryBroker::new();
    let err = broker.publish("micro", "", Message::new("x")).await.unwrap_err();
    assert_eq!(err, BrokerError::Invalid("missing topic".into()));
    assert!(broker.publish("micro", "t", Message::new(vec![0; MAX_MESSAGE_BYTES + 1])).await.is_err());
    assert!(broker.subscribe("micro", "a b", None).await.is_err());
    assert!(broker.subscribe("micro", "t", Some(String::new())).await.is_err());
    assert_eq!(broker.subscriptions("micro"), 0, "a refused subscribe leaves nothing behind");
}

#[tokio::test]
async fn subscriptions_are_removed_on_drop_and_limited() {
    let broker = MemoryBroker::new();
    let a = broker.subscribe("foo", "t", None).await.unwrap();
    let b = broker.subscribe("foo", "t", Some("q".into())).await.unwrap();
    let c = broker.subscribe("foo", "u", Some("q".into())).await.unwrap();
    assert_eq!(broker.subscriptions("foo"), 3);
    drop((a, b));
    assert_eq!(broker.subscriptions("foo"), 1);
    drop(c);
    assert_eq!(broker.subscriptions("foo"), 0);
    assert!(broker.inner_is_empty(), "empty topics, queues and namespaces are pruned");

    let mut held = Vec::new();
    for _ in 0..MAX_SUBSCRIPTIONS_PER_NAMESPACE {
        held.push(broker.subscribe("foo", "t", None).await.unwrap());
    }
    assert!(matches!(broker.subscribe("foo", "t", None).await, Err(BrokerError::Full(_))));
    assert!(broker.subscribe("bar", "t", None).await.is_ok(), "the limit is per namespace");
    held.pop();
    assert!(broker.subscribe("foo", "t", None).await.is_ok());
}

#[tokio::test]
async fn queue_members_round_robin_and_skip_full_members() {
    let broker = MemoryBroker::new();
    let mut a = broker.subscribe("micro", "t", Some("q".into())).await.unwrap();
    let mut b = broker.subscribe("micro", "t", Some("q".into())).await.unwrap();
    // Fill both buffers exactly: round robin alternates.
    for n in 0..SUBSCRIBER_BUFFER * 2 {
        broker.publish("micro", "t", Message::new(n.to_string())).await.unwrap();
    }
    assert_eq!(broker.dropped(), 0);
    // Drain `b` only: the next messages all go to `b`, since `a` is full.
    for _ in 0..SUBSCRIBER_BUFFER {
        b.recv().await.unwrap();
    }
    for n in 0..4 {
        broker.publish("micro", "t", Message::new(format!("late{n}"))).await.unwrap();
    }
    assert_eq!(broker.dropped(), 0, "a full member passes its turn");
    for n in 0..4 {
        assert_eq!(b.recv().await.unwrap().body, format!("late{n}").into_bytes());
    }
    // Both full: the message is dropped once, for the group, not once per member.
    for _ in 0..SUBSCRIBER_BUFFER {
        broker.publish("micro", "t", Message::new("fill")).await.unwrap();
    }
    broker.publish("micro", "t", Message::new("lost")).await.unwrap();
    assert_eq!(broker.dropped(), 1, "the fills took b's room, so only the last is lost");
    assert_eq!((a.dropped(), b.dropped()), (1, 0), "charged to the member whose turn it was");
    assert_eq!(a.recv().await.unwrap().body, b"0");
}

fn request<T>(message: T, context: Context) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(context);
    request
}

#[tokio::test]
async fn grpc_needs_an_account_and_scopes_topics_by_namespace() {
    let broker = Arc::new(MemoryBroker::new());
    let service = BrokerService::new(broker.clone());
    let subscribe = SubscribeRequest { topic: "news".into(), queue: String::new() };

    let err = service.subscribe(request(subscribe.clone(), Context::anonymous("micro"))).await.err().unwrap();
    assert_eq!((err.code(), err.message()), (Code::Unauthenticated, "An account is required"));
    let stranger = Context { namespace: "foo".into(), ..Context::member("bar") };
    let err = service.subscribe(request(subscribe.clone(), stranger)).await.err().unwrap();
    assert_eq!(err.code(), Code::PermissionDenied);

    let mut tenant =
        service.subscribe(request(subscribe.clone(), Context::member("foo"))).await.unwrap().into_inner();
    let mut micro =
        service.subscribe(request(subscribe, Context::member("micro"))).await.unwrap().into_inner();
    assert_eq!(broker.subscriptions("foo"), 1);

    let wire = WireMessage { header: [("k".to_string(), "mine".to_string())].into(), body: b"hi".to_vec() };
    let mut publish =
        request(PublishRequest { topic: "news".into(), message: Some(wire) }, Context::member("micro"));
    publish.metadata_mut().insert("k", "from-metadata".parse().unwrap());
    publish.metadata_mut().insert("trace-id", "t1".parse().unwrap());
    publish.metadata_mut().insert("authorization", "Bearer secret".parse().unwrap());
    service.publish(publish).await.unwrap();
    let publish = request(PublishRequest { topic: "news".into(), message: None }, Context::member("foo"));
    service.publish(publish).await.unwrap();

    let got = micro.next().await.unwrap().unwrap();
    assert_eq!(got.body, b"hi");
    assert_eq!(got.header.get("k").map(String::as_str), Some("mine"), "metadata does not overwrite headers");
    assert_eq!(got.header.get("trace-id").map(String::as_str), Some("t1"), "metadata is copied");
    assert!(!got.header.contains_key("authorization"), "credentials are never copied");
    assert_eq!(tenant.next().await.unwrap().unwrap().body, b"", "foo sees only its own publish");

    let bad = request(PublishRequest { topic: "bad topic".into(), message: None }, Context::member("foo"));
    assert_eq!(service.publish(bad).await.unwrap_err().code(), Code::InvalidArgument);

    drop(tenant);
    assert_eq!(broker.subscriptions("foo"), 0, "dropping the response stream unsubscribes");
}
