use micro_proto::registry::{Endpoint, Service};
use prost::Message;
use prost_reflect::DynamicMessage;
use serde_json::json;

use super::*;

const DEMO: &str = r#"
syntax = "proto3";
package demo;

service Demo {
  rpc Call(CallRequest) returns (CallResponse);
  rpc GetThing(CallRequest) returns (CallResponse);
  rpc Watch(CallRequest) returns (stream CallResponse);
}
service Other {
  rpc DoIt(CallRequest) returns (CallResponse);
}
enum Kind { KIND_UNSPECIFIED = 0; BIG = 1; }
message Deep { bool on = 1; }
message Inner { string b = 1; int32 n = 2; Deep deep = 3; }
message CallRequest {
  string name = 1;
  int32 count = 2;
  int64 big = 3;
  double ratio = 4;
  bool loud = 5;
  repeated string tags = 6;
  repeated int64 ids = 7;
  Inner a = 8;
  string first_name = 9;
  bytes blob = 10;
  map<string, string> labels = 11;
  Kind kind = 12;
  repeated bool switches = 13;
}
message CallResponse { string msg = 1; }
"#;

fn demo_descriptors() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.proto"), DEMO).unwrap();
    protox::compile([dir.path().join("demo.proto")], [dir.path()]).unwrap().encode_to_vec()
}

fn registered(name: &str, endpoints: &[&str], descriptors: Vec<u8>) -> Service {
    Service {
        name: name.into(),
        version: "1.0.0".into(),
        endpoints: endpoints.iter().map(|e| Endpoint { name: (*e).into(), ..Endpoint::default() }).collect(),
        descriptors,
        ..Service::default()
    }
}

fn demo() -> Catalog {
    Catalog::new("demo", vec![registered("demo", &[], demo_descriptors())]).unwrap()
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_string()).collect()
}

fn to_json(catalog: &Catalog, endpoint: &str, args: &[&str]) -> Result<Value> {
    let parsed = parse_args(&words(args))?;
    request_json(&catalog.endpoints[endpoint].input(), &parsed.flags)
}

#[test]
fn arguments_split_into_words_and_flags() {
    let parsed = parse_args(&words(&[
        "call",
        "--name=Alice",
        "--count",
        "3",
        "--loud",
        "--tags=a,b",
        "--tags",
        "c",
        "--x=a=b",
    ]))
    .unwrap();
    assert_eq!(parsed.words, ["call"]);
    let flags: Vec<(&str, Option<&str>)> =
        parsed.flags.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
    assert_eq!(
        flags,
        [
            ("name", Some("Alice")),
            ("count", Some("3")),
            ("loud", None),
            ("tags", Some("a,b")),
            ("tags", Some("c")),
            ("x", Some("a=b")),
        ]
    );
    assert!(!parsed.help);
    let trailing = parse_args(&words(&["get-thing", "--loud"])).unwrap();
    assert_eq!((trailing.words, trailing.flags), (words(&["get-thing"]), vec![("loud".to_string(), None)]));
    assert!(parse_args(&words(&["call", "--help"])).unwrap().help);
    assert!(parse_args(&words(&["-h"])).unwrap().help);
    for bad in ["--=x", "--"] {
        let err = parse_args(&words(&[bad])).unwrap_err();
        assert_eq!(err.message, format!("Invalid flag: {bad}. Expected format: --foo=bar"));
        assert_eq!(err.code, crate::error::EXIT_USAGE, "a usage error");
    }
}

