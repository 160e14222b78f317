//! [`Service`]: serve gRPC handlers, register with the platform, heartbeat, and leave cleanly.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use micro_core::backoff::Backoff;
use micro_core::metrics::{Listener, RequestMetricsLayer};
use micro_core::task::AbortOnDrop;
use micro_proto::registry::registry_client::RegistryClient;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;

use crate::auth::{GateLayer, Guard};
use crate::broker::{self, Message};
use crate::codegen::Described;
use crate::env::{self, Env};
use crate::events::{self, ConsumeOptions, Event, Failure};
use crate::metrics_http::HttpLayer;
use crate::platform::Platform;
use crate::registry::{Handler, Registration};
use crate::{Error, Result};

/// How long leaving (deregistering, deleting a borrowed account) may take on shutdown. Leave
/// plus drain stay within the runtime's 15 s between SIGTERM and SIGKILL (its `STOP_GRACE`).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long in-flight calls get to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Service::consume`] waits before giving a failed event back.
const NACK_DELAY: Duration = Duration::from_secs(1);
/// Shortest and longest wait between failed registrations, subscriptions and consumers (each
/// wait jittered between the doubling schedule and the cap: `micro_core::backoff`).
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A micro service: gRPC handlers plus everything that makes them reachable on the platform.
///
/// ```no_run
/// # mod helloworld_server {
/// #     #[derive(Clone)] pub struct HelloworldServer<T>(T);
/// #     impl<T> HelloworldServer<T> { pub fn new(t: T) -> Self { Self(t) } }
/// # }
/// # struct Helloworld;
/// // src/main.rs, after `micro::include_proto!("helloworld");`
/// #[tokio::main]
/// async fn main() -> micro::Result<()> {
/// # /*
///     micro::Service::new("helloworld")
///         .handle(helloworld_server::HelloworldServer::new(handler::Helloworld))
///         .run()
///         .await
/// # */ Ok(())
/// }
/// ```
///
/// [`run`](Service::run) reads the `MICRO_*` environment (see the crate docs), listens, logs
/// `Listening on <addr>`, registers every handler's endpoints and descriptors, re-registers
/// every `MICRO_REGISTER_INTERVAL`, and on SIGINT/SIGTERM deregisters before returning `Ok`.
pub struct Service {
    name: String,
    version: Option<String>,
    address: Option<String>,
    routes: RoutesBuilder,
    handlers: Vec<Handler>,
    subscribers: Vec<Subscriber>,
    consumers: Vec<EventConsumer>,
}

/// Handles one broker message.
type MessageHandler = dyn Fn(Message) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

/// Handles one event; `Err` gives it back to be delivered again, or dead-letters it.
type EventHandler = dyn Fn(Event) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>> + Send + Sync;

/// A broker topic and what handles its messages.
struct Subscriber {
    topic: String,
    handler: Arc<MessageHandler>,
}

