//! The `auth.Auth`, `auth.Accounts` and `auth.Rules` gRPC services (docs/compatibility.md §3.2) over an
//! [`Auth`].
//!
//! - **Namespace.** `options.namespace` when set, else the request [`Context`]'s (inserted by
//!   the server's interceptor; anonymous in `micro` without one).
//! - **Authorisation.** Every RPC except `Auth.Token` and `Auth.Inspect` requires
//!   [`Context::authorize`] for that namespace: no account → `UNAUTHENTICATED`, an account of
//!   another namespace → `PERMISSION_DENIED`.
//! - **Errors** become [`Status`] in one place, `From<AuthError> for Status`; store and
//!   internal failures are logged and sent as a summary; a refused login (a login limit, or the
//!   hashing queue full) is `RESOURCE_EXHAUSTED` with [`RETRY_AFTER`].
//! - **Peer.** `Auth.Token` counts failed logins per peer: the connection's remote address, or
//!   the HTTP client the gateway names ([`crate::peer`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use micro_core::{Account, Context};
use micro_proto::auth::accounts_server::{self, AccountsServer};
use micro_proto::auth::auth_server::{self, AuthServer};
use micro_proto::auth::rules_server::{self, RulesServer};
use micro_proto::auth::{
    Account as WireAccount, ChangeSecretRequest, ChangeSecretResponse, CreateRequest, CreateResponse,
    DeleteAccountRequest, DeleteAccountResponse, DeleteRequest, DeleteResponse, GenerateRequest,
    GenerateResponse, InspectRequest, InspectResponse, ListAccountsRequest, ListAccountsResponse,
    ListRequest, ListResponse, Options, PublicKeyRequest, PublicKeyResponse, Rule as WireRule,
    Token as WireToken, TokenRequest, TokenResponse,
};
use micro_store::StoreError;
use tonic::{Request, Response, Status};

use crate::error::CREDENTIALS_REQUIRED;
use crate::rules::Rule;
use crate::{Auth, AuthError, Credentials, NewAccount};

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Invalid(message) => Status::invalid_argument(message),
            AuthError::AlreadyExists(message) => Status::already_exists(message),
            AuthError::NotFound(message) => Status::not_found(message),
            AuthError::InvalidCredentials | AuthError::InvalidRefreshToken | AuthError::InvalidToken(_) => {
                Status::unauthenticated(err.to_string())
            }
            AuthError::SecretNotCorrect => Status::invalid_argument(err.to_string()),
            AuthError::CannotDeleteSelf => Status::failed_precondition(err.to_string()),
            AuthError::Throttled { retry_after_secs, .. } => {
                let mut status = Status::resource_exhausted(err.to_string());
                status.metadata_mut().insert(RETRY_AFTER, retry_after_secs.into());
                status
            }
            AuthError::Denied(denied) => Status::from(denied),
            AuthError::Store(StoreError::Unavailable(cause)) => {
                tracing::warn!(%cause, "auth store unavailable");
                Status::unavailable("the auth store is unavailable; try again")
            }
            AuthError::Store(err) => {
                tracing::error!(cause = %err, "auth store failed");
                Status::internal("the auth store failed; see the server log")
            }
            AuthError::Key(cause) | AuthError::Internal(cause) => {
                tracing::error!(%cause, "auth failed");
                Status::internal("the auth service failed; see the server log")
            }
        }
    }
}

/// Metadata key of a `RESOURCE_EXHAUSTED` status: the seconds to wait before trying again (also
/// at the end of its message, `...; retry in N s`, which the HTTP gateway turns into
/// `Retry-After`).
pub const RETRY_AFTER: &str = "retry-after";

/// The three ready-to-mount tonic servers over one [`Auth`].
pub fn services(
    auth: Arc<Auth>,
) -> (AuthServer<AuthService>, AccountsServer<AccountsService>, RulesServer<RulesService>) {
    (
        AuthServer::new(AuthService::new(auth.clone())),
        AccountsServer::new(AccountsService::new(auth.clone())),
        RulesServer::new(RulesService::new(auth)),
    )
}

macro_rules! service_new {
    ($($service:ident),*) => {$(
        impl $service {
            /// Serves `auth` over gRPC.
            pub fn new(auth: Arc<Auth>) -> Self {
                Self { auth }
            }
        }
    )*};
}
service_new!(AuthService, AccountsService, RulesService);

/// `auth.Auth`: Generate, Inspect, Token.
#[derive(Debug, Clone)]
pub struct AuthService {
    auth: Arc<Auth>,
}

/// `auth.Accounts`: List, Delete, ChangeSecret.
#[derive(Debug, Clone)]
pub struct AccountsService {
    auth: Arc<Auth>,
}

/// `auth.Rules`: Create, Delete, List.
#[derive(Debug, Clone)]
pub struct RulesService {
    auth: Arc<Auth>,
}

/// The request's context and the namespace it acts in.
fn scope<T>(request: &Request<T>, options: Option<&Options>) -> (Context, String) {
    let context = request.extensions().get::<Context>().cloned().unwrap_or_default();
    let namespace = match options {
        Some(options) if !options.namespace.is_empty() => options.namespace.clone(),
        _ => context.namespace.clone(),
    };
    (context, namespace)
}

