//! Who the service is when it calls the platform, and the access token that says so.
//!
//! Credentials are chosen once, in this order ([`plan`]):
//!
//! 1. `MICRO_AUTH_ID` + `MICRO_AUTH_SECRET` (what `micro run` injects): logged in with
//!    `Auth.Token`.
//! 2. The developer's CLI login for the selected environment and namespace (a service started by
//!    hand): with it the service creates its own account `<name>-<short id>` (type `service`,
//!    scope `service`) via `Auth.Generate`, logs in as that account, and deletes it on shutdown.
//!    Only used when the service talks to that environment's server.
//! 3. Nothing: the service runs anonymously; registration will be refused, which is logged with
//!    what to do about it.
//!
//! Access tokens are refreshed within [`REFRESH_MARGIN_SECS`] of expiry with the refresh token,
//! falling back to the credentials when the refresh token is refused (refresh tokens rotate and
//! can be revoked; a machine that slept past expiry must recover without a restart).

use std::path::PathBuf;

use micro_proto::auth::accounts_client::AccountsClient;
use micro_proto::auth::auth_client::AuthClient;
use micro_proto::auth::{DeleteAccountRequest, GenerateRequest, Options, TokenRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::env::{self, Env};
use crate::login::{self, CliEnv, Saved};

/// Refresh an access token that expires within this many seconds.
pub(crate) const REFRESH_MARGIN_SECS: i64 = 60;
/// The lifetime services ask for (docs/compatibility.md §6.3: services use 10-minute tokens).
pub(crate) const TOKEN_EXPIRY_SECS: i64 = 600;
pub(crate) use micro_core::NAMESPACE_HEADER;

/// Where the credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// `MICRO_AUTH_ID` / `MICRO_AUTH_SECRET`.
    Account { id: String, secret: String },
    /// The developer's `micro login` for this environment and namespace.
    Login { env: String, saved: Saved },
    /// No credentials at all.
    Anonymous,
}

/// Which server to talk to (and how), in which namespace, as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// `host:port`.
    pub server: String,
    /// Connect with TLS.
    pub tls: bool,
    /// A CA file to trust besides the system's authorities.
    pub ca: Option<PathBuf>,
    pub namespace: String,
    pub source: Source,
}

/// Decides server, namespace and credentials from the environment and the CLI's files.
///
/// TLS: `MICRO_SERVER_ADDRESS=https://…` (or `http://…`) says so explicitly; without a scheme a
/// server that is the CLI environment's follows that environment's setting, any other uses TLS
/// on port 443. The CA is `MICRO_TLS_CA`, else the one the CLI environment stored (when it is
/// the same server).
pub(crate) fn plan(env: &Env, cli: CliEnv) -> Plan {
    let cli_server = (!cli.proxy_address.is_empty()).then(|| micro_core::with_port(&cli.proxy_address));
    let (server, tls, ca) = match env.server.as_deref().map(micro_core::tls::ServerAddress::parse) {
        Some(given) => {
            let same = cli_server.as_deref() == Some(given.address.as_str());
            let tls = given.tls(same && cli.tls);
            let ca = env.tls_ca.clone().or_else(|| if same { cli.ca.clone() } else { None });
            (given.address, tls, ca)
        }
        None => match cli_server.clone() {
            Some(server) => (server, cli.tls, env.tls_ca.clone().or_else(|| cli.ca.clone())),
            None => (env::DEFAULT_SERVER_ADDRESS.to_string(), false, env.tls_ca.clone()),
        },
    };
    let namespace = env.namespace.clone().unwrap_or_else(|| cli.namespace.clone());
    let source = if let Some((id, secret)) = &env.credentials {
        Source::Account { id: id.clone(), secret: secret.clone() }
    } else {
        // A login is only good for the server it was made against, in its own namespace.
        match cli.login {
            Some(saved) if cli_server.as_deref() == Some(server.as_str()) && cli.namespace == namespace => {
                Source::Login { env: cli.env, saved }
            }
            _ => Source::Anonymous,
        }
    };
    Plan { server, tls, ca, namespace, source }
}

#[derive(Debug, Clone)]
struct Token {
    access: String,
    refresh: String,
    expiry: i64,
}

impl Token {
    fn fresh(&self, now: i64) -> bool {
        self.expiry - now >= REFRESH_MARGIN_SECS
    }
}

impl From<micro_proto::auth::Token> for Token {
    fn from(token: micro_proto::auth::Token) -> Self {
        Token { access: token.access_token, refresh: token.refresh_token, expiry: token.expiry }
    }
}

#[derive(Debug, Default)]
struct State {
    /// The service's own token (of the `MICRO_AUTH_ID` account or the generated one).
    token: Option<Token>,
    /// Id and secret to log in with again when refreshing fails.
    credentials: Option<(String, String)>,
    /// The developer's login, when that is where credentials came from.
    login: Option<(String, Saved)>,
    /// The account created from the developer's login, deleted on shutdown.
    generated: Option<String>,
    warned_anonymous: bool,
}

