//! `cargo run --release -p micro-bench -- events`: durable publish, consume and broker fan-out
//! through a real `micro server` over gRPC, each beside the same work done in-process on the
//! same embedded backend (`FileEvents` / `MemoryBroker`, no network, no auth): the in-process
//! figure is what the storage engine allows, the ratio is what the service path keeps of it.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use micro_events::{ConsumeOptions, Events, PublishOptions, Start};
use micro_proto::broker::broker_client::BrokerClient;
use micro_proto::events::stream_client::StreamClient;
use micro_proto::events::{AckRequest, ConsumeRequest, PublishRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::load::{Budget, Report, Work, closed_loop};
use crate::report::{Figure, Target};

/// Payload of every event and message: a small JSON document.
pub(crate) const PAYLOAD: &[u8] = br#"{"order":12345,"item":"book","quantity":1,"total":"12.50"}"#;
/// Publishers of the concurrent rows.
const PUBLISHERS: usize = 64;
/// Events each consume row reads.
const CONSUME_EVENTS: u64 = 20_000;
/// Acks a manual-ack consume row keeps outstanding.
const ACKS_IN_FLIGHT: usize = 64;
/// Subscribers of the fan-out rows.
const SUBSCRIBERS: usize = 4;

/// One measured figure and, when it has one, its in-process baseline.
pub struct Row {
    pub what: String,
    pub rate: f64,
    pub p50_p99: Option<(u64, u64)>,
    pub baseline: Option<f64>,
    pub errors: u64,
}

/// Everything the events section reports; `scratch` holds the in-process baseline's file.
pub async fn measure(grpc: &str, scratch: &Path, budget: Budget) -> anyhow::Result<Vec<Row>> {
    let channel = Channel::from_shared(format!("http://{grpc}"))?.connect().await?;
    let token = admin_token(channel.clone()).await?;
    let auth = Auth(MetadataValue::try_from(format!("Bearer {token}"))?);
    let local: Arc<dyn Events> = Arc::new(
        micro_events::file::FileEvents::open(&scratch.join("events.redb")).context("in-process events")?,
    );
    let mut rows = Vec::new();

    for publishers in [1, PUBLISHERS] {
        let topic = format!("publish-{publishers}");
        let baseline = closed_loop(
            (0..publishers).map(|_| LocalPublisher { events: local.clone(), topic: topic.clone() }).collect(),
            budget,
        )
        .await;
        eprintln!("in-process publish   x{publishers:<3} {baseline}");
        let workers = connect_publishers(grpc, &auth, &topic, publishers).await?;
        let served = closed_loop(workers, budget).await;
        eprintln!("server publish       x{publishers:<3} {served}");
        rows.push(row(publish_row(publishers), &served, Some(&baseline)));
    }

    // Consume: a topic of CONSUME_EVENTS events read from the start by a new group.
    let topic = "consume";
    let mut publishers = Vec::new();
    for chunk in 0..PUBLISHERS as u64 {
        let (local, topic) = (local.clone(), topic.to_string());
        let mut client = StreamClient::new(channel.clone());
        let auth = auth.clone();
        publishers.push(tokio::spawn(async move {
            for _ in
                0..CONSUME_EVENTS / PUBLISHERS as u64 + u64::from(chunk < CONSUME_EVENTS % PUBLISHERS as u64)
            {
                local.publish("micro", &topic, PAYLOAD.to_vec(), PublishOptions::default()).await?;
                let request =
                    PublishRequest { topic: topic.clone(), payload: PAYLOAD.to_vec(), ..Default::default() };
                client.publish(auth.request(request)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for publisher in publishers {
        publisher.await??;
    }
    let baseline = {
        let options =
            ConsumeOptions { group: Some("bench".into()), start: Start::Sequence(1), ..Default::default() };
        let mut consumer = local.consume("micro", topic, options).await?;
        let started = Instant::now();
        for _ in 0..CONSUME_EVENTS {
            consumer.next().await.context("the consumer ended")??;
        }
        CONSUME_EVENTS as f64 / started.elapsed().as_secs_f64()
    };
    eprintln!("in-process consume        {baseline:.0} msgs/s");
    for (auto_ack, group) in [(true, "auto"), (false, "manual")] {
        let mut client = StreamClient::new(channel.clone());
        let request = ConsumeRequest {
            group: group.into(),
            topic: topic.into(),
            auto_ack,
            ack_wait: 30_000_000_000,
            retry_limit: -1,
            sequence: 1,
            ..Default::default()
        };
        let started = Instant::now();
        let mut stream = client.consume(auth.request(request)).await.context("consume")?.into_inner();
        // The stream is read by its own task, as a consumer handling events concurrently would:
        // acks share the stream's connection, and unread stream data would hold their replies
        // back behind HTTP/2 flow control.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let reader = tokio::spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                if tx.send(event).await.is_err() {
                    break;
                }
            }
        });
        // Acks are pipelined (up to ACKS_IN_FLIGHT outstanding).
        let mut acks = tokio::task::JoinSet::new();
        for _ in 0..CONSUME_EVENTS {
            let event = rx.recv().await.context("the consume stream ended")?;
            if !auto_ack {
                while acks.len() >= ACKS_IN_FLIGHT {
                    acks.join_next().await.context("an ack")???;
                }
                let ack =
                    AckRequest { id: event.id, success: true, topic: topic.into(), group: group.into() };
                let (mut client, request) = (client.clone(), auth.request(ack));
                acks.spawn(async move {
                    match client.ack(request).await {
                        // Redelivered after its ack wait and acked already.
                        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
                        other => other.map(drop),
                    }
                });
            }
        }
        while let Some(ack) = acks.join_next().await {
            ack??;
        }
        reader.abort();
        let rate = CONSUME_EVENTS as f64 / started.elapsed().as_secs_f64();
        eprintln!("server consume {group:<6}     {rate:.0} msgs/s");
        let what = if auto_ack {
            "consume, auto-ack, one consumer (msgs/s)"
        } else {
            "consume, manual ack (an Ack call per event, 64 outstanding), one consumer (msgs/s)"
        };
        rows.push(Row { what: what.into(), rate, p50_p99: None, baseline: Some(baseline), errors: 0 });
    }

    rows.push(fan_out(grpc, &auth, budget).await?);
    Ok(rows)
}

/// The durable publish rows alone, through the server at `grpc` (one on NATS JetStream).
pub async fn measure_publish(grpc: &str, budget: Budget) -> anyhow::Result<Vec<Row>> {
    let channel = Channel::from_shared(format!("http://{grpc}"))?.connect().await?;
    let auth = Auth(MetadataValue::try_from(format!("Bearer {}", admin_token(channel).await?))?);
    let mut rows = Vec::new();
    for publishers in [1, PUBLISHERS] {
        let topic = format!("publish-{publishers}");
        let workers = connect_publishers(grpc, &auth, &topic, publishers).await?;
        let served = closed_loop(workers, budget).await;
        eprintln!("nats server publish  x{publishers:<3} {served}");
        rows.push(row(publish_row(publishers), &served, None));
    }
    Ok(rows)
}

fn publish_row(publishers: usize) -> String {
    format!("durable publish, {publishers} publisher(s) (msgs/s)")
}

/// The budget's view of the section: every row against its in-process baseline, the durable
/// publish with concurrent publishers against the 50k msgs/s target, and NATS rows against the
/// embedded server's.
pub fn figures(rows: &[Row], nats: Option<&[Row]>) -> Vec<Figure> {
    let mut figures: Vec<Figure> = rows
        .iter()
        .map(|row| {
            let mut figure = Figure::new(format!("through the server: {}", row.what), "", row.rate);
            if let Some(baseline) = row.baseline {
                figure = figure.against("in-process", baseline);
            }
            if row.what == publish_row(PUBLISHERS) {
                figure = figure.target(Target::AtLeast(50_000.0));
            }
            figure
        })
        .collect();
    for row in nats.unwrap_or_default() {
        let mut figure = Figure::new(format!("on NATS JetStream: {}", row.what), "", row.rate);
        if let Some(embedded) = rows.iter().find(|r| r.what == row.what) {
            figure = figure.against("embedded server", embedded.rate);
        }
        figures.push(figure);
    }
    figures
}

/// Broker fan-out: one publisher in a closed loop, [`SUBSCRIBERS`] subscribers; the rate is
/// messages delivered per second over all subscribers, beside the same on a `MemoryBroker`.
async fn fan_out(grpc: &str, auth: &Auth, budget: Budget) -> anyhow::Result<Row> {
    let broker: Arc<dyn micro_broker::Broker> = Arc::new(micro_broker::MemoryBroker::new());
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut subscription = broker.subscribe("micro", "fanout", None).await?;
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            while subscription.recv().await.is_some() {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let publisher = LocalBroker { broker: broker.clone() };
    let (baseline, baseline_report) = count_deliveries(&delivered, publisher, budget).await;
    for reader in &readers {
        reader.abort();
    }
    eprintln!("in-process fan-out x{SUBSCRIBERS}     {baseline:.0} deliveries/s ({baseline_report})");

    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let channel = Channel::from_shared(format!("http://{grpc}"))?.connect().await?;
        let request = micro_proto::broker::SubscribeRequest { topic: "fanout".into(), queue: String::new() };
        let mut stream = BrokerClient::new(channel).subscribe(auth.request(request)).await?.into_inner();
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(_)) = stream.message().await {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let channel = Channel::from_shared(format!("http://{grpc}"))?.connect().await?;
    let publisher = ServerBroker { client: BrokerClient::new(channel), auth: auth.clone() };
    let (rate, report) = count_deliveries(&delivered, publisher, budget).await;
    for reader in &readers {
        reader.abort();
    }
    eprintln!("server fan-out x{SUBSCRIBERS}         {rate:.0} deliveries/s ({report})");
    Ok(Row {
        what: format!("broker fan-out, 1 publisher → {SUBSCRIBERS} subscribers (deliveries/s)"),
        rate,
        p50_p99: Some((report.percentile(50.0), report.percentile(99.0))),
        baseline: Some(baseline),
        errors: report.errors,
    })
}

/// Runs `publisher` in a closed loop and counts the deliveries made while it was measured.
async fn count_deliveries<W: Work>(delivered: &AtomicU64, publisher: W, budget: Budget) -> (f64, Report) {
    let measured = async {
        tokio::time::sleep(budget.warmup).await;
        let from = delivered.load(Ordering::Relaxed);
        tokio::time::sleep(budget.duration).await;
        delivered.load(Ordering::Relaxed) - from
    };
    let (count, report) = tokio::join!(measured, closed_loop(vec![publisher], budget));
    (count as f64 / budget.duration.as_secs_f64(), report)
}

fn row(what: String, served: &Report, baseline: Option<&Report>) -> Row {
    Row {
        what,
        rate: served.rps(),
        p50_p99: Some((served.percentile(50.0), served.percentile(99.0))),
        baseline: baseline.map(Report::rps),
        errors: served.errors,
    }
}

/// An access token of the default admin account.
pub(crate) async fn admin_token(channel: Channel) -> anyhow::Result<String> {
    use micro_proto::auth::auth_client::AuthClient;
    use micro_proto::auth::{Options, TokenRequest};
    let request = TokenRequest {
        id: "admin".into(),
        secret: "micro".into(),
        options: Some(Options { namespace: "micro".into() }),
        ..Default::default()
    };
    let reply = AuthClient::new(channel).token(request).await.context("logging in as admin")?;
    Ok(reply.into_inner().token.context("a token")?.access_token)
}

/// The bearer token every request carries.
#[derive(Clone)]
pub(crate) struct Auth(pub(crate) MetadataValue<tonic::metadata::Ascii>);

impl Auth {
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", self.0.clone());
        request
    }
}

/// `count` publishers to `topic` through the server at `grpc`, one connection each, as separate
/// clients would have.
pub(crate) async fn connect_publishers(
    grpc: &str,
    auth: &Auth,
    topic: &str,
    count: usize,
) -> anyhow::Result<Vec<Publisher>> {
    let mut publishers = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = Channel::from_shared(format!("http://{grpc}"))?.connect().await?;
        publishers.push(Publisher {
            client: StreamClient::new(channel),
            auth: auth.clone(),
            topic: topic.into(),
        });
    }
    Ok(publishers)
}

pub(crate) struct Publisher {
    pub(crate) client: StreamClient<Channel>,
    pub(crate) auth: Auth,
    pub(crate) topic: String,
}

impl Work for Publisher {
    async fn once(&mut self) -> bool {
        let request =
            PublishRequest { topic: self.topic.clone(), payload: PAYLOAD.to_vec(), ..Default::default() };
        self.client.publish(self.auth.request(request)).await.is_ok()
    }
}

struct LocalPublisher {
    events: Arc<dyn Events>,
    topic: String,
}

impl Work for LocalPublisher {
    async fn once(&mut self) -> bool {
        self.events.publish("micro", &self.topic, PAYLOAD.to_vec(), PublishOptions::default()).await.is_ok()
    }
}

struct ServerBroker {
    client: BrokerClient<Channel>,
    auth: Auth,
}

impl Work for ServerBroker {
    async fn once(&mut self) -> bool {
        let message = micro_proto::broker::Message { header: Default::default(), body: PAYLOAD.to_vec() };
        let request = micro_proto::broker::PublishRequest { topic: "fanout".into(), message: Some(message) };
        self.client.publish(self.auth.request(request)).await.is_ok()
    }
}

struct LocalBroker {
    broker: Arc<dyn micro_broker::Broker>,
}

impl Work for LocalBroker {
    async fn once(&mut self) -> bool {
        self.broker.publish("micro", "fanout", micro_broker::Message::new(PAYLOAD)).await.is_ok()
    }
}

/// The events section of `BENCHMARKS.md`.
pub fn render(rows: &[Row], nats: Option<&[Row]>, budget: Budget) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Events and broker: through the server against the same backends in-process\n");
    let _ = writeln!(
        md,
        "Written by `cargo run --release -p micro-bench -- events`: a release `micro server` with its embedded \
         backends (events in one redb file, fsync'd before each publish is acknowledged; broker in memory), \
         driven over gRPC on loopback with an admin token. The baseline of each row is the same work done \
         in-process on the same backend types (no network, no auth) in the same run. Closed-loop rows run \
         {}s after a {}ms warm-up; consume rows read {CONSUME_EVENTS} events of {} bytes from the start.\n",
        budget.duration.as_secs_f64(),
        budget.warmup.as_millis(),
        PAYLOAD.len()
    );
    let _ = writeln!(md, "Machine: {} cores; run at unix time {}.\n", crate::cores(), crate::unix_now());
    let _ = writeln!(md, "| figure | through the server | p50 / p99 | in-process | ratio | errors |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let latency = row.p50_p99.map_or("—".to_string(), |(p50, p99)| {
            format!("{} / {}", crate::fmt_micros(p50), crate::fmt_micros(p99))
        });
        let (baseline, ratio) = match row.baseline {
            Some(baseline) if baseline > 0.0 => {
                (format!("{baseline:.0}"), format!("{:.2}×", row.rate / baseline))
            }
            _ => ("—".into(), "—".into()),
        };
        let _ = writeln!(
            md,
            "| {} | {:.0} | {latency} | {baseline} | {ratio} | {} |",
            row.what, row.rate, row.errors
        );
    }
    if let Some(nats) = nats {
        let _ = writeln!(
            md,
            "\nThe publish rows again through a server on NATS JetStream (`--nats URL`: `--events` and `--broker` on it), same run:\n"
        );
        let _ = writeln!(md, "| figure | NATS JetStream | p50 / p99 | embedded server | ratio |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        for row in nats {
            let latency = row.p50_p99.map_or("—".to_string(), |(p50, p99)| {
                format!("{} / {}", crate::fmt_micros(p50), crate::fmt_micros(p99))
            });
            let embedded = rows.iter().find(|r| r.what == row.what).map_or(0.0, |r| r.rate);
            let _ = writeln!(
                md,
                "| {} | {:.0} | {latency} | {embedded:.0} | {:.2}× |",
                row.what,
                row.rate,
                row.rate / embedded.max(f64::MIN_POSITIVE)
            );
        }
    }
    md
}
