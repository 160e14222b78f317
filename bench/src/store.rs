//! The store section: durable writes and reads through a release `micro server` (redb store,
//! fsync'd before a write is acknowledged) over gRPC with an admin token, at concurrency 1 and
//! 64, beside the same operations on `redis-server` with `--with-redis`: reads against `GET`,
//! durable writes against `SET` with `appendfsync always`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use micro_proto::store::store_client::StoreClient;
use micro_proto::store::{ReadOptions, ReadRequest, Record, WriteOptions, WriteRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::events::{Auth, PAYLOAD};
use crate::load::{Budget, Report, Work, closed_loop};
use crate::procs::Server;
use crate::redis::{RedisClient, RedisOp, RedisServer};
use crate::report::{Figure, Target};

/// Concurrency levels of every row.
const CONCURRENCY: &[usize] = &[1, 64];
/// Keys the rows spread over; every key is written before the first read row.
pub const KEYS: usize = 1000;

/// One row: what was measured through micro and, when measured, on Redis.
struct Row {
    write: bool,
    concurrency: usize,
    micro: Report,
    redis: Option<Report>,
}

pub async fn measure(
    micro: &Path,
    home: &Path,
    redis: Option<&Path>,
    budget: Budget,
    path: &PathBuf,
) -> anyhow::Result<Vec<Figure>> {
    std::fs::create_dir_all(home)?;
    let server = Server::start(micro, home).await?;
    let auth = Auth(MetadataValue::try_from(format!("Bearer {}", server.token().await?))?);
    let redis = match redis {
        Some(binary) => Some(RedisServer::start(binary, &home.join("redis")).await?),
        None => None,
    };
    let table = "bench";
    let mut rows = Vec::new();
    for write in [true, false] {
        for &concurrency in CONCURRENCY {
            let workers = connect_store_ops(&server.grpc, &auth, table, write, concurrency).await?;
            let micro = closed_loop(workers, budget).await;
            let verb = if write { "write" } else { "read " };
            eprintln!("store {verb} c={concurrency:<3} micro {micro}");
            let redis = match &redis {
                Some(redis) => {
                    let mut workers = Vec::new();
                    for n in 0..concurrency {
                        let client = RedisClient::connect(&redis.address).await?;
                        workers.push(RedisOp { client, write, n, keys: KEYS, value: PAYLOAD });
                    }
                    let report = closed_loop(workers, budget).await;
                    eprintln!("store {verb} c={concurrency:<3} redis {report}");
                    Some(report)
                }
                None => None,
            };
            rows.push(Row { write, concurrency, micro, redis });
        }
    }
    crate::runtime::write_section(path, "store", &render(&rows, budget))?;
    Ok(rows
        .iter()
        .map(|row| {
            let name = if row.write {
                format!("store write, durable, c={}", row.concurrency)
            } else {
                format!("store read, c={}", row.concurrency)
            };
            let figure = Figure::new(name, "ops/s", row.micro.rps()).target(Target::RatioAtLeast(0.5));
            match &row.redis {
                Some(redis) if row.write => figure.against("Redis SET, appendfsync always", redis.rps()),
                Some(redis) => figure.against("Redis GET", redis.rps()),
                None => figure,
            }
        })
        .collect())
}

fn render(rows: &[Row], budget: Budget) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Store: through the server against Redis\n");
    let _ = writeln!(
        md,
        "Written by `cargo run --release -p micro-bench -- --only store --with-redis`: a release `micro server` \
         (store in one redb file, each write fsync'd before it is acknowledged) driven over gRPC on loopback \
         with an admin token, one connection per worker; beside it `redis-server` with `appendonly yes`, \
         `appendfsync always` (a `SET` is answered once its append is fsync'd), one connection per worker, no \
         pipelining. Values of {} bytes over {KEYS} keys, written before the read rows. Each row runs {}s after \
         a {}ms warm-up.\n",
        PAYLOAD.len(),
        budget.duration.as_secs_f64(),
        budget.warmup.as_millis()
    );
    let _ = writeln!(md, "Machine: {} cores; run at unix time {}.\n", crate::cores(), crate::unix_now());
    let _ = writeln!(
        md,
        "| operation | concurrency | micro ops/s | p50 / p99 | Redis ops/s | p50 / p99 | micro ÷ Redis | errors |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let latency = |report: &Report| {
        format!(
            "{} / {}",
            crate::fmt_micros(report.percentile(50.0)),
            crate::fmt_micros(report.percentile(99.0))
        )
    };
    for row in rows {
        let operation = if row.write { "durable write (Redis: SET)" } else { "read (Redis: GET)" };
        let (redis, redis_latency, ratio) = match &row.redis {
            Some(redis) => (
                format!("{:.0}", redis.rps()),
                latency(redis),
                format!("{:.2}×", row.micro.rps() / redis.rps().max(f64::MIN_POSITIVE)),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let errors = row.micro.errors + row.redis.as_ref().map_or(0, |r| r.errors);
        let _ = writeln!(
            md,
            "| {operation} | {} | {:.0} | {} | {redis} | {redis_latency} | {ratio} | {errors} |",
            row.concurrency,
            row.micro.rps(),
            latency(&row.micro),
        );
    }
    if rows.iter().all(|row| row.redis.is_none()) {
        let _ = writeln!(md, "\nRedis was not measured in this run (no `--with-redis`).");
    }
    md
}

/// `count` writers (or readers) of `table` through the server at `grpc`, one connection each,
/// starting at different keys.
pub async fn connect_store_ops(
    grpc: &str,
    auth: &Auth,
    table: &str,
    write: bool,
    count: usize,
) -> anyhow::Result<Vec<StoreOp>> {
    let mut ops = Vec::with_capacity(count);
    for n in 0..count {
        let channel = Channel::from_shared(format!("http://{grpc}"))?.connect().await?;
        ops.push(StoreOp {
            client: StoreClient::new(channel),
            auth: auth.clone(),
            table: table.into(),
            write,
            n,
        });
    }
    Ok(ops)
}

/// A store write or read of one of [`KEYS`] keys, in a closed loop.
pub struct StoreOp {
    pub client: StoreClient<Channel>,
    pub auth: Auth,
    pub table: String,
    pub write: bool,
    pub n: usize,
}

impl Work for StoreOp {
    async fn once(&mut self) -> bool {
        self.n = (self.n + 7) % KEYS;
        let key = format!("key-{:04}", self.n);
        if self.write {
            let record = Record { key, value: PAYLOAD.to_vec(), ..Default::default() };
            let options = WriteOptions { database: String::new(), table: self.table.clone() };
            let request = WriteRequest { record: Some(record), options: Some(options) };
            self.client.write(self.auth.request(request)).await.is_ok()
        } else {
            let options = ReadOptions { table: self.table.clone(), ..Default::default() };
            let request = ReadRequest { key, options: Some(options) };
            self.client.read(self.auth.request(request)).await.is_ok()
        }
    }
}
