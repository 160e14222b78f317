//! Generated code for micro's wire contract, fenced off from hand-written code.
//!
//! One module per protobuf package under the repository's `proto/` folder, each with its
//! messages, a tonic client (`<svc>_client`) and server (`<svc>_server`). [`FILE_DESCRIPTOR_SET`]
//! holds every core service's descriptors for reflection, the gateway and `micro call`.
//!
//! Beside them, hand-written: [`dynamic`], the gRPC codec for messages known only from
//! descriptors, and [`json`], the one mapping of text (query strings, CLI flags) and JSON to
//! messages and back that the gateway and the CLI share; [`openapi`], the OpenAPI 3.1 schemas of
//! that mapping, for the gateway's `/openapi.json` and `micro openapi`; [`proto_file`], `.proto`
//! source rebuilt from descriptors, for `micro proto`.

#![allow(clippy::all, missing_docs, reason = "generated code")]

/// The encoded `google.protobuf.FileDescriptorSet` of every core proto.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/micro_descriptor.bin"));

pub mod dynamic;
mod ext;
pub mod json;
pub mod openapi;
pub mod proto_file;

pub mod auth {
    tonic::include_proto!("auth");
}

pub mod broker {
    tonic::include_proto!("broker");
}

pub mod config {
    tonic::include_proto!("config");
}

pub mod debug {
    tonic::include_proto!("debug");
}

pub mod errors {
    tonic::include_proto!("errors");
}

pub mod events {
    tonic::include_proto!("events");
}

pub mod jobs {
    tonic::include_proto!("jobs");
}

pub mod registry {
    tonic::include_proto!("registry");
}

pub mod runtime {
    tonic::include_proto!("runtime");
}

pub mod store {
    tonic::include_proto!("store");
}
