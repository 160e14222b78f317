//! `micro auth`: list, create and delete accounts and rules (docs/compatibility.md §2.8). Every call acts in
//! the current namespace unless `--namespace` names another.

use clap::{Args, Subcommand};
use micro_proto::auth::accounts_client::AccountsClient;
use micro_proto::auth::auth_client::AuthClient;
use micro_proto::auth::rules_client::RulesClient;
use micro_proto::auth::{
    Access, CreateRequest, DeleteAccountRequest, DeleteRequest, GenerateRequest, ListAccountsRequest,
    ListRequest, Options, Resource, Rule,
};

use crate::client::Client;
use crate::error::{CliError, Result};
use crate::table::Output;
use crate::{Global, out, table, unrecognized_subcommand};

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// List accounts or rules
    List {
        #[command(subcommand)]
        what: ListCommand,
    },
    /// Create an account or a rule
    Create {
        #[command(subcommand)]
        what: CreateCommand,
    },
    /// Delete an account or a rule
    Delete {
        #[command(subcommand)]
        what: DeleteCommand,
    },
    #[command(external_subcommand)]
    Unknown(Vec<String>),
}

#[derive(Args, Debug, Default)]
pub struct NamespaceArg {
    /// Namespace to act in [default: the current one]
    #[arg(long)]
    namespace: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ListCommand {
    /// List the accounts of a namespace
    Accounts(ListArgs),
    /// List the rules of a namespace
    Rules(ListArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    namespace: NamespaceArg,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Subcommand, Debug)]
pub enum CreateCommand {
    /// Create an account; prints it once with its secret
    Account {
        id: String,
        /// Secret (password) [default: a random one, printed]
        #[arg(long)]
        secret: Option<String>,
        /// Comma-separated scopes
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Account name [default: the id]
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
    /// Create a rule granting or denying a scope access to a resource
    Rule {
        id: String,
        /// Scope the rule applies to: blank for everyone (public), * for any account
        #[arg(long, default_value = "")]
        scope: String,
        /// Resource as type:name:endpoint, e.g. service:store:* or *:*:*
        #[arg(long)]
        resource: String,
        /// granted or denied
        #[arg(long, default_value = "granted")]
        access: String,
        /// Higher priorities are considered first
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeleteCommand {
    /// Delete an account
    Account {
        id: String,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
    /// Delete a rule
    Rule {
        id: String,
        #[command(flatten)]
        namespace: NamespaceArg,
    },
}

fn options(client: &Client, namespace: NamespaceArg) -> Option<Options> {
    Some(Options { namespace: namespace.namespace.unwrap_or_else(|| client.namespace.clone()) })
}

pub async fn run(global: &Global, command: AuthCommand) -> Result<()> {
    if let AuthCommand::Unknown(args) = &command {
        return Err(unrecognized_subcommand("auth", args));
    }
    let client = global.connect().await?;
    let fail = |status| client.error(status);
    match command {
        AuthCommand::List { what: ListCommand::Accounts(ListArgs { namespace, output }) } => {
            let request = client.request(ListAccountsRequest { options: options(&client, namespace) });
            let reply = AccountsClient::new(client.channel.clone()).list(request).await.map_err(fail)?;
            if output == Output::Json {
                out(&accounts_json(&reply.into_inner().accounts));
                return Ok(());
            }
            let mut rows = vec![vec!["ID".into(), "Name".into(), "Scopes".into(), "Metadata".into()]];
            for account in reply.into_inner().accounts {
                let scopes =
                    if account.scopes.is_empty() { "n/a".to_string() } else { account.scopes.join(", ") };
                let mut metadata: Vec<String> =
                    account.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
                metadata.sort();
                let metadata = if metadata.is_empty() { "n/a".to_string() } else { metadata.join(" ") };
                rows.push(vec![account.id, account.name, scopes, metadata]);
            }
            out(&table::render(&rows));
        }
        AuthCommand::List { what: ListCommand::Rules(ListArgs { namespace, output }) } => {
            let request = client.request(ListRequest { options: options(&client, namespace) });
            let reply = RulesClient::new(client.channel.clone()).list(request).await.map_err(fail)?;
            let mut rules = reply.into_inner().rules;
            rules.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
            if output == Output::Json {
                out(&rules_json(&rules));
                return Ok(());
            }
            let mut rows = vec![vec![
                "ID".into(),
                "Scope".into(),
                "Access".into(),
                "Resource".into(),
                "Priority".into(),
            ]];
            for rule in rules {
                let scope = if rule.scope.is_empty() { "<public>".to_string() } else { rule.scope.clone() };
                let access = access_name(rule.access);
                let resource = rule
                    .resource
                    .map_or_else(String::new, |r| format!("{}:{}:{}", r.r#type, r.name, r.endpoint));
                rows.push(vec![rule.id, scope, access.to_string(), resource, rule.priority.to_string()]);
            }
            out(&table::render(&rows));
        }
        AuthCommand::Create { what: CreateCommand::Account { id, secret, scopes, name, namespace } } => {
            let request = GenerateRequest {
                id,
                secret: secret.unwrap_or_default(),
                scopes,
                name: name.unwrap_or_default(),
                options: options(&client, namespace),
                ..Default::default()
            };
            let reply = AuthClient::new(client.channel.clone())
                .generate(client.request(request))
                .await
                .map_err(fail)?;
            let account =
                reply.into_inner().account.ok_or_else(|| CliError::new("the server returned no account"))?;
            let json = serde_json::json!({
                "id": account.id,
                "type": account.r#type,
                "issuer": account.issuer,
                "metadata": account.metadata,
                "scopes": account.scopes,
                "secret": account.secret,
                "name": account.name,
            });
            out(&format!("Account created: {json}\n"));
        }
        AuthCommand::Create {
            what: CreateCommand::Rule { id, scope, resource, access, priority, namespace },
        } => {
            let resource = parse_resource(&resource)?;
            let access = parse_access(&access)?;
            let rule = Rule { id, scope, resource: Some(resource), access: access as i32, priority };
            let request = CreateRequest { rule: Some(rule), options: options(&client, namespace) };
            RulesClient::new(client.channel.clone()).create(client.request(request)).await.map_err(fail)?;
            out("Rule created\n");
        }
        AuthCommand::Delete { what: DeleteCommand::Account { id, namespace } } => {
            let request = DeleteAccountRequest { id, options: options(&client, namespace) };
            AccountsClient::new(client.channel.clone())
                .delete(client.request(request))
                .await
                .map_err(fail)?;
        }
        AuthCommand::Delete { what: DeleteCommand::Rule { id, namespace } } => {
            let request = DeleteRequest { id, options: options(&client, namespace) };
            RulesClient::new(client.channel.clone()).delete(client.request(request)).await.map_err(fail)?;
            out("Rule deleted\n");
        }
        AuthCommand::Unknown(_) => unreachable!("handled before connecting"),
    }
    Ok(())
}

fn access_name(access: i32) -> &'static str {
    match Access::try_from(access) {
        Ok(Access::Granted) => "GRANTED",
        Ok(Access::Denied) => "DENIED",
        _ => "UNKNOWN",
    }
}

/// `auth list accounts --output json`: an array of `{id, name, type, issuer, scopes, metadata}`
/// (never the secret).
fn accounts_json(accounts: &[micro_proto::auth::Account]) -> String {
    let list: Vec<_> = accounts
        .iter()
        .map(|account| {
            serde_json::json!({
                "id": account.id,
                "name": account.name,
                "type": account.r#type,
                "issuer": account.issuer,
                "scopes": account.scopes,
                "metadata": account.metadata.iter().collect::<std::collections::BTreeMap<_, _>>(),
            })
        })
        .collect();
    table::json(&list)
}

/// `auth list rules --output json`: an array of `{id, scope, access, resource, priority}` in the
/// table's order, `scope` empty for everyone and `resource` as `type:name:endpoint`.
fn rules_json(rules: &[Rule]) -> String {
    let list: Vec<_> = rules
        .iter()
        .map(|rule| {
            let resource = rule.resource.as_ref().map(|r| format!("{}:{}:{}", r.r#type, r.name, r.endpoint));
            serde_json::json!({
                "id": rule.id,
                "scope": rule.scope,
                "access": access_name(rule.access),
                "resource": resource.unwrap_or_default(),
                "priority": rule.priority,
            })
        })
        .collect();
    table::json(&list)
}

fn parse_access(text: &str) -> Result<Access> {
    match text.to_ascii_lowercase().as_str() {
        "granted" => Ok(Access::Granted),
        "denied" => Ok(Access::Denied),
        _ => Err(CliError::usage(format!("Invalid access: {text}, must be granted or denied"))),
    }
}

fn parse_resource(text: &str) -> Result<Resource> {
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        [kind, name, endpoint] if !kind.is_empty() && !name.is_empty() && !endpoint.is_empty() => {
            Ok(Resource {
                r#type: (*kind).to_string(),
                name: (*name).to_string(),
                endpoint: (*endpoint).to_string(),
            })
        }
        _ => Err(CliError::usage("Invalid resource, must be in the format type:name:endpoint")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_type_name_endpoint() {
        let resource = parse_resource("service:store:Store.Read").unwrap();
        assert_eq!(
            (resource.r#type.as_str(), resource.name.as_str(), resource.endpoint.as_str()),
            ("service", "store", "Store.Read")
        );
        assert!(parse_resource("*:*:*").is_ok());
        assert_eq!(parse_resource("a:b").unwrap_err().code, crate::error::EXIT_USAGE);
        assert_eq!(parse_access("maybe").unwrap_err().code, crate::error::EXIT_USAGE);
        assert_eq!(parse_access("DENIED").unwrap(), Access::Denied);
        assert_eq!(
            parse_access("maybe").unwrap_err().message,
            "Invalid access: maybe, must be granted or denied"
        );
        for bad in ["", "a:b", "a:b:c:d", "a::c"] {
            assert_eq!(
                parse_resource(bad).unwrap_err().message,
                "Invalid resource, must be in the format type:name:endpoint"
            );
        }
    }
}
