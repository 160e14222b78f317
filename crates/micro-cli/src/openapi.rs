//! `micro openapi [service]`: the OpenAPI 3.1 document of the services the gateway serves in the
//! current namespace (or of one), the bytes `GET /openapi.json` answers: built by the gateway's
//! own [`micro_server::gateway::openapi::document`] from `Registry.ListServices`, which the
//! server admits as it admits the gateway's listing (docs/clients.md, "OpenAPI").

use clap::Args;
use micro_proto::registry::registry_client::RegistryClient;
use micro_proto::registry::{ListRequest, Options};

use crate::error::{CliError, Result};
use crate::{Global, out};

#[derive(Args, Debug)]
pub struct OpenapiArgs {
    /// Describe only this service [default: every service of the namespace]
    pub service: Option<String>,
}

pub async fn run(global: &Global, args: OpenapiArgs) -> Result<()> {
    let client = global.connect().await?;
    let mut registry = RegistryClient::new(client.channel.clone());
    let request = client.request(ListRequest {
        options: Some(Options { domain: client.namespace.clone(), ..Default::default() }),
    });
    let listed = registry.list_services(request).await.map_err(|status| client.error(status))?.into_inner();
    let only = args.service.as_deref();
    let document = micro_server::gateway::openapi::document(&client.namespace, &listed.services, only)
        .ok_or_else(|| CliError::new(format!("service {} not found", only.unwrap_or_default())))?;
    out(&String::from_utf8_lossy(&document));
    Ok(())
}
