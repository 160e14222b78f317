//! The runtime through the server's gRPC listener: the gate, upload, create, read, logs, delete,
//! and no service process outliving the server.

use std::time::Duration;

use micro_proto::auth::auth_client::AuthClient;
use micro_proto::runtime::runtime_client::RuntimeClient;
use micro_proto::runtime::source_client::SourceClient;
use micro_proto::runtime::{
    CreateOptions, CreateRequest, DeleteRequest, LogsRequest, ReadOptions, ReadRequest, Resource, Service,
    UploadRequest,
};
use tonic::Request;
use tonic::transport::Channel;

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn logs(channel: &Channel, token: &str, service: &str) -> Result<Vec<String>, tonic::Status> {
    let mut client = RuntimeClient::new(channel.clone());
    let request = LogsRequest { service: service.into(), count: 50, ..Default::default() };
    let mut stream = client.logs(authed(request, token)).await?.into_inner();
    let mut lines = Vec::new();
    while let Some(record) = stream.message().await? {
        lines.push(record.message);
    }
    Ok(lines)
}

#[tokio::test]
async fn runtime_serves_through_the_gate_and_stops_services_with_the_server() {
    let home = tempfile::tempdir().unwrap();
    let config = micro_server::Config {
        store: micro_server::config::StoreConfig { backend: "memory".into(), ..Default::default() },
        ..Default::default()
    };
    let platform = micro_server::Platform::open(home.path(), &config, true).await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = grpc.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(platform.serve(
        grpc,
        http,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    let token = AuthClient::new(channel.clone())
        .token(micro_proto::auth::TokenRequest {
            id: "admin".into(),
            secret: "micro".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .access_token;

    // Anonymous callers are refused.
    let mut runtime = RuntimeClient::new(channel.clone());
    let err = runtime.read(ReadRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // Upload a gzip'd tar of a shell service.
    let src = home.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("run.sh"),
        "echo \"pid $$\"\necho \"Listening on x server=$MICRO_SERVER_ADDRESS\"\nexec sleep 60\n",
    )
    .unwrap();
    let tarball = home.path().join("src.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&tarball).unwrap();
    let mut messages = vec![UploadRequest {
        service: Some(Service { name: "shell".into(), version: "latest".into(), ..Default::default() }),
        data: Vec::new(),
    }];
    messages.extend(bytes.chunks(1024).map(|chunk| UploadRequest { service: None, data: chunk.to_vec() }));
    let id = SourceClient::new(channel.clone())
        .upload(authed(tokio_stream::iter(messages), &token))
        .await
        .unwrap()
        .into_inner()
        .id;
    assert!(id.starts_with("source://shell:latest:"), "{id}");

    let create = CreateRequest {
        resource: Some(Resource {
            service: Some(Service {
                name: "shell".into(),
                source: id.clone(),
                metadata: [("source".to_string(), "./shell".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        options: Some(CreateOptions { command: vec!["sh".into(), "run.sh".into()], ..Default::default() }),
    };
    runtime.create(authed(create.clone(), &token)).await.unwrap();
    let err = runtime.create(authed(create, &token)).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::AlreadyExists, "service shell already exists"));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let service = loop {
        let read =
            ReadRequest { options: Some(ReadOptions { service: "shell".into(), ..Default::default() }) };
        let services = runtime.read(authed(read, &token)).await.unwrap().into_inner().services;
        if services.first().is_some_and(|s| s.metadata["status"] == "running") {
            break services[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{services:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((service.version.as_str(), service.status), ("latest", 4));
    assert_eq!(service.metadata["source"], "./shell");
    assert_eq!(service.metadata["owner"], "admin");
    assert_eq!(service.metadata["group"], "micro");

    let lines = logs(&channel, &token, "shell").await.unwrap();
    assert!(lines.contains(&format!("Listening on x server={address}")), "{lines:?}");
    let pid: i32 = lines.iter().find_map(|l| l.strip_prefix("pid ")).unwrap().parse().unwrap();
    let err = logs(&channel, &token, "nope").await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::NotFound, "Logs not found for service nope"));

    // Delete stops the process; a second service is stopped by the server's shutdown.
    let delete = DeleteRequest {
        resource: Some(Resource {
            service: Some(Service { name: "shell".into(), ..Default::default() }),
            ..Default::default()
        }),
        options: None,
    };
    runtime.delete(authed(delete, &token)).await.unwrap();
    assert!(!alive(pid), "the deleted service's process is gone");

    let create = CreateRequest {
        resource: Some(Resource {
            service: Some(Service {
                name: "second".into(),
                source: src.to_string_lossy().into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        options: Some(CreateOptions { command: vec!["sh".into(), "run.sh".into()], ..Default::default() }),
    };
    runtime.create(authed(create, &token)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let second = loop {
        let lines = logs(&channel, &token, "second").await.unwrap_or_default();
        if let Some(pid) = lines.iter().find_map(|l| l.strip_prefix("pid ")) {
            break pid.parse::<i32>().unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(channel);
    drop(runtime);
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    assert!(!alive(second), "no service outlives the server");
}

/// Whether `pid` still exists (and is not a zombie awaiting its parent).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}