/// The service's identity towards the platform. Cheap to share; refreshes serialise on a lock.
#[derive(Debug)]
pub(crate) struct Session {
    namespace: String,
    home: PathBuf,
    state: tokio::sync::Mutex<State>,
    /// What [`Session::bearer`] last answered, for callers that cannot wait (the span
    /// exporter's interceptor): the heartbeat keeps it fresh.
    latest: std::sync::Mutex<Option<String>>,
}

impl Session {
    pub fn new(namespace: String, source: Source, home: PathBuf) -> Self {
        let mut state = State::default();
        match source {
            Source::Account { id, secret } => state.credentials = Some((id, secret)),
            Source::Login { env, saved } => state.login = Some((env, saved)),
            Source::Anonymous => {}
        }
        Self { namespace, home, state: tokio::sync::Mutex::new(state), latest: Default::default() }
    }

    /// A short description for the start-up log.
    pub async fn describe(&self) -> String {
        let state = self.state.lock().await;
        match (&state.credentials, &state.generated, &state.login) {
            (Some(_), Some(id), _) => format!("service account {id} (created from your micro login)"),
            (Some((id, _)), None, _) => format!("account {id}"),
            (None, _, Some((env, saved))) => {
                format!("your micro login ({} in env {env})", saved.account_name)
            }
            _ => "anonymous".to_string(),
        }
    }

