//! `micro services`: the services registered in the current namespace, one name per line.

use micro_proto::registry::registry_client::RegistryClient;
use micro_proto::registry::{ListRequest, Options};

use crate::error::Result;
use crate::{Global, out};

pub async fn run(global: &Global) -> Result<()> {
    let client = global.connect().await?;
    let mut registry = RegistryClient::new(client.channel.clone());
    let request = client.request(ListRequest {
        options: Some(Options { domain: client.namespace.clone(), ..Default::default() }),
    });
    let services = registry.list_services(request).await.map_err(|status| client.error(status))?.into_inner();
    let mut names: Vec<String> = services.services.into_iter().map(|service| service.name).collect();
    names.sort();
    names.dedup();
    out(&names.iter().map(|name| format!("{name}\n")).collect::<String>());
    Ok(())
}
