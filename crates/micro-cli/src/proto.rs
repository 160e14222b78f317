//! `micro proto <service> [--out DIR]`: writes the `.proto` files of a registered service,
//! rebuilt from the descriptors it registered ([`micro_proto::proto_file`]), so that any
//! language's protobuf compiler can generate a client (docs/clients.md, "Getting the protos").
//! The files are those declaring the service's endpoints ([`micro_proto::dynamic::endpoints`],
//! the rule `micro call` and the gateway use) and their imports, without the standard
//! `google/protobuf/*` files every compiler ships ([`micro_proto::proto_file::service_protos`],
//! which the dashboard's download uses too).

use std::path::{Component, Path, PathBuf};

use clap::Args;
use micro_proto::registry::registry_client::RegistryClient;
use micro_proto::registry::{GetRequest, Options};

use crate::error::{CliError, Result};
use crate::{Global, out};

#[derive(Args, Debug)]
pub struct ProtoArgs {
    /// The service whose protos to write
    pub service: String,
    /// The folder to write them into (created if missing); files keep their import paths
    #[arg(long, short = 'o', value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

pub async fn run(global: &Global, args: ProtoArgs) -> Result<()> {
    let client = global.connect().await?;
    let mut registry = RegistryClient::new(client.channel.clone());
    let request = client.request(GetRequest {
        service: args.service.clone(),
        options: Some(Options { domain: client.namespace.clone(), ..Default::default() }),
    });
    let versions = registry.get_service(request).await.map_err(|status| client.error(status))?.into_inner();
    let files = micro_proto::proto_file::service_protos(&args.service, &versions.services)
        .map_err(|err| CliError::new(err.to_string()))?;
    let mut written = String::new();
    for (name, source) in files {
        let path = args.out.join(relative(&name)?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| CliError::new(format!("cannot create {}: {err}", parent.display())))?;
        }
        std::fs::write(&path, source)
            .map_err(|err| CliError::new(format!("cannot write {}: {err}", path.display())))?;
        written.push_str(&format!("{}\n", path.display()));
    }
    out(&written);
    Ok(())
}

/// A file name from the registry as a path inside the output folder: relative, without `..`
/// (descriptors come from whoever registered the service).
fn relative(name: &str) -> Result<&Path> {
    let path = Path::new(name);
    let inside = path.components().all(|part| matches!(part, Component::Normal(_)));
    if !inside || name.is_empty() {
        return Err(CliError::new(format!("refusing to write the proto file {name:?}: not a relative path")));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_relative_names_are_written() {
        assert!(super::relative("helloworld/helloworld.proto").is_ok());
        assert!(super::relative("a.proto").is_ok());
        for bad in ["/etc/x.proto", "../x.proto", "a/../../x.proto", "", "./a/./b.proto"] {
            assert!(super::relative(bad).is_err(), "{bad}");
        }
    }
}
