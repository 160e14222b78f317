//! A closed-loop load generator: `concurrency` workers each send one call, wait for the answer,
//! and send the next, for a fixed time. Latency is recorded per call.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use micro_proto::dynamic::DynamicCodec;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::http::HttpClient;

/// How long the service gets to appear in the registry.
const REGISTER_DEADLINE: Duration = Duration::from_secs(30);
const PATH: &str = "/helloworld.Helloworld/Call";
const BODY: &str = r#"{"name":"bench"}"#;

/// How a call reaches the handler.
pub enum Via {
    Direct,
    Proxy,
    /// The gateway's JSON path, `POST /helloworld/call`, at this HTTP address.
    Gateway(String),
    /// Connect unary JSON on the gateway, `POST /helloworld.Helloworld/Call`, at this address.
    Connect(String),
}

/// The method under test and the two gRPC addresses it can be reached at.
pub struct Target {
    method: MethodDescriptor,
    direct: String,
    proxy: String,
}

impl Target {
    /// Waits until `helloworld` is registered, then loads its descriptors from the registry.
    pub async fn discover(server: &str, node: &str) -> anyhow::Result<Self> {
        use micro_proto::registry::GetRequest;
        use micro_proto::registry::registry_client::RegistryClient;
        let proxy = Channel::from_shared(format!("http://{server}"))?.connect().await?;
        let deadline = Instant::now() + REGISTER_DEADLINE;
        let service = loop {
            let request = GetRequest { service: "helloworld".into(), options: None };
            match RegistryClient::new(proxy.clone()).get_service(request).await {
                Ok(reply) => break reply.into_inner().services.into_iter().next().context("no service")?,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(status) => bail!("helloworld never registered: {status}"),
            }
        };
        let pool =
            DescriptorPool::decode(service.descriptors.as_slice()).context("registered descriptors")?;
        let method = pool
            .get_service_by_name("helloworld.Helloworld")
            .and_then(|s| s.methods().find(|m| m.name() == "Call"))
            .context("helloworld.Helloworld/Call in the descriptors")?;
        Ok(Self { method, direct: node.to_string(), proxy: server.to_string() })
    }

    fn request(&self) -> DynamicMessage {
        let mut deserializer = serde_json::Deserializer::from_str(BODY);
        DynamicMessage::deserialize(self.method.input(), &mut deserializer)
            .expect("the bench request is valid")
    }
}

/// Latencies of one scenario.
pub struct Report {
    micros: Vec<u64>,
    pub errors: u64,
    elapsed: Duration,
}

impl Report {
    pub fn rps(&self) -> f64 {
        self.micros.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> u64 {
        if self.micros.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * (self.micros.len() - 1) as f64).round() as usize;
        self.micros[rank.min(self.micros.len() - 1)]
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  errors {}",
            self.rps(),
            self.percentile(50.0),
            self.percentile(99.0),
            self.errors
        )
    }
}

/// How long a closed loop runs: `warmup` unmeasured, then until `duration` has passed or
/// `calls` operations were measured, whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub warmup: Duration,
    pub duration: Duration,
    pub calls: Option<u64>,
}

impl Budget {
    pub fn timed(warmup: Duration, duration: Duration) -> Self {
        Self { warmup, duration, calls: None }
    }
}

/// Runs `concurrency` workers against `target` via `how`, each call carrying `token`.
pub async fn run_load(
    target: &Target,
    how: &Via,
    token: &str,
    concurrency: usize,
    budget: Budget,
) -> anyhow::Result<Report> {
    let mut callers = Vec::new();
    for _ in 0..concurrency {
        callers.push(Caller::new(target, how, token).await?);
    }
    Ok(closed_loop(callers, budget).await)
}

/// One unit of work a closed-loop worker repeats; `true` when it succeeded.
pub trait Work: Send + 'static {
    fn once(&mut self) -> impl Future<Output = bool> + Send;
}

/// Runs each of `workers` in a closed loop (one operation at a time, the next as soon as the
/// last finished) within `budget`, recording each measured operation's latency; with a call
/// count, the report's elapsed time is the measured span.
pub async fn closed_loop<W: Work>(workers: Vec<W>, budget: Budget) -> Report {
    let start = Instant::now();
    let measure_from = start + budget.warmup;
    let stop = measure_from + budget.duration;
    // Measured operations started so far, against the budget's count.
    let started = Arc::new(AtomicU64::new(0));
    let limit = budget.calls.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for mut worker in workers {
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            let mut errors = 0u64;
            let mut last = measure_from;
            loop {
                let sent = Instant::now();
                if sent >= stop || (sent >= measure_from && started.fetch_add(1, Ordering::Relaxed) >= limit)
                {
                    break;
                }
                let ok = worker.once().await;
                last = Instant::now();
                if sent >= measure_from {
                    if ok {
                        micros.push(sent.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            (micros, errors, last)
        }));
    }
    let mut report = Report { micros: Vec::new(), errors: 0, elapsed: budget.duration };
    let mut finished = measure_from;
    for task in tasks {
        let (micros, errors, last) = task.await.unwrap_or((Vec::new(), 0, measure_from));
        report.micros.extend(micros);
        report.errors += errors;
        finished = finished.max(last);
    }
    if budget.calls.is_some() {
        report.elapsed = finished.saturating_duration_since(measure_from).max(Duration::from_micros(1));
    }
    report.micros.sort_unstable();
    report
}

/// One worker's connection.
enum Caller {
    Grpc {
        grpc: tonic::client::Grpc<Channel>,
        method: MethodDescriptor,
        request: DynamicMessage,
        authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    },
    Http(HttpClient),
}

impl Work for Caller {
    async fn once(&mut self) -> bool {
        self.call().await
    }
}

impl Caller {
    async fn new(target: &Target, how: &Via, token: &str) -> anyhow::Result<Self> {
        let authorization = format!("Bearer {token}");
        Ok(match how {
            Via::Direct | Via::Proxy => {
                // One connection per worker, as the HTTP workers have: the paths differ only in
                // what serves the call.
                let address = if matches!(how, Via::Direct) { &target.direct } else { &target.proxy };
                let channel = Channel::from_shared(format!("http://{address}"))?.connect().await?;
                Caller::Grpc {
                    grpc: tonic::client::Grpc::new(channel),
                    method: target.method.clone(),
                    request: target.request(),
                    authorization: authorization.parse().context("the token is a header value")?,
                }
            }
            Via::Gateway(address) => Caller::Http(
                HttpClient::connect(address, "/helloworld/call", &[("Authorization", &authorization)], BODY)
                    .await?,
            ),
            // The header a Connect client (connect-es, connect-go) sends with every unary call.
            Via::Connect(address) => Caller::Http(
                HttpClient::connect(
                    address,
                    PATH,
                    &[("Authorization", &authorization), ("Connect-Protocol-Version", "1")],
                    BODY,
                )
                .await?,
            ),
        })
    }

    async fn call(&mut self) -> bool {
        match self {
            Caller::Grpc { grpc, method, request, authorization } => {
                if grpc.ready().await.is_err() {
                    return false;
                }
                let path = PathAndQuery::from_str(PATH).expect("a valid path");
                let codec = DynamicCodec::new(method.output());
                let mut request = tonic::Request::new(request.clone());
                request.metadata_mut().insert("authorization", authorization.clone());
                match grpc.unary(request, path, codec).await {
                    Ok(_) => true,
                    Err(status) => {
                        static SHOWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                        if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3 {
                            eprintln!("call failed: {status:?}");
                        }
                        false
                    }
                }
            }
            Caller::Http(client) => client.post().await.is_ok_and(|status| status == 200),
        }
    }
}
