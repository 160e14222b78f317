//! A gRPC codec for messages known only at run time, from descriptors: what `micro call`, the
//! HTTP gateway and dynamic CLI commands use to talk to any service.

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A gRPC codec for messages whose types are known only at run time: it encodes any
/// [`DynamicMessage`] and decodes responses as `output`.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

impl DynamicCodec {
    pub fn new(output: MessageDescriptor) -> Self {
        Self { output }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder { output: self.output.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, buf: &mut EncodeBuf<'_>) -> std::result::Result<(), Status> {
        item.encode(buf).map_err(|err| Status::internal(format!("cannot encode the request: {err}")))
    }
}

#[derive(Debug, Clone)]
pub struct DynamicDecoder {
    output: MessageDescriptor,
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> std::result::Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.output.clone(), buf)
            .map(Some)
            .map_err(|err| Status::internal(format!("cannot decode the response: {err}")))
    }
}

/// The endpoints of a registered `service` (named `name`) that its descriptors let a caller
/// encode, `Handler.Method` → method: those it registered that `pool` describes; when it
/// registered none, the gRPC services of the package named after it (the core services, whose
/// descriptor set holds every core proto), else every service in `pool`. `micro <service>`'s
/// generated commands and the web dashboard both list endpoints by this rule.
pub fn endpoints(
    name: &str,
    service: &crate::registry::Service,
    pool: &prost_reflect::DescriptorPool,
) -> std::collections::BTreeMap<String, prost_reflect::MethodDescriptor> {
    let all = || {
        pool.services()
            .flat_map(|handler| handler.methods().collect::<Vec<_>>())
            .map(|method| (format!("{}.{}", method.parent_service().name(), method.name()), method))
    };
    let mut endpoints = std::collections::BTreeMap::new();
    if !service.endpoints.is_empty() {
        for (endpoint, method) in all() {
            let registered = service.endpoints.iter().any(|e| e.name == endpoint);
            // Where two packages declare the same `Handler.Method`, the service's own wins.
            let own = method.parent_service().package_name() == name;
            if registered && (own || !endpoints.contains_key(&endpoint)) {
                endpoints.insert(endpoint, method);
            }
        }
        return endpoints;
    }
    let own: std::collections::BTreeMap<_, _> =
        all().filter(|(_, method)| method.parent_service().package_name() == name).collect();
    if !own.is_empty() {
        return own;
    }
    for (endpoint, method) in all() {
        endpoints.entry(endpoint).or_insert(method);
    }
    endpoints
}