    /// The access token to call with, refreshed or renewed first when it is about to expire.
    /// `None` means calls go out anonymously (no credentials, or the server refused them: the
    /// next call tries again).
    pub async fn bearer(&self, channel: &Channel) -> Option<String> {
        let token = self.renewed(channel).await;
        token.clone_into(&mut self.latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        token
    }

    /// The token [`Session::bearer`] last answered, without waiting for a renewal.
    pub fn latest_bearer(&self) -> Option<String> {
        self.latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn renewed(&self, channel: &Channel) -> Option<String> {
        let mut state = self.state.lock().await;
        let now = now();
        if let Some(token) = &state.token
            && token.fresh(now)
        {
            return Some(token.access.clone());
        }
        let mut auth = AuthClient::new(channel.clone());
        if let Some(old) = state.token.take()
            && !old.refresh.is_empty()
        {
            match self
                .token(&mut auth, TokenRequest { refresh_token: old.refresh.clone(), ..Default::default() })
                .await
            {
                Ok(token) => {
                    let access = token.access.clone();
                    state.token = Some(token);
                    return Some(access);
                }
                Err(status) => {
                    tracing::info!(cause = %status.message(), "refresh token refused; logging in again")
                }
            }
        }
        if let Some((id, secret)) = state.credentials.clone() {
            let request = TokenRequest { id: id.clone(), secret, ..Default::default() };
            return match self.token(&mut auth, request).await {
                Ok(token) => {
                    let access = token.access.clone();
                    state.token = Some(token);
                    Some(access)
                }
                Err(status) => {
                    tracing::warn!(account = %id, code = ?status.code(), cause = %status.message(), "cannot log in to the micro server");
                    None
                }
            };
        }
        if state.login.is_some() {
            return self.login_token(&mut state, &mut auth).await;
        }
        if !state.warned_anonymous {
            state.warned_anonymous = true;
            tracing::warn!(
                "running without credentials: registering with the micro server needs `micro login` \
                 (for a service started by hand) or MICRO_AUTH_ID and MICRO_AUTH_SECRET"
            );
        }
        None
    }

    /// Turns a developer's login into an account of the service's own, `<name>-<short id>`.
    /// On failure the developer's login itself is used.
    pub async fn adopt_service_account(&self, channel: &Channel, name: &str) {
        let mut state = self.state.lock().await;
        if state.credentials.is_some() || state.login.is_none() {
            return;
        }
        let mut auth = AuthClient::new(channel.clone());
        let Some(login) = self.login_token(&mut state, &mut auth).await else { return };
        let id = format!("{name}-{}", &crate::uuid()[..8]);
        let request = GenerateRequest {
            id: id.clone(),
            r#type: "service".to_string(),
            scopes: vec!["service".to_string()],
            options: Some(Options { namespace: self.namespace.clone() }),
            ..Default::default()
        };
        let generated = match auth.generate(self.with_bearer(request, &login)).await {
            Ok(reply) => reply.into_inner().account,
            Err(status) => {
                tracing::warn!(cause = %status.message(), "cannot create a service account from your micro login; calling as you");
                return;
            }
        };
        let Some(account) = generated else { return };
        let secret = account.secret.clone();
        match self
            .token(&mut auth, TokenRequest { id: id.clone(), secret: secret.clone(), ..Default::default() })
            .await
        {
            Ok(token) => {
                tracing::info!(account = %id, "created service account from your micro login");
                state.token = Some(token);
                state.credentials = Some((id.clone(), secret));
                state.generated = Some(id);
            }
            Err(status) => {
                tracing::warn!(cause = %status.message(), "cannot log in as the new service account; calling as you");
                state.generated = Some(id);
                drop(state);
                self.release(channel).await;
            }
        }
    }

    /// Deletes the account [`Self::adopt_service_account`] created (best effort).
    pub async fn release(&self, channel: &Channel) {
        let mut state = self.state.lock().await;
        let Some(id) = state.generated.take() else { return };
        let mut auth = AuthClient::new(channel.clone());
        let Some(login) = self.login_token(&mut state, &mut auth).await else {
            tracing::warn!(account = %id, "cannot delete the service account: your micro login expired");
            return;
        };
        let request = DeleteAccountRequest {
            id: id.clone(),
            options: Some(Options { namespace: self.namespace.clone() }),
        };
        match AccountsClient::new(channel.clone()).delete(self.with_bearer(request, &login)).await {
            Ok(_) => tracing::debug!(account = %id, "deleted the service account"),
            Err(status) => {
                tracing::warn!(account = %id, cause = %status.message(), "cannot delete the service account")
            }
        }
        state.credentials = None;
        state.token = None;
    }

    /// The developer's access token, refreshed (and saved back for the CLI) when it is expiring.
    async fn login_token(&self, state: &mut State, auth: &mut AuthClient<Channel>) -> Option<String> {
        let (env, saved) = state.login.clone()?;
        if saved.expiry - now() >= REFRESH_MARGIN_SECS {
            return Some(saved.access_token);
        }
        // One refresh at a time with the CLI, from the login as saved now: a refresh token is
        // used up by its refresh, and the CLI may have refreshed this login since it was read.
        let _lock = login::lock(&self.home).await;
        let saved = login::saved(&self.home, &env, &self.namespace).unwrap_or(saved);
        if saved.expiry - now() >= REFRESH_MARGIN_SECS {
            let access = saved.access_token.clone();
            state.login = Some((env, saved));
            return Some(access);
        }
        let request = TokenRequest { refresh_token: saved.refresh_token.clone(), ..Default::default() };
        match self.token(auth, request).await {
            Ok(token) => {
                let refreshed = Saved {
                    access_token: token.access.clone(),
                    refresh_token: token.refresh,
                    expiry: token.expiry,
                    ..saved
                };
                if let Err(err) = login::save(&self.home, &env, &self.namespace, &refreshed) {
                    tracing::warn!(cause = %err, "cannot save the refreshed micro login");
                }
                state.login = Some((env, refreshed));
                Some(token.access)
            }
            Err(status) => {
                tracing::warn!(cause = %status.message(), "your micro login has expired: run `micro login` again");
                state.login = None;
                None
            }
        }
    }

    async fn token(
        &self,
        auth: &mut AuthClient<Channel>,
        mut request: TokenRequest,
    ) -> Result<Token, tonic::Status> {
        request.token_expiry = TOKEN_EXPIRY_SECS;
        request.options = Some(Options { namespace: self.namespace.clone() });
        let reply = auth.token(self.anonymous(request)).await?.into_inner();
        reply
            .token
            .map(Token::from)
            .ok_or_else(|| tonic::Status::internal("the auth service returned no token"))
    }

    /// `message` with the namespace header.
    pub fn anonymous<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = MetadataValue::try_from(self.namespace.as_str()) {
            request.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        request
    }

    fn with_bearer<T>(&self, message: T, token: &str) -> tonic::Request<T> {
        let mut request = self.anonymous(message);
        if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }
}

/// Unix seconds now ([`micro_core::time::unix_seconds`]).
pub(crate) fn now() -> i64 {
    micro_core::time::unix_seconds()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env::from_lookup(|key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())).unwrap()
    }

    fn cli(env: &str, address: &str, namespace: &str, logged_in: bool) -> CliEnv {
        CliEnv {
            env: env.into(),
            proxy_address: address.into(),
            tls: micro_core::tls::default_tls(address),
            ca: None,
            namespace: namespace.into(),
            login: logged_in.then(|| Saved {
                access_token: "a".into(),
                refresh_token: "r".into(),
                expiry: 1,
                account_id: "admin".into(),
                account_name: "admin".into(),
            }),
        }
    }