/// An events topic, how to consume it, and what handles its events.
struct EventConsumer {
    topic: String,
    options: ConsumeOptions,
    handler: Arc<EventHandler>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("handlers", &self.handlers.iter().map(|h| h.name).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service called `name` (`MICRO_SERVICE_NAME` overrides it).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: None,
            address: None,
            routes: RoutesBuilder::default(),
            handlers: Vec::new(),
            subscribers: Vec::new(),
            consumers: Vec::new(),
        }
    }

    /// The version to register, instead of `latest` (`MICRO_SERVICE_VERSION` overrides it).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The address to listen on, instead of `127.0.0.1:0` (`MICRO_SERVICE_ADDRESS` overrides it).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Serves a generated tonic server (`XServer::new(handler)`). Its rpcs are registered as
    /// endpoints `X.Method`, with the descriptors `micro::build` generated for it.
    pub fn handle<S>(mut self, server: S) -> Self
    where
        S: Described
            + NamedService
            + tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.handlers.push(Handler { name: S::NAME, descriptors: S::FILE_DESCRIPTOR_SET });
        self.routes.add_service(server);
        self
    }

    /// Calls `handler` with each broker message published on `topic` while the service runs.
    /// The service's instances share the topic (queue group = the service name): each message
    /// reaches one of them. Messages are handled one at a time, in order; the subscription is
    /// renewed (with backoff) if the connection to the server breaks.
    ///
    /// ```no_run
    /// # async fn example() -> micro::Result<()> {
    /// micro::Service::new("notifier")
    ///     .subscribe("signups", |message: micro::broker::Message| async move {
    ///         micro::tracing::info!(body = %String::from_utf8_lossy(&message.body), "signup");
    ///     })
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn subscribe<F, Fut>(mut self, topic: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler =
            Arc::new(move |message| Box::pin(handler(message)) as Pin<Box<dyn Future<Output = ()> + Send>>);
        self.subscribers.push(Subscriber { topic: topic.into(), handler });
        self
    }

    /// Calls `handler` with each event of `topic` while the service runs: `Ok` acks it, `Err`
    /// (logged) gives it back, after a second's pause, to be delivered again (set a retry limit
    /// in `options` to give up on an event that never succeeds: it then goes to the group's
    /// dead letters). An error that is a [`Failure::Permanent`] (return `Result<(), Failure>`)
    /// sends the event to the dead letters at once, with its reason; any other error's message
    /// is kept as the reason of a retry. Without a group in `options` the group is
    /// the service name, so the service's instances share the events and its position is kept
    /// across restarts. Events are handled one at a time; the consumer is renewed (with
    /// backoff) if the connection to the server breaks, and unacked events come back.
    ///
    /// ```no_run
    /// # async fn example() -> micro::Result<()> {
    /// use micro::events::{ConsumeOptions, Event, Start};
    ///
    /// micro::Service::new("billing")
    ///     .consume("orders", ConsumeOptions::default().start(Start::Sequence(1)), |event: Event| async move {
    ///         let order: serde_json::Value = event.json().map_err(|err| err.to_string())?;
    ///         micro::tracing::info!(%order, "billing");
    ///         Ok::<_, String>(())
    ///     })
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn consume<F, Fut, E>(mut self, topic: impl Into<String>, options: ConsumeOptions, handler: F) -> Self
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        let handler = Arc::new(move |event| {
            let handled = handler(event);
            Box::pin(async move { handled.await.map_err(Failure::of) })
                as Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>
        });
        self.consumers.push(EventConsumer { topic: topic.into(), options, handler });
        self
    }

    /// Runs until SIGINT or SIGTERM: listens on the configured address and serves.
    pub async fn run(self) -> Result<()> {
        init_tracing()?;
        let env = Env::from_process()?;
        let address = env_or(&env.address, env::DEFAULT_SERVICE_ADDRESS, self.address.as_deref());
        let listener = TcpListener::bind(&address).await.map_err(|source| Error::Bind { address, source })?;
        self.serve(listener, micro_core::shutdown::signal()).await
    }

    /// Serves on `listener` until `shutdown` resolves, then deregisters and drains.
    /// [`run`](Service::run) is this with the configured address and the process's signals;
    /// tests bind `127.0.0.1:0` themselves.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        init_tracing()?;
        let platform = Platform::global()?;
        let env = &platform.env;
        let name = env.name.clone().unwrap_or_else(|| self.name.clone());
        env::validate_name(&name)?;
        let version = env_or(&env.version, env::DEFAULT_VERSION, self.version.as_deref());
        let _ = platform.service.set(name.clone());
        // Spans are recorded and exported when OTEL_EXPORTER_OTLP_ENDPOINT is set (the runtime
        // points it at the server, which takes them from accounts only: the export carries
        // this service's token, and only there); otherwise only the callers' trace is passed on.
        let bearer = micro_core::trace::exports_to(&platform.address).then(|| {
            let platform = platform.clone();
            micro_core::trace::Bearer(Arc::new(move || platform.session.latest_bearer()))
        });
        let tracing =
            micro_core::trace::init(&name, micro_core::trace::Options { bearer, ..Default::default() });

        let local =
            listener.local_addr().map_err(|source| Error::Bind { address: "listener".into(), source })?;
        let advertised = advertised(local);
        // `launch=` (the runtime's id of this process) tells the runtime this is a micro service
        // that registers: an update waits for it to be registered (docs/runtime.md).
        let launch = std::env::var(micro_core::service_env::LAUNCH_ID).unwrap_or_default();
        tracing::info!(service = %name, %version, address = %local, launch = %launch.trim(), "Listening on {local}");

        let names: Vec<&'static str> = self.handlers.iter().map(|handler| handler.name).collect();
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &names {
            health.set_service_status(*name, tonic_health::ServingStatus::Serving).await;
        }
        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut seen: Vec<&[u8]> = Vec::new();
        for handler in &self.handlers {
            if !seen.contains(&handler.descriptors) {
                seen.push(handler.descriptors);
                reflection = reflection.register_encoded_file_descriptor_set(handler.descriptors);
            }
        }
        let mut routes = self.routes;
        routes.add_service(health_service);
        match reflection.build_v1() {
            Ok(reflection) => {
                routes.add_service(reflection);
            }
            Err(err) => {
                tracing::warn!(cause = %err, "gRPC reflection is off: the descriptors do not resolve")
            }
        }

        let guard = Arc::new(Guard::new(platform.clone(), name.clone()));
        let descriptors: Vec<&[u8]> = self.handlers.iter().map(|handler| handler.descriptors).collect();
        let methods = micro_core::metrics::methods_of(&descriptors, &names);
        let recorder = micro_core::metrics::Metrics::install(|builder| builder, || {});
        let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            // `GET /metrics` over HTTP/1.1 (Prometheus's scrapes) beside gRPC over HTTP/2.
            .accept_http1(true)
            // Outermost, so that the gate finds the metrics' slot and refusals are counted too.
            .layer(RequestMetricsLayer::new(Listener::Service))
            .layer(HttpLayer::new(guard.clone(), recorder, local))
            // Every call's span, refusals included (not the scrapes).
            .layer(micro_core::trace::ServerLayer::handling())
            .layer(GateLayer::new(guard, &names, methods))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(nodelay(TcpListenerStream::new(listener)), async {
                let _ = serving_stopped.await;
            });
        let mut server = tokio::spawn(server);

        let mut registration = Registration::new(
            &name,
            &version,
            advertised,
            &platform.namespace,
            env.register_ttl,
            &self.handlers,
        );
        // Started by the runtime: the node says which launch it is, so an update waits for this
        // very process to be registered before it stops the previous one (docs/runtime.md).
        registration.launch = std::env::var(micro_core::service_env::LAUNCH_ID)
            .ok()
            .map(|launch| launch.trim().to_string())
            .filter(|launch| !launch.is_empty());
        let registered = watch::Sender::new(false);
        let heartbeat = tokio::spawn(heartbeat(
            platform.clone(),
            registration.clone(),
            env.register_interval,
            registered.clone(),
        ));
        // The heartbeat and the subscribers die with this function, however it ends.
        let heartbeat = AbortOnDrop::from(heartbeat);
        let _subscribers: Vec<AbortOnDrop> = self
            .subscribers
            .into_iter()
            .map(|subscriber| {
                AbortOnDrop::from(tokio::spawn(subscribe(subscriber, name.clone(), registered.subscribe())))
            })
            .collect();
        let _consumers: Vec<AbortOnDrop> = self
            .consumers
            .into_iter()
            .map(|consumer| {
                AbortOnDrop::from(tokio::spawn(consume(consumer, name.clone(), registered.subscribe())))
            })
            .collect();

        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) => Err(Error::Server(err)),
                    Err(join) => Err(Error::Config(format!("the gRPC server task failed: {join}"))),
                };
            }
        }

        tracing::info!(service = %name, "Stopping: deregistering and draining calls");
        // No heartbeat may re-register the node after it deregisters.
        drop(heartbeat);
        for name in &names {
            health.set_service_status(*name, tonic_health::ServingStatus::NotServing).await;
        }
        let leave = async {
            if *registered.borrow() {
                deregister(&platform, &registration).await;
            }
            platform.session.release(&platform.channel).await;
        };
        if tokio::time::timeout(LEAVE_TIMEOUT, leave).await.is_err() {
            tracing::warn!(
                "leaving the platform took too long; the registry forgets this node when its TTL ends"
            );
        }
        let _ = stop_serving.send(());
        let drained = match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
            Ok(Ok(Err(err))) => Err(Error::Server(err)),
            Ok(_) => Ok(()),
            Err(_) => {
                tracing::warn!("calls still running after {DRAIN_TIMEOUT:?}; stopping anyway");
                server.abort();
                Ok(())
            }
        };
        // The last spans are exported; the exporter's flush blocks its caller.
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        drained
    }
}

