//! The `config.Config` gRPC service, called in-process through its trait.

use std::sync::Arc;
use std::time::Duration;

use micro_config::grpc::ConfigService;
use micro_config::{Config, SecretKey};
use micro_core::Context;
use micro_proto::config::config_server::Config as _;
use micro_proto::config::{
    DeleteRequest, GetRequest, Options, ReadRequest, SetRequest, Value as WireValue, WatchRequest,
    WatchResponse,
};
use micro_store::memory::MemoryStore;
use tokio_stream::StreamExt;
use tonic::{Code, Request};

fn service() -> ConfigService {
    let key = SecretKey::generate().expect("the OS has randomness");
    ConfigService::new(Arc::new(Config::new(Arc::new(MemoryStore::new()), key)))
}

/// A request as the server's interceptor hands it over: with a context for `namespace`.
fn in_namespace<T>(namespace: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(Context::member(namespace));
    request
}

/// A request from a `micro` account.
fn admin<T>(message: T) -> Request<T> {
    in_namespace("micro", message)
}

fn set(path: &str, data: &str, secret: bool) -> SetRequest {
    SetRequest {
        namespace: String::new(),
        path: path.to_string(),
        value: Some(WireValue { data: data.to_string(), format: "json".to_string() }),
        options: Some(Options { secret }),
    }
}

fn get(path: &str, secret: bool) -> GetRequest {
    GetRequest { namespace: String::new(), path: path.to_string(), options: Some(Options { secret }) }
}

async fn get_data(service: &ConfigService, request: Request<GetRequest>) -> Result<String, tonic::Status> {
    let response = service.get(request).await?.into_inner();
    let value = response.value.expect("Get always answers with a value");
    assert_eq!(value.format, "json");
    Ok(value.data)
}

#[tokio::test]
async fn set_get_delete_read_over_grpc() {
    let service = service();

    let status = service.get(admin(get("a", false))).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "Not found"));
    let status = service.delete(admin(DeleteRequest { namespace: String::new(), path: "a".into() })).await;
    assert_eq!(status.unwrap_err().code(), Code::NotFound);

    service.set(admin(set("a.b", r#"{"c":1}"#, false))).await.unwrap();
    assert_eq!(get_data(&service, admin(get("a", false))).await.unwrap(), r#"{"b":{"c":1}}"#);
    assert_eq!(get_data(&service, admin(get("a.b.c", false))).await.unwrap(), "1");
    assert_eq!(get_data(&service, admin(get("a.x", false))).await.unwrap(), "null", "missing path");

    service.set(admin(set("mail", r#""Micro Team <support@m3o.com>""#, false))).await.unwrap();
    assert_eq!(
        get_data(&service, admin(get("mail", false))).await.unwrap(),
        r#""Micro Team <support@m3o.com>""#,
        "no HTML escaping on the wire"
    );

    service.set(admin(set("key.pin", "42", true))).await.unwrap();
    assert_eq!(get_data(&service, admin(get("key.pin", false))).await.unwrap(), r#""[secret]""#);
    assert_eq!(get_data(&service, admin(get("key.pin", true))).await.unwrap(), "42");
    let no_options = GetRequest { namespace: String::new(), path: "key".into(), options: None };
    assert_eq!(get_data(&service, admin(no_options)).await.unwrap(), r#"{"pin":"[secret]"}"#);

    let read = service
        .read(admin(ReadRequest { namespace: String::new(), path: "a".into() }))
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!((read.namespace.as_str(), read.path.as_str()), ("micro", "a"));
    let change_set = read.change_set.unwrap();
    assert_eq!((change_set.data.as_str(), change_set.format.as_str()), (r#"{"b":{"c":1}}"#, "json"));
    assert_eq!(change_set.checksum.len(), 16);
    assert!(change_set.timestamp > 1_600_000_000);

    service.delete(admin(DeleteRequest { namespace: String::new(), path: "a.b".into() })).await.unwrap();
    assert_eq!(get_data(&service, admin(get("a", false))).await.unwrap(), "{}");
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments() {
    let service = service();
    let missing_value = SetRequest { value: None, ..set("a", "1", false) };
    let cases = [
        (missing_value, "missing value"),
        (set("a", "not json", false), "not valid JSON"),
        (set("a", "", false), "not valid JSON"),
        (set("a..b", "1", false), "empty segment"),
        (set("", "1", false), "only be set to an object"),
        (set("a", &"1".repeat(300 * 1024), false), "larger than the limit"),
        (SetRequest { namespace: "Not Valid".into(), ..set("a", "1", false) }, "invalid namespace"),
    ];
    for (request, message) in cases {
        let status = service.set(admin(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(status.message().contains(message), "{message}: {}", status.message());
    }
    let status = service.get(admin(get("a", false))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "nothing was stored");

    service.set(admin(set("a", "1", false))).await.unwrap();
    let root = DeleteRequest { namespace: String::new(), path: String::new() };
    let status = service.delete(admin(root)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn namespaces_come_from_the_request_or_the_context() {
    let service = service();
    service.set(in_namespace("foo", set("who", r#""foo""#, false))).await.unwrap();
    service.set(admin(set("who", r#""micro""#, false))).await.unwrap();

    assert_eq!(get_data(&service, in_namespace("foo", get("who", false))).await.unwrap(), r#""foo""#);
    assert_eq!(get_data(&service, admin(get("who", false))).await.unwrap(), r#""micro""#);
    let named = GetRequest { namespace: "foo".into(), ..get("who", false) };
    assert_eq!(get_data(&service, admin(named)).await.unwrap(), r#""foo""#, "micro may name any namespace");

    let other = GetRequest { namespace: "micro".into(), ..get("who", false) };
    let status = service.get(in_namespace("foo", other)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "foo may not reach micro");
    let status = service.get(in_namespace("bar", get("who", false))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

async fn next(stream: &mut micro_config::grpc::WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a change arrives in time")
        .expect("the stream is open")
        .expect("no error")
}

#[tokio::test]
async fn watch_streams_sets_and_deletes() {
    let service = service();
    let watch = WatchRequest { namespace: String::new(), path: "db".into(), options: None };
    let mut stream = service.watch(admin(watch)).await.unwrap().into_inner();
    let revealing = WatchRequest {
        namespace: String::new(),
        path: "db.password".into(),
        options: Some(Options { secret: true }),
    };
    let mut revealed = service.watch(admin(revealing)).await.unwrap().into_inner();

    service.set(admin(set("db.host", r#""localhost""#, false))).await.unwrap();
    let change = next(&mut stream).await;
    assert_eq!(
        (change.namespace.as_str(), change.path.as_str(), change.action.as_str()),
        ("micro", "db.host", "set")
    );
    assert_eq!(change.value.unwrap().data, r#"{"host":"localhost"}"#);
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now_ms - change.timestamp).abs() < 60_000, "unix milliseconds");

    service.set(admin(set("db.password", r#""hunter2""#, true))).await.unwrap();
    assert_eq!(next(&mut stream).await.value.unwrap().data, r#"{"host":"localhost","password":"[secret]"}"#);
    assert_eq!(next(&mut revealed).await.value.unwrap().data, r#""hunter2""#);

    service.delete(admin(DeleteRequest { namespace: String::new(), path: "db".into() })).await.unwrap();
    let change = next(&mut stream).await;
    assert_eq!((change.action.as_str(), change.value.unwrap().data.as_str()), ("delete", "null"));

    let bad = WatchRequest { namespace: String::new(), path: "a..b".into(), options: None };
    assert_eq!(service.watch(admin(bad)).await.err().unwrap().code(), Code::InvalidArgument);
}
