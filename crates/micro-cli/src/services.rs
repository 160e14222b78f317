//! `micro services`: the services registered in the current namespace, one name per line, or
//! with `--output json` an array of `{name, versions}`.

use std::collections::BTreeMap;

use clap::Args;
use micro_proto::registry::registry_client::RegistryClient;
use micro_proto::registry::{ListRequest, Options};

use crate::error::Result;
use crate::table::Output;
use crate::{Global, out};

#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// Output format: names, one a line, or JSON
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub async fn run(global: &Global, args: ServicesArgs) -> Result<()> {
    let client = global.connect().await?;
    let mut registry = RegistryClient::new(client.channel.clone());
    let request = client.request(ListRequest {
        options: Some(Options { domain: client.namespace.clone(), ..Default::default() }),
    });
    let services = registry.list_services(request).await.map_err(|status| client.error(status))?.into_inner();
    let services = services.services.into_iter().map(|service| (service.name, service.version));
    out(&render(services, args.output));
    Ok(())
}

/// The registered `(name, version)` pairs as a listing: each name once, sorted, with its
/// versions sorted.
fn render(services: impl IntoIterator<Item = (String, String)>, output: Output) -> String {
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, version) in services {
        versions.entry(name).or_default().push(version);
    }
    match output {
        Output::Table => versions.keys().map(|name| format!("{name}\n")).collect(),
        Output::Json => {
            let list: Vec<_> = versions
                .into_iter()
                .map(|(name, mut versions)| {
                    versions.sort();
                    versions.dedup();
                    serde_json::json!({ "name": name, "versions": versions })
                })
                .collect();
            crate::table::json(&list)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_is_listed_once_with_its_versions() {
        let registered = || {
            [("store", "latest"), ("helloworld", "v2"), ("helloworld", "v1"), ("helloworld", "v1")]
                .map(|(name, version)| (name.to_string(), version.to_string()))
        };
        assert_eq!(render(registered(), Output::Table), "helloworld\nstore\n");
        let json: serde_json::Value = serde_json::from_str(&render(registered(), Output::Json)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"name": "helloworld", "versions": ["v1", "v2"]},
                {"name": "store", "versions": ["latest"]},
            ])
        );
    }
}