/// The request's context and namespace, after checking the caller may act there.
#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn authorized<T>(request: &Request<T>, options: Option<&Options>) -> Result<(Context, String), Status> {
    let (context, namespace) = scope(request, options);
    context.authorize(&namespace).map_err(AuthError::from)?;
    Ok((context, namespace))
}

fn wire_account(account: Account, secret: String) -> WireAccount {
    WireAccount {
        id: account.id,
        r#type: account.kind,
        metadata: account.metadata.into_iter().collect(),
        scopes: account.scopes,
        issuer: account.issuer,
        secret,
        name: account.name,
    }
}

#[allow(clippy::result_large_err, reason = "tonic handlers return Status by value")]
fn domain_rule(rule: Option<WireRule>) -> Result<Rule, Status> {
    let rule = rule.ok_or_else(|| Status::invalid_argument("a rule is required"))?;
    Rule::try_from(rule).map_err(Status::invalid_argument)
}

#[tonic::async_trait]
impl auth_server::Auth for AuthService {
    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<GenerateResponse>, Status> {
        let (_, namespace) = authorized(&request, request.get_ref().options.as_ref())?;
        let GenerateRequest { id, metadata, scopes, secret, r#type, name, .. } = request.into_inner();
        let metadata: BTreeMap<String, String> = metadata.into_iter().collect();
        let new = NewAccount { id, name, kind: r#type, scopes, metadata, secret };
        let (account, secret) = self.auth.generate(&namespace, new).await?;
        tracing::info!(namespace, id = %account.id, "account generated");
        Ok(Response::new(GenerateResponse { account: Some(wire_account(account, secret)) }))
    }

    async fn inspect(&self, request: Request<InspectRequest>) -> Result<Response<InspectResponse>, Status> {
        let account = self.auth.inspect(&request.get_ref().token)?;
        Ok(Response::new(InspectResponse { account: Some(wire_account(account, String::new())) }))
    }

    async fn public_key(&self, _: Request<PublicKeyRequest>) -> Result<Response<PublicKeyResponse>, Status> {
        Ok(Response::new(PublicKeyResponse {
            pem: self.auth.public_key_pem(),
            algorithm: "EdDSA".to_string(),
        }))
    }

    async fn token(&self, request: Request<TokenRequest>) -> Result<Response<TokenResponse>, Status> {
        let (_, namespace) = scope(&request, request.get_ref().options.as_ref());
        let peer = self.auth.peer(request.remote_addr(), request.metadata());
        let TokenRequest { id, secret, refresh_token, token_expiry, .. } = request.into_inner();
        let credentials = if !refresh_token.is_empty() {
            Credentials::RefreshToken(refresh_token)
        } else if !id.is_empty() && !secret.is_empty() {
            Credentials::Secret { id, secret }
        } else {
            return Err(Status::invalid_argument(CREDENTIALS_REQUIRED));
        };
        let expiry = u64::try_from(token_expiry).ok().map(Duration::from_secs);
        let token = self.auth.token_from(&namespace, credentials, expiry, peer).await?;
        Ok(Response::new(TokenResponse {
            token: Some(WireToken {
                access_token: token.access_token,
                refresh_token: token.refresh_token,
                created: token.created,
                expiry: token.expiry,
            }),
        }))
    }
}

#[tonic::async_trait]
impl accounts_server::Accounts for AccountsService {
    async fn list(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        let (_, namespace) = authorized(&request, request.get_ref().options.as_ref())?;
        let accounts = self.auth.list_accounts(&namespace).await?;
        Ok(Response::new(ListAccountsResponse {
            accounts: accounts.into_iter().map(|account| wire_account(account, String::new())).collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        let (context, namespace) = authorized(&request, request.get_ref().options.as_ref())?;
        self.auth.delete_account(&namespace, &request.get_ref().id, context.account.as_ref()).await?;
        Ok(Response::new(DeleteAccountResponse {}))
    }

    async fn change_secret(
        &self,
        request: Request<ChangeSecretRequest>,
    ) -> Result<Response<ChangeSecretResponse>, Status> {
        let (_, namespace) = authorized(&request, request.get_ref().options.as_ref())?;
        let ChangeSecretRequest { id, old_secret, new_secret, .. } = request.into_inner();
        self.auth.change_secret(&namespace, &id, &old_secret, &new_secret).await?;
        Ok(Response::new(ChangeSecretResponse {}))
    }
}

#[tonic::async_trait]
impl rules_server::Rules for RulesService {
    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let (_, namespace) = authorized(&request, request.get_ref().options.as_ref())?;
        let rule = domain_rule(request.into_inner().rule)?;
        self.auth.create_rule(&namespace, rule).await?;
        Ok(Response::new(CreateResponse {}))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let (_, namespace) = authorized(&request, request.get_ref().options.as_ref())?;
        self.auth.delete_rule(&namespace, &request.get_ref().id).await?;
        Ok(Response::new(DeleteResponse {}))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let (_, namespace) = authorized(&request, request.get_ref().options.as_ref())?;
        let rules = self.auth.list_rules(&namespace).await?;
        Ok(Response::new(ListResponse { rules: rules.into_iter().map(WireRule::from).collect() }))
    }
}