    #[test]
    fn injected_credentials_win() {
        let plan = plan(
            &env(&[
                ("MICRO_AUTH_ID", "hw"),
                ("MICRO_AUTH_SECRET", "s"),
                ("MICRO_PROXY", "10.0.0.1:8081"),
                ("MICRO_NAMESPACE", "foo"),
            ]),
            cli("local", "127.0.0.1:8081", "micro", true),
        );
        assert_eq!(plan.source, Source::Account { id: "hw".into(), secret: "s".into() });
        assert_eq!(plan.server, "10.0.0.1:8081");
        assert_eq!(plan.namespace, "foo");
    }

    #[test]
    fn a_hand_started_service_borrows_the_cli_login() {
        let plan = plan(&env(&[]), cli("staging", "10.0.0.2:8081", "bar", true));
        assert!(matches!(&plan.source, Source::Login { env, .. } if env == "staging"));
        assert_eq!(plan.server, "10.0.0.2:8081", "the environment's server is used");
        assert_eq!(plan.namespace, "bar");

        let same = plan_for(
            &[("MICRO_SERVER_ADDRESS", "10.0.0.2:8081")],
            cli("staging", "10.0.0.2:8081", "bar", true),
        );
        assert!(matches!(same.source, Source::Login { .. }), "naming the same server keeps the login");
    }

    fn plan_for(pairs: &[(&str, &str)], cli: CliEnv) -> Plan {
        plan(&env(pairs), cli)
    }

    #[test]
    fn otherwise_the_service_is_anonymous() {
        let other_server = plan_for(
            &[("MICRO_SERVER_ADDRESS", "127.0.0.1:18081")],
            cli("local", "127.0.0.1:8081", "micro", true),
        );
        assert_eq!(other_server.source, Source::Anonymous, "a login for another server is no good");
        assert_eq!(other_server.server, "127.0.0.1:18081");

        let other_namespace =
            plan_for(&[("MICRO_NAMESPACE", "foo")], cli("local", "127.0.0.1:8081", "micro", true));
        assert_eq!(other_namespace.source, Source::Anonymous);

        let logged_out = plan_for(&[], cli("local", "127.0.0.1:8081", "micro", false));
        assert_eq!(logged_out.source, Source::Anonymous);
        assert_eq!((logged_out.server.as_str(), logged_out.namespace.as_str()), ("127.0.0.1:8081", "micro"));

        let no_address = plan_for(&[], cli("gone", "", "micro", true));
        assert_eq!(no_address.server, "127.0.0.1:8081");
        assert_eq!(no_address.source, Source::Anonymous);
    }

    #[test]
    fn tls_follows_the_scheme_the_port_or_the_cli_env() {
        let plain = plan_for(
            &[("MICRO_SERVER_ADDRESS", "10.0.0.1:8081")],
            cli("local", "127.0.0.1:8081", "micro", false),
        );
        assert!(!plain.tls);
        let port_443 = plan_for(
            &[("MICRO_SERVER_ADDRESS", "micro.example.com")],
            cli("local", "127.0.0.1:8081", "micro", false),
        );
        assert_eq!((port_443.server.as_str(), port_443.tls), ("micro.example.com:443", true));
        let https = plan_for(
            &[("MICRO_SERVER_ADDRESS", "https://127.0.0.1:9443"), ("MICRO_TLS_CA", "/ca.pem")],
            cli("local", "127.0.0.1:8081", "micro", false),
        );
        assert_eq!((https.server.as_str(), https.tls), ("127.0.0.1:9443", true));
        assert_eq!(https.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));

        // A CLI env added with --tls --ca: a service borrowing its login reaches it the same way,
        // also when MICRO_SERVER_ADDRESS names the same server without a scheme.
        let mut tls_env = cli("tls", "127.0.0.1:9443", "micro", true);
        tls_env.tls = true;
        tls_env.ca = Some("/env-ca.pem".into());
        for pairs in [
            &[][..],
            &[("MICRO_SERVER_ADDRESS", "127.0.0.1:9443")][..],
            &[("MICRO_SERVER_ADDRESS", "https://127.0.0.1:9443")][..],
        ] {
            let borrowed = plan_for(pairs, tls_env.clone());
            assert!(borrowed.tls, "{pairs:?}");
            assert_eq!(borrowed.ca.as_deref(), Some(std::path::Path::new("/env-ca.pem")), "{pairs:?}");
            assert!(
                matches!(borrowed.source, Source::Login { .. }),
                "the scheme does not stop the login: {pairs:?}"
            );
        }
        let other = plan_for(&[("MICRO_SERVER_ADDRESS", "127.0.0.1:9444")], tls_env.clone());
        assert_eq!((other.tls, other.ca), (false, None), "another server does not inherit the env's TLS");
    }

    #[test]
    fn tokens_are_fresh_until_the_margin() {
        let token = Token { access: "a".into(), refresh: "r".into(), expiry: 1000 };
        assert!(token.fresh(1000 - REFRESH_MARGIN_SECS));
        assert!(!token.fresh(1000 - REFRESH_MARGIN_SECS + 1));
    }
}