/// Feeds `subscriber` the messages of its topic, in queue group `queue`, from the service's
/// first registration (when its account is in place) until aborted; resubscribes with backoff.
async fn subscribe(subscriber: Subscriber, queue: String, mut registered: watch::Receiver<bool>) {
    if registered.wait_for(|registered| *registered).await.is_err() {
        return;
    }
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        match broker::subscribe_queue(&subscriber.topic, &queue).await {
            Ok(mut subscription) => {
                tracing::info!(topic = %subscriber.topic, "Subscribed");
                backoff.reset();
                while let Some(message) = subscription.next().await {
                    match message {
                        Ok(message) => {
                            // The handler runs in the publisher's trace.
                            let cx =
                                micro_core::trace::consumer("broker", &subscriber.topic, &message.header);
                            let log = micro_core::trace::log_span(&cx);
                            tracing::Instrument::instrument(
                                micro_core::trace::FutureExt::with_context(
                                    (subscriber.handler)(message),
                                    cx.clone(),
                                ),
                                log,
                            )
                            .await;
                            micro_core::trace::finish(&cx, None);
                        }
                        Err(err) => {
                            tracing::warn!(topic = %subscriber.topic, cause = %err, "subscription broke; renewing");
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(topic = %subscriber.topic, cause = %err, "cannot subscribe; retrying");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Feeds `consumer` the events of its topic (group: the service name unless given), from the
/// service's first registration until aborted; consumes again with backoff when it breaks.
async fn consume(mut consumer: EventConsumer, service: String, mut registered: watch::Receiver<bool>) {
    if registered.wait_for(|registered| *registered).await.is_err() {
        return;
    }
    if consumer.options.group_name().is_empty() {
        consumer.options = consumer.options.with_group(service);
    }
    let topic = &consumer.topic;
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        match events::consume(topic, consumer.options.clone()).await {
            Ok(mut events) => {
                tracing::info!(%topic, group = consumer.options.group_name(), "Consuming");
                backoff.reset();
                while let Some(event) = events.next().await {
                    let event = match event {
                        Ok(event) => event,
                        Err(err) => {
                            tracing::warn!(%topic, cause = %err, "consumer broke; consuming again");
                            break;
                        }
                    };
                    // The handler runs in the publisher's trace.
                    let cx = micro_core::trace::consumer("events", topic, &event.metadata);
                    let handled = tracing::Instrument::instrument(
                        micro_core::trace::FutureExt::with_context(
                            (consumer.handler)(event.clone()),
                            cx.clone(),
                        ),
                        micro_core::trace::log_span(&cx),
                    )
                    .await;
                    micro_core::trace::finish(
                        &cx,
                        handled.as_ref().err().map(|failure| failure.reason().to_string()),
                    );
                    let settled = match handled {
                        Ok(()) => event.ack().await,
                        Err(failure @ Failure::Permanent(_)) => {
                            tracing::warn!(%topic, id = %event.id, cause = failure.reason(), "event handler failed permanently; the event goes to the group's dead letters");
                            event.nack_with(&failure).await
                        }
                        Err(failure) => {
                            tracing::warn!(%topic, id = %event.id, cause = failure.reason(), "event handler failed; the event will be delivered again");
                            // A pause before giving it back, so an event that always fails is
                            // retried once a second, not in a busy loop.
                            tokio::time::sleep(NACK_DELAY).await;
                            event.nack_with(&failure).await
                        }
                    };
                    if let Err(err) = settled {
                        tracing::warn!(%topic, id = %event.id, cause = %err, "cannot settle the event; it will be delivered again");
                    }
                }
            }
            Err(err) => tracing::warn!(%topic, cause = %err, "cannot consume; retrying"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// `incoming` with Nagle's algorithm off on every connection: gRPC writes small frames, and
/// with it on, replies on a busy connection wait for the peer's delayed ACK (about 40 ms).
fn nodelay(
    incoming: TcpListenerStream,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(incoming, |accepted| {
        if let Ok(stream) = &accepted
            && let Err(err) = stream.set_nodelay(true)
        {
            tracing::debug!(cause = %err, "cannot turn off Nagle's algorithm");
        }
        accepted
    })
}

/// The environment's value unless it is the default and the builder set one.
fn env_or(from_env: &str, default: &str, builder: Option<&str>) -> String {
    match builder {
        Some(value) if from_env == default => value.to_string(),
        _ => from_env.to_string(),
    }
}

/// The address other processes reach this one at: a wildcard bind is advertised as loopback.
fn advertised(local: SocketAddr) -> SocketAddr {
    if local.ip().is_unspecified() {
        let loopback = if local.is_ipv4() {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(loopback, local.port())
    } else {
        local
    }
}

/// Registers now and every `interval`; failures are logged and retried with backoff.
async fn heartbeat(
    platform: Arc<Platform>,
    registration: Registration,
    interval: Duration,
    registered_once: watch::Sender<bool>,
) {
    platform.session.adopt_service_account(&platform.channel, &registration.name).await;
    let identity = platform.session.describe().await;
    tracing::info!(server = %platform.address, tls = platform.tls, namespace = %platform.namespace, %identity, "Registering with the micro server");
    // Never waits longer than the heartbeat interval.
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX.min(interval));
    let mut registered = false;
    loop {
        let request = platform.request(registration.service()).await;
        let anonymous = !request.metadata().contains_key("authorization");
        match RegistryClient::new(platform.channel.clone()).register(request).await {
            Ok(_) => {
                if !registered {
                    tracing::info!(service = %registration.name, node = %registration.node_id, "Registered");
                }
                registered = true;
                registered_once.send_replace(true);
                backoff.reset();
                tokio::time::sleep(interval).await;
            }
            Err(status) => {
                registered = false;
                let tls_failure = micro_core::tls::Failure::find(&status);
                let hint = match (status.code(), tls_failure) {
                    (_, Some(micro_core::tls::Failure::Untrusted)) => {
                        " — its TLS certificate is not signed by a trusted authority: set MICRO_TLS_CA to its CA file"
                            .to_string()
                    }
                    (_, Some(failure)) => format!(" — {failure}"),
                    (tonic::Code::Unavailable, None) => {
                        format!(" — is 'micro server' running at {}?", platform.address)
                    }
                    (tonic::Code::Unauthenticated | tonic::Code::PermissionDenied, None) if anonymous => {
                        " — registering needs `micro login` or MICRO_AUTH_ID and MICRO_AUTH_SECRET"
                            .to_string()
                    }
                    _ => String::new(),
                };
                let retry = backoff.next_delay();
                tracing::warn!(
                    service = %registration.name,
                    code = ?status.code(),
                    retry_in = ?retry,
                    "Registration failed: {}{hint}",
                    status.message()
                );
                tokio::time::sleep(retry).await;
            }
        }
    }
}

async fn deregister(platform: &Platform, registration: &Registration) {
    let mut service = registration.service();
    service.endpoints.clear();
    service.descriptors.clear();
    let request = platform.request(service).await;
    match RegistryClient::new(platform.channel.clone()).deregister(request).await {
        Ok(_) => tracing::info!(service = %registration.name, node = %registration.node_id, "Deregistered"),
        Err(status) => {
            tracing::warn!(cause = %status.message(), "cannot deregister; the registry forgets this node when its TTL ends")
        }
    }
}

/// Logs to stderr, unless the program set up tracing itself: filter `MICRO_LOG`, else `RUST_LOG`
/// (default `info`), format `MICRO_LOG_FORMAT` (`text` or `json`; [`micro_core::logging`]).
fn init_tracing() -> Result<()> {
    let format = micro_core::logging::Format::from_env()
        .map_err(|err| Error::Config(format!("{}: {err}", micro_core::logging::FORMAT_VAR)))?;
    micro_core::logging::init(micro_core::logging::Role::Service, format);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_beats_builder_beats_default() {
        assert_eq!(env_or("127.0.0.1:0", "127.0.0.1:0", Some("0.0.0.0:9000")), "0.0.0.0:9000");
        assert_eq!(env_or("127.0.0.1:7000", "127.0.0.1:0", Some("0.0.0.0:9000")), "127.0.0.1:7000");
        assert_eq!(env_or("latest", "latest", None), "latest");
    }

    #[test]
    fn wildcard_binds_are_advertised_as_loopback() {
        assert_eq!(advertised("0.0.0.0:80".parse().unwrap()), "127.0.0.1:80".parse().unwrap());
        assert_eq!(advertised("[::]:80".parse().unwrap()), "[::1]:80".parse().unwrap());
        assert_eq!(advertised("10.1.2.3:80".parse().unwrap()), "10.1.2.3:80".parse().unwrap());
    }
}