#[test]
fn flags_become_typed_nested_json() {
    let demo = demo();
    let request = to_json(
        &demo,
        "Demo.Call",
        &[
            "--name=Alice",
            "--count",
            "3",
            "--big=9007199254740993",
            "--ratio=0.5",
            "--loud",
            "--tags=a,b",
            "--tags",
            "c",
            "--ids=1,2",
            "--ids=3",
            "--a_b=x",
            "--a_n=7",
            "--a_deep_on",
            "--first-name=Jo",
            "--blob=aGk=",
            r#"--labels={"k":"v"}"#,
            "--kind=big",
            "--switches=true,false",
        ],
    )
    .unwrap();
    assert_eq!(
        request,
        json!({
            "name": "Alice", "count": 3, "big": "9007199254740993", "ratio": 0.5, "loud": true,
            "tags": ["a", "b", "c"], "ids": ["1", "2", "3"],
            "a": {"b": "x", "n": 7, "deep": {"on": true}},
            "first_name": "Jo", "blob": "aGk=", "labels": {"k": "v"}, "kind": "BIG",
            "switches": [true, false],
        })
    );
    // The JSON is what the call then encodes.
    let input = demo.endpoints["Demo.Call"].input();
    let message = call::request_message(&input, &request.to_string()).unwrap();
    assert_eq!(message.get_field_by_name("big").unwrap().as_i64(), Some(9_007_199_254_740_993));
    assert_eq!(message.get_field_by_name("blob").unwrap().as_bytes().unwrap().as_ref(), b"hi");
    let bytes = message.encode_to_vec();
    assert_eq!(DynamicMessage::decode(input.clone(), bytes.as_slice()).unwrap(), message);

    // A whole message as JSON, then one of its fields; the last value of a scalar wins.
    let merged =
        to_json(&demo, "Demo.Call", &[r#"--a={"b":"y"}"#, "--a_n=1", "--name=a", "--name=b"]).unwrap();
    assert_eq!(merged, json!({"a": {"b": "y", "n": 1}, "name": "b"}));

    let fails = |args: &[&str], message: &str| {
        let err = to_json(&demo, "Demo.Call", args).unwrap_err();
        assert_eq!(err.message, message, "{args:?}");
        assert_eq!(err.code, crate::error::EXIT_USAGE, "{args:?} is a usage error");
    };
    fails(&["--nope=1"], "Unknown flag: nope");
    fails(&["--a_nope=1"], "Unknown flag: a_nope");
    fails(&["--count=x"], "Invalid value \"x\" for --count: expected int32");
    fails(&["--ids=1,x"], "Invalid value \"x\" for --ids: expected int64");
    fails(&["--loud=maybe"], "Invalid value \"maybe\" for --loud: expected bool");
    fails(&["--kind=small"], "Invalid value \"small\" for --kind: expected string");
    fails(&["--name"], "Flag --name needs a value, e.g. --name=...");
    fails(&["--labels=k=v"], "Invalid value for --labels: expected a JSON object");
    fails(&["--a_b=x", "--a=1"], "Invalid value for --a: expected a JSON object");
    fails(&["--blob=hi!"], "Invalid value \"hi!\" for --blob: expected bytes");
    fails(&["--a..b=x"], "Invalid flag: --a..b");

    // Flags and the gateway's query parameters are one mapping (micro_proto::json): the same
    // text makes the same request, whichever edge it came in by.
    let flags = to_json(
        &demo,
        "Demo.Call",
        &["--loud=1", "--kind=2", "--a.b=x", "--a[n]=3", "--labels.env=prod", "--blob=aGk", "--ratio=NaN"],
    )
    .unwrap();
    let query = micro_proto::json::query_fields(
        &input,
        "loud=1&kind=2&a.b=x&a[n]=3&labels.env=prod&blob=aGk&ratio=NaN",
    )
    .unwrap();
    assert_eq!(flags, Value::Object(query));
    assert_eq!(
        flags,
        json!({"loud": true, "kind": 2, "a": {"b": "x", "n": 3}, "labels": {"env": "prod"}, "blob": "aGk", "ratio": "NaN"})
    );
}

#[test]
fn words_name_endpoints() {
    let demo = demo();
    let endpoint = |args: &[&str]| demo.endpoint(&words(args));
    assert_eq!(endpoint(&[]).unwrap(), "Demo.Call", "the Call shortcut");
    assert_eq!(endpoint(&["call"]).unwrap(), "Demo.Call");
    for spelling in ["getThing", "get-thing", "get_thing", "GetThing", "getthing"] {
        assert_eq!(endpoint(&[spelling]).unwrap(), "Demo.GetThing", "{spelling}");
    }
    assert_eq!(endpoint(&["other", "do-it"]).unwrap(), "Other.DoIt");
    assert_eq!(endpoint(&["demo", "watch"]).unwrap(), "Demo.Watch");
    let extra = endpoint(&["a", "b", "c"]).unwrap_err();
    assert_eq!(
        (extra.message.as_str(), extra.code),
        ("Incorrect number of arguments", crate::error::EXIT_USAGE)
    );
    assert_eq!(
        endpoint(&["get-nothing"]).unwrap_err().message,
        "Endpoint Demo.GetNothing not found for service demo"
    );

    // A service whose one handler is not named after it still has the Call shortcut; and only
    // the endpoints it registered are offered.
    let greeter = Catalog::new(
        "greeter",
        vec![registered("greeter", &["Demo.Call", "Demo.Watch"], demo_descriptors())],
    )
    .unwrap();
    assert_eq!(greeter.endpoints.keys().collect::<Vec<_>>(), ["Demo.Call", "Demo.Watch"]);
    assert_eq!(greeter.endpoint(&[]).unwrap(), "Demo.Call");
    assert_eq!(greeter.endpoint(&words(&["watch"])).unwrap(), "Demo.Watch");
    let target = target("greeter", &greeter.endpoints["Demo.Watch"]).unwrap();
    assert_eq!(target.path.as_str(), "/demo.Demo/Watch", "the path the service's own server routes on");
    assert!(target.method.is_server_streaming());

    let empty = Catalog::new("bare", vec![registered("bare", &[], Vec::new())]).unwrap_err();
    assert_eq!(empty.message, "Service bare registered no descriptors, so its requests cannot be encoded");
}

#[test]
fn help_is_generated_from_descriptors() {
    let demo = demo();
    assert_eq!(
        demo.help(),
        "NAME:\n\tmicro demo\n\nVERSION:\n\t1.0.0\n\nUSAGE:\n\tmicro demo [command]\n\nCOMMANDS:\n\
         \tcall\n\tgetThing\n\tother doIt\n\twatch\n"
    );
    let call = demo.command_help(&words(&["call"])).unwrap();
    assert!(
        call.starts_with("NAME:\n\tmicro demo call\n\nUSAGE:\n\tmicro demo call [flags]\n\nFLAGS:\n"),
        "{call}"
    );
    for line in [
        "\t--name string\n",
        "\t--count int32\n",
        "\t--big int64\n",
        "\t--ratio float64\n",
        "\t--loud bool\n",
        "\t--tags []string\n",
        "\t--ids []int64\n",
        "\t--a_b string\n",
        "\t--a_deep_on bool\n",
        "\t--first_name string\n",
        "\t--blob bytes\n",
        "\t--labels map\n",
        "\t--kind string\n",
    ] {
        assert!(call.contains(line), "{line:?} missing from {call}");
    }
    assert!(demo.command_help(&words(&["nope"])).is_err());

    // Core services are listed in the registry with every core descriptor; theirs are their package's.
    let core = registered("registry", &[], micro_proto::FILE_DESCRIPTOR_SET.to_vec());
    let registry = Catalog::new("registry", vec![core]).unwrap();
    assert!(
        registry.endpoints.keys().all(|endpoint| endpoint.starts_with("Registry.")),
        "{:?}",
        registry.endpoints.keys()
    );
    let help = registry.help();
    assert!(help.contains("\tgetService\n\tlistServices\n"), "{help}");
    let get = registry.command_help(&words(&["get-service"])).unwrap();
    assert!(get.contains("\t--service string\n") && get.contains("\t--options_domain string\n"), "{get}");
}
