//! Tests of [`Auth`] over a memory store, and of its gRPC services called in-process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use micro_core::{Account, Context};
use micro_proto::auth::accounts_server::Accounts as _;
use micro_proto::auth::auth_server::Auth as _;
use micro_proto::auth::rules_server::Rules as _;
use micro_store::memory::MemoryStore;
use micro_store::{ReadOptions, Store};
use tonic::{Code, Request};

use crate::error::*;
use crate::service::{ADMIN_ID, DATABASE, DEFAULT_ADMIN_PASSWORD, TABLE};
use crate::*;

fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn open(options: AuthOptions) -> (Auth, Arc<dyn Store>) {
    let store = store();
    (Auth::for_tests(store.clone(), options).await, store)
}

fn loopback() -> AuthOptions {
    AuthOptions { loopback_only: true, ..AuthOptions::default() }
}

fn login(id: &str, secret: &str) -> Credentials {
    Credentials::Secret { id: id.into(), secret: secret.into() }
}

fn new_account(id: &str, secret: &str) -> NewAccount {
    NewAccount { id: id.into(), secret: secret.into(), ..NewAccount::default() }
}

#[tokio::test]
async fn generate_then_token_then_inspect() {
    let (auth, store) = open(loopback()).await;
    let new = NewAccount {
        id: "bob".into(),
        kind: "service".into(),
        scopes: vec!["reader".into()],
        metadata: BTreeMap::from([("team".into(), "x".into())]),
        secret: "hunter2".into(),
        ..NewAccount::default()
    };
    let (account, secret) = auth.generate("foo", new).await.unwrap();
    assert_eq!(secret, "hunter2");
    assert_eq!(
        account,
        Account {
            id: "bob".into(),
            name: "bob".into(),
            kind: "service".into(),
            issuer: "foo".into(),
            scopes: vec!["reader".into()],
            metadata: BTreeMap::from([("team".into(), "x".into())]),
        }
    );
    // The secret is stored hashed, never in plain.
    let stored = store.read(DATABASE, TABLE, "account/foo/bob", ReadOptions::default()).await.unwrap();
    let text = String::from_utf8(stored[0].value.clone()).unwrap();
    assert!(!text.contains("hunter2") && text.contains("$argon2id$"), "{text}");

    let token = auth.token("foo", login("bob", "hunter2"), None).await.unwrap();
    assert_eq!(token.expiry - token.created, DEFAULT_TOKEN_EXPIRY.as_secs() as i64);
    assert_eq!(auth.inspect(&token.access_token).unwrap(), account);

    // Requested lifetimes are honoured up to the cap.
    let short = auth.token("foo", login("bob", "hunter2"), Some(Duration::from_secs(30))).await.unwrap();
    assert_eq!(short.expiry - short.created, 30);
    let long = auth.token("foo", login("bob", "hunter2"), Some(Duration::from_secs(1 << 40))).await.unwrap();
    assert_eq!(long.expiry - long.created, MAX_TOKEN_EXPIRY.as_secs() as i64);

    // Defaults: random id (UUID) and secret, name = id, type user.
    let (generated, secret) = auth.generate("foo", NewAccount::default()).await.unwrap();
    assert_eq!(generated.id.len(), 36);
    assert_eq!(generated.name, generated.id);
    assert_eq!(generated.kind, "user");
    assert_eq!(secret.len(), 36);
    assert_ne!(secret, generated.id);
    auth.token("foo", login(&generated.id, &secret), None).await.unwrap();

    // Accounts are per namespace: bob does not exist in bar.
    assert_eq!(auth.token("bar", login("bob", "hunter2"), None).await, Err(AuthError::InvalidCredentials));
    assert_eq!(auth.list_accounts("foo").await.unwrap().len(), 2);
    assert!(auth.list_accounts("bar").await.unwrap().is_empty());
}

#[tokio::test]
async fn login_by_name_and_failures_look_alike() {
    let (auth, _) = open(loopback()).await;
    let new = NewAccount { name: "Bob Smith".into(), ..new_account("bob", "pw") };
    auth.generate("foo", new).await.unwrap();
    auth.token("foo", login("Bob Smith", "pw"), None).await.unwrap();

    let wrong_secret = auth.token("foo", login("bob", "nope"), None).await.unwrap_err();
    let unknown = auth.token("foo", login("alice", "pw"), None).await.unwrap_err();
    assert_eq!(wrong_secret, AuthError::InvalidCredentials);
    assert_eq!(unknown, AuthError::InvalidCredentials);
    assert_eq!(tonic::Status::from(wrong_secret).message(), tonic::Status::from(unknown).message());
    assert_eq!(AuthError::InvalidCredentials.to_string(), "Invalid credentials");

    let missing = auth.token("foo", login("", "pw"), None).await.unwrap_err();
    assert_eq!(missing, AuthError::Invalid(CREDENTIALS_REQUIRED.into()));
}

#[tokio::test]
async fn an_access_token_is_never_a_secret() {
    use micro_proto::auth::TokenRequest;
    let (auth, _) = open(loopback()).await;
    let (account, secret) =
        auth.generate("foo", NewAccount { kind: "service".into(), ..new_account("svc", "") }).await.unwrap();
    let issued = auth.token("foo", login("svc", &secret), None).await.unwrap();
    let long_lived = auth.mint(&account, Duration::from_secs(365 * 24 * 3600)).unwrap();
    for token in [&issued.access_token, &long_lived] {
        assert_eq!(auth.token("foo", login("svc", token), None).await, Err(AuthError::InvalidCredentials));
    }
    // Over gRPC it is UNAUTHENTICATED (401 through the gateway), like any wrong secret.
    let service = grpc::AuthService::new(Arc::new(auth));
    let request = TokenRequest {
        id: "svc".into(),
        secret: issued.access_token.clone(),
        options: options("foo"),
        ..Default::default()
    };
    let status = service.token(with_context(request, None)).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unauthenticated, INVALID_CREDENTIALS));
}

#[tokio::test]
async fn refresh_tokens_die_with_the_secret_and_the_account() {
    let (auth, store) = open(loopback()).await;
    auth.generate("foo", new_account("bob", "pw")).await.unwrap();
    let epoch = || async {
        let records = store.read(DATABASE, TABLE, "account/foo/bob", ReadOptions::default()).await.unwrap();
        let value: serde_json::Value = serde_json::from_slice(&records[0].value).unwrap();
        value["epoch"].as_str().unwrap().to_string()
    };
    let created = epoch().await;
    let before_change = auth.token("foo", login("bob", "pw"), None).await.unwrap();
    auth.change_secret("foo", "bob", "pw", "pw2").await.unwrap();
    assert_ne!(epoch().await, created, "a new secret, a new epoch");
    let refused = auth.token("foo", Credentials::RefreshToken(before_change.refresh_token), None).await;
    assert_eq!(refused, Err(AuthError::InvalidRefreshToken));

    // Deleted and re-created with the same id and the same secret: a fresh epoch, so the old
    // refresh token stays dead while new ones work.
    let before_delete = auth.token("foo", login("bob", "pw2"), None).await.unwrap();
    let changed = epoch().await;
    auth.delete_account("foo", "bob", None).await.unwrap();
    auth.generate("foo", new_account("bob", "pw2")).await.unwrap();
    assert_ne!(epoch().await, changed, "a re-created account never reuses an epoch");
    let refused = auth.token("foo", Credentials::RefreshToken(before_delete.refresh_token), None).await;
    assert_eq!(refused, Err(AuthError::InvalidRefreshToken));
    let fresh = auth.token("foo", login("bob", "pw2"), None).await.unwrap();
    auth.token("foo", Credentials::RefreshToken(fresh.refresh_token), None).await.unwrap();
}

/// The `(limit, retry_after_secs)` of a throttled login.
fn throttled(result: Result<Token, AuthError>) -> (String, u64) {
    match result {
        Err(AuthError::Throttled { limit, retry_after_secs }) => (limit, retry_after_secs),
        other => panic!("not throttled: {other:?}"),
    }
}

#[tokio::test]
async fn failed_logins_are_limited_per_account_and_per_peer() {
    use crate::throttle::*;
    let (auth, _) = open(loopback()).await;
    auth.generate("foo", new_account("bob", "pw")).await.unwrap();
    auth.generate("foo", NewAccount { name: "Carol".into(), ..new_account("carol", "pw") }).await.unwrap();
    let peer = |n: u8| Some(std::net::IpAddr::from([192, 0, 2, n]));

    // A success clears the account's count: four failures, a success, four more, and bob is
    // still let in.
    for round in 0..2 {
        for n in 0..MAX_FAILED_LOGINS_PER_ACCOUNT - 1 {
            let wrong = auth.token_from("foo", login("bob", "nope"), None, peer(n as u8 + 10 * round)).await;
            assert_eq!(wrong, Err(AuthError::InvalidCredentials));
        }
        auth.token_from("foo", login("bob", "pw"), None, peer(99)).await.unwrap();
    }
    // The limit's worth of failures (by id or by name alike, from any peers) blocks the account,
    // the right secret too, for the backoff.
    for n in 0..MAX_FAILED_LOGINS_PER_ACCOUNT {
        let id = if n % 2 == 0 { "carol" } else { "Carol" };
        auth.token_from("foo", login(id, "nope"), None, peer(n as u8 + 20)).await.unwrap_err();
    }
    let (limit, retry) = throttled(auth.token_from("foo", login("carol", "pw"), None, peer(30)).await);
    assert_eq!(
        limit,
        "too many failed logins for this account: MAX_FAILED_LOGINS_PER_ACCOUNT = 5 within 300 s"
    );
    assert_eq!(retry, LOGIN_BACKOFF.as_secs());
    // An unknown account is limited the same way: a refusal does not tell it apart.
    for n in 0..MAX_FAILED_LOGINS_PER_ACCOUNT {
        let unknown = auth.token_from("foo", login("nobody", "nope"), None, peer(n as u8 + 40)).await;
        assert_eq!(unknown, Err(AuthError::InvalidCredentials));
    }
    let (unknown_limit, _) = throttled(auth.token_from("foo", login("nobody", "x"), None, peer(50)).await);
    assert_eq!(unknown_limit, limit);
    // Other accounts, and the same id in another namespace, are not affected.
    auth.token_from("foo", login("bob", "pw"), None, peer(30)).await.unwrap();
    assert_eq!(
        auth.token_from("bar", login("carol", "pw"), None, peer(30)).await,
        Err(AuthError::InvalidCredentials)
    );

    // One peer guessing across many accounts (unknown ones count) reaches its own limit; a
    // success from it does not clear it; other peers go on.
    let flooder = peer(77);
    for n in 0..MAX_FAILED_LOGINS_PER_PEER - 1 {
        let guess = auth.token_from("foo", login(&format!("user{n}"), "nope"), None, flooder).await;
        assert_eq!(guess, Err(AuthError::InvalidCredentials));
    }
    auth.token_from("foo", login("bob", "pw"), None, flooder).await.unwrap();
    auth.token_from("foo", login("someone", "nope"), None, flooder).await.unwrap_err();
    let (limit, retry) = throttled(auth.token_from("foo", login("bob", "pw"), None, flooder).await);
    assert_eq!(
        limit,
        "too many failed logins from this address: MAX_FAILED_LOGINS_PER_PEER = 20 within 300 s"
    );
    assert_eq!(retry, LOGIN_BACKOFF.as_secs());
    auth.token_from("foo", login("bob", "pw"), None, peer(78)).await.unwrap();
    // Refresh tokens hash nothing and pass no limit.
    let token = auth.token_from("foo", login("bob", "pw"), None, peer(78)).await.unwrap();
    auth.token_from("foo", Credentials::RefreshToken(token.refresh_token), None, flooder).await.unwrap();
}

#[tokio::test]
async fn a_throttled_login_over_grpc_is_resource_exhausted_with_retry_after() {
    use micro_proto::auth::TokenRequest;
    let (auth, _) = open(loopback()).await;
    let auth = Arc::new(auth);
    let service = grpc::AuthService::new(auth.clone());
    // As the gateway sends it: the client named in the metadata, with this boot's key.
    let from_client = |n: u8, secret: &str| {
        let mut request = with_context(
            TokenRequest { id: "admin".into(), secret: secret.into(), ..Default::default() },
            None,
        );
        auth.forward_peer(request.metadata_mut(), Some(std::net::IpAddr::from([198, 51, 100, n])));
        request
    };
    for n in 0..throttle::MAX_FAILED_LOGINS_PER_ACCOUNT as u8 {
        let status = service.token(from_client(n, "nope")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = service.token(from_client(9, "micro")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().starts_with("too many failed logins for this account"), "{}", status.message());
    assert!(status.message().ends_with("; retry in 30 s"), "{}", status.message());
    assert_eq!(status.metadata().get(grpc::RETRY_AFTER).unwrap(), "30");

    // Each forwarded client is its own peer: one flooding client leaves the next alone.
    let (flooder, other) = (11, 12);
    for n in 0..throttle::MAX_FAILED_LOGINS_PER_PEER {
        let mut request = from_client(flooder, "nope");
        request.get_mut().id = format!("user{n}");
        assert_eq!(service.token(request).await.unwrap_err().code(), Code::Unauthenticated);
    }
    let mut request = from_client(flooder, "nope");
    request.get_mut().id = "anyone".into();
    assert_eq!(service.token(request).await.unwrap_err().code(), Code::ResourceExhausted);
    let mut request = from_client(other, "nope");
    request.get_mut().id = "anyone".into();
    assert_eq!(service.token(request).await.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_are_revoked() {
    let (auth, store) = open(loopback()).await;
    auth.generate("foo", new_account("bob", "pw")).await.unwrap();
    let first = auth.token("foo", login("bob", "pw"), None).await.unwrap();

    // Only the hash of a refresh token is stored.
    let keys = store
        .list(DATABASE, TABLE, micro_store::ListOptions { prefix: "refresh/".into(), ..Default::default() })
        .await
        .unwrap();
    assert!(keys.iter().all(|key| !key.contains(&first.refresh_token)), "{keys:?}");

    let second =
        auth.token("foo", Credentials::RefreshToken(first.refresh_token.clone()), None).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(auth.inspect(&second.access_token).unwrap().id, "bob");
    // A used refresh token is spent.
    let reused = auth.token("foo", Credentials::RefreshToken(first.refresh_token.clone()), None).await;
    assert_eq!(reused, Err(AuthError::InvalidRefreshToken));
    assert_eq!(AuthError::InvalidRefreshToken.to_string(), "Invalid refresh token");
    // Unknown ones, and ones of another namespace, are invalid.
    let unknown = auth.token("foo", Credentials::RefreshToken("nope".into()), None).await;
    assert_eq!(unknown, Err(AuthError::InvalidRefreshToken));
    let elsewhere = auth.token("bar", Credentials::RefreshToken(second.refresh_token.clone()), None).await;
    assert_eq!(elsewhere, Err(AuthError::InvalidRefreshToken));

    // Changing the secret revokes every refresh token.
    let third = auth.token("foo", login("bob", "pw"), None).await.unwrap();
    assert_eq!(auth.change_secret("foo", "bob", "wrong", "pw2").await, Err(AuthError::SecretNotCorrect));
    assert_eq!(AuthError::SecretNotCorrect.to_string(), "Secret not correct");
    // A failed change revoked nothing.
    auth.token("foo", Credentials::RefreshToken(third.refresh_token), None).await.unwrap();
    let fourth = auth.token("foo", login("bob", "pw"), None).await.unwrap();
    auth.change_secret("foo", "bob", "pw", "pw2").await.unwrap();
    let revoked = auth.token("foo", Credentials::RefreshToken(fourth.refresh_token), None).await;
    assert_eq!(revoked, Err(AuthError::InvalidRefreshToken));
    assert_eq!(auth.token("foo", login("bob", "pw"), None).await, Err(AuthError::InvalidCredentials));
    let fifth = auth.token("foo", login("bob", "pw2"), None).await.unwrap();

    // Deleting the account revokes them too, even when the id is re-created.
    auth.delete_account("foo", "bob", None).await.unwrap();
    auth.generate("foo", new_account("bob", "pw2")).await.unwrap();
    let after_delete = auth.token("foo", Credentials::RefreshToken(fifth.refresh_token), None).await;
    assert_eq!(after_delete, Err(AuthError::InvalidRefreshToken));
}

#[tokio::test]
async fn change_secret_rules() {
    let (auth, _) = open(loopback()).await;
    auth.generate("foo", NewAccount { name: "bobby".into(), ..new_account("bob", "pw") }).await.unwrap();
    assert!(matches!(auth.change_secret("foo", "bob", "pw", "").await, Err(AuthError::Invalid(_))));
    assert_eq!(
        auth.change_secret("foo", "nobody", "pw", "x").await,
        Err(AuthError::NotFound(ACCOUNT_NOT_FOUND))
    );
    auth.change_secret("foo", "bobby", "pw", "new").await.unwrap();
    auth.token("foo", login("bob", "new"), None).await.unwrap();
}

#[tokio::test]
async fn duplicates_are_refused_and_change_nothing() {
    let (auth, _) = open(loopback()).await;
    auth.generate("foo", NewAccount { name: "robert".into(), ..new_account("bob", "pw") }).await.unwrap();
    let same_id = auth.generate("foo", new_account("bob", "other")).await;
    assert_eq!(same_id, Err(AuthError::AlreadyExists(DUPLICATE_ID)));
    let same_name =
        auth.generate("foo", NewAccount { name: "robert".into(), ..new_account("rob", "x") }).await;
    assert_eq!(same_name, Err(AuthError::AlreadyExists(DUPLICATE_NAME)));
    assert_eq!(DUPLICATE_ID, "Account with this ID already exists");
    assert_eq!(DUPLICATE_NAME, "Account with this Name already exists");
    let accounts = auth.list_accounts("foo").await.unwrap();
    assert_eq!(accounts.len(), 1);
    auth.token("foo", login("bob", "pw"), None).await.unwrap();
    assert_eq!(auth.token("foo", login("rob", "x"), None).await, Err(AuthError::InvalidCredentials));
    // The same id in another namespace is a different account.
    auth.generate("bar", new_account("bob", "pw")).await.unwrap();
    // A freed name can be taken again.
    auth.delete_account("foo", "robert", None).await.unwrap();
    auth.generate("foo", NewAccount { name: "robert".into(), ..new_account("rob", "x") }).await.unwrap();
}

#[tokio::test]
async fn delete_accounts() {
    let (auth, _) = open(loopback()).await;
    let (bob, _) = auth.generate("foo", new_account("bob", "pw")).await.unwrap();
    let (alice, _) = auth.generate("foo", new_account("alice", "pw")).await.unwrap();
    assert_eq!(auth.delete_account("foo", "bob", Some(&bob)).await, Err(AuthError::CannotDeleteSelf));
    assert_eq!(AuthError::CannotDeleteSelf.to_string(), "Can't delete your own account");
    // The same id issued by another namespace is someone else.
    let outsider = Account { issuer: "micro".into(), ..bob.clone() };
    auth.delete_account("foo", "bob", Some(&outsider)).await.unwrap();
    assert_eq!(
        auth.delete_account("foo", "bob", Some(&alice)).await,
        Err(AuthError::NotFound(ACCOUNT_NOT_FOUND))
    );
    assert_eq!(auth.list_accounts("foo").await.unwrap(), vec![alice]);
    assert!(matches!(auth.delete_account("foo", "", None).await, Err(AuthError::Invalid(_))));
    // Access tokens are stateless: a deleted account's token stays valid until it expires.
}

#[tokio::test]
async fn limits() {
    let (auth, _) = open(loopback()).await;
    let invalid = |result: Result<(Account, String), AuthError>| matches!(result, Err(AuthError::Invalid(_)));

    let id = "a".repeat(MAX_ID_BYTES);
    auth.generate("foo", new_account(&id, "pw")).await.unwrap();
    assert!(invalid(auth.generate("foo", new_account(&format!("{id}a"), "pw")).await));
    assert!(invalid(auth.generate("foo", new_account("tab\tbed", "pw")).await));
    assert!(invalid(auth.generate("foo", NewAccount { name: "x\n".into(), ..new_account("x", "") }).await));
    assert!(invalid(
        auth.generate("foo", NewAccount { kind: "robot".into(), ..NewAccount::default() }).await
    ));
    assert!(invalid(auth.generate("Not A Namespace", NewAccount::default()).await));

    let secret = "s".repeat(MAX_SECRET_BYTES);
    auth.generate("foo", new_account("long-secret", &secret)).await.unwrap();
    auth.token("foo", login("long-secret", &secret), None).await.unwrap();
    assert!(invalid(auth.generate("foo", new_account("too-long", &format!("{secret}s"))).await));

    let scopes = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    let with_scopes = |n: usize, id: &str| NewAccount { scopes: scopes(n), ..new_account(id, "") };
    auth.generate("foo", with_scopes(MAX_SCOPES, "scoped")).await.unwrap();
    assert!(invalid(auth.generate("foo", with_scopes(MAX_SCOPES + 1, "overscoped")).await));
    let long_scope = NewAccount { scopes: vec!["x".repeat(MAX_SCOPE_BYTES + 1)], ..NewAccount::default() };
    assert!(invalid(auth.generate("foo", long_scope).await));
    let empty_scope = NewAccount { scopes: vec![String::new()], ..NewAccount::default() };
    assert!(invalid(auth.generate("foo", empty_scope).await));

    let entries = |n: usize| (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect::<BTreeMap<_, _>>();
    let with_meta = |metadata, id: &str| NewAccount { metadata, ..new_account(id, "") };
    auth.generate("foo", with_meta(entries(MAX_METADATA_ENTRIES), "meta")).await.unwrap();
    assert!(invalid(auth.generate("foo", with_meta(entries(MAX_METADATA_ENTRIES + 1), "m2")).await));
    let big = BTreeMap::from([("k".to_string(), "v".repeat(MAX_METADATA_BYTES - 1))]);
    auth.generate("foo", with_meta(big, "big")).await.unwrap();
    let too_big = BTreeMap::from([("k".to_string(), "v".repeat(MAX_METADATA_BYTES))]);
    assert!(invalid(auth.generate("foo", with_meta(too_big, "too-big")).await));

    // Nothing invalid was stored.
    let ids: Vec<String> = auth.list_accounts("foo").await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");

    assert_eq!(MAX_TOKEN_EXPIRY, Duration::from_secs(86_400));
}

#[tokio::test]
async fn max_rules() {
    let (auth, _) = open(loopback()).await;
    // The default rule counts.
    for i in 1..MAX_RULES {
        auth.create_rule("foo", rule(&format!("r{i:04}"), "", Access::Granted, 0)).await.unwrap();
    }
    let over = auth.create_rule("foo", rule("one-too-many", "", Access::Granted, 0)).await;
    assert!(matches!(over, Err(AuthError::Invalid(_))), "{over:?}");
    assert_eq!(auth.list_rules("foo").await.unwrap().len(), MAX_RULES);
}

#[tokio::test]
async fn max_accounts() {
    let (auth, store) = open(loopback()).await;
    auth.generate("foo", new_account("first", "s")).await.unwrap();
    // The rest straight into the store: hashing 10 000 secrets would take minutes.
    for i in 1..MAX_ACCOUNTS {
        let record = micro_store::Record::new(format!("account/foo/filler{i:05}"), "{}");
        store.write(DATABASE, TABLE, record).await.unwrap();
    }
    match auth.generate("foo", new_account("one-too-many", "s")).await {
        Err(AuthError::Invalid(message)) => assert!(message.contains("MAX_ACCOUNTS"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    auth.generate("bar", new_account("elsewhere", "s")).await.expect("each namespace has its own");
}

#[tokio::test]
async fn default_admin_on_loopback() {
    let (auth, store) = open(loopback()).await;
    assert_eq!(auth.generated_admin_password(), None);
    let token = auth.token("micro", login(ADMIN_ID, DEFAULT_ADMIN_PASSWORD), None).await.unwrap();
    let admin = auth.inspect(&token.access_token).unwrap();
    assert_eq!((admin.id.as_str(), admin.kind.as_str(), admin.issuer.as_str()), ("admin", "user", "micro"));
    assert_eq!(admin.scopes, vec!["admin".to_string()]);
    // No default account outside `micro`.
    assert!(auth.list_accounts("foo").await.unwrap().is_empty());

    // Reopening keeps the same admin; reopening beyond loopback rotates the default password.
    let again = Auth::for_tests(store.clone(), loopback()).await;
    assert_eq!(again.generated_admin_password(), None);
    again.token("micro", login(ADMIN_ID, DEFAULT_ADMIN_PASSWORD), None).await.unwrap();
    let public = Auth::for_tests(store.clone(), AuthOptions::default()).await;
    let rotated = public.generated_admin_password().expect("the default password was rotated").to_string();
    assert_eq!(
        public.token("micro", login(ADMIN_ID, DEFAULT_ADMIN_PASSWORD), None).await,
        Err(AuthError::InvalidCredentials)
    );
    public.token("micro", login(ADMIN_ID, &rotated), None).await.unwrap();
    // A later public boot leaves a non-default password alone.
    let later = Auth::for_tests(store, AuthOptions::default()).await;
    assert_eq!(later.generated_admin_password(), None);
    later.token("micro", login(ADMIN_ID, &rotated), None).await.unwrap();
}

#[tokio::test]
async fn default_admin_beyond_loopback_gets_a_generated_password() {
    let (auth, _) = open(AuthOptions::default()).await;
    let password = auth.generated_admin_password().expect("generated").to_string();
    assert!(password.len() >= 20, "{password}");
    assert_ne!(password, DEFAULT_ADMIN_PASSWORD);
    auth.token("micro", login(ADMIN_ID, &password), None).await.unwrap();
    assert!(auth.token("micro", login(ADMIN_ID, DEFAULT_ADMIN_PASSWORD), None).await.is_err());
}

#[tokio::test]
async fn default_admin_with_a_given_password() {
    let options = AuthOptions { admin_password: Some("s3cret".into()), ..AuthOptions::default() };
    let (auth, store) = open(options).await;
    assert_eq!(auth.generated_admin_password(), None);
    auth.token("micro", login(ADMIN_ID, "s3cret"), None).await.unwrap();
    assert!(auth.token("micro", login(ADMIN_ID, DEFAULT_ADMIN_PASSWORD), None).await.is_err());

    // A different configured password replaces the stored one at the next boot.
    let options =
        AuthOptions { admin_password: Some("changed".into()), loopback_only: true, ..Default::default() };
    let reopened = Auth::for_tests(store, options).await;
    reopened.token("micro", login(ADMIN_ID, "changed"), None).await.unwrap();
    assert!(reopened.token("micro", login(ADMIN_ID, "s3cret"), None).await.is_err());

    let empty = AuthOptions { admin_password: Some(String::new()), ..AuthOptions::default() };
    assert!(matches!(Auth::with_keys_for_tests(empty).await, Err(AuthError::Invalid(_))));
}

#[tokio::test]
async fn default_admin_disabled_or_not_needed() {
    let (auth, _) =
        open(AuthOptions { disable_admin: true, loopback_only: true, ..Default::default() }).await;
    assert!(auth.list_accounts("micro").await.unwrap().is_empty());
    assert_eq!(auth.generated_admin_password(), None);

    // A namespace that already has a user gets no admin.
    let store = store();
    let first =
        Auth::for_tests(store.clone(), AuthOptions { disable_admin: true, ..Default::default() }).await;
    first.generate("micro", new_account("alice", "pw")).await.unwrap();
    let second = Auth::for_tests(store, loopback()).await;
    let ids: Vec<String> = second.list_accounts("micro").await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, vec!["alice".to_string()]);
}

fn rule(id: &str, scope: &str, access: Access, priority: i32) -> Rule {
    Rule {
        id: id.into(),
        scope: scope.into(),
        resource: Resource::new("service", "foo", "*"),
        access,
        priority,
    }
}

/// The rule engine over the rules `auth` holds for `namespace`.
async fn judge(auth: &Auth, namespace: &str, account: Option<&Account>, resource: &Resource) -> Verdict {
    crate::rules::verify(&auth.rules(namespace).await, account, resource)
}

#[tokio::test]
async fn rules_start_with_the_default_which_stays_deleted() {
    let (auth, store) = open(loopback()).await;
    let call = Resource::new("service", "foo", "Foo.Call");
    // Verifying never writes: an untouched namespace is public without any stored key.
    assert_eq!(judge(&auth, "fresh", None, &call).await, Verdict::Allowed);
    assert!(
        store
            .read(DATABASE, TABLE, "rule", ReadOptions { prefix: true, ..Default::default() })
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(auth.list_rules("foo").await.unwrap(), vec![Rule::default_rule()]);
    assert_eq!(auth.list_rules("foo").await.unwrap(), vec![Rule::default_rule()]);

    let deny = rule("deny-anon", "*", Access::Granted, 10);
    auth.create_rule("foo", deny.clone()).await.unwrap();
    assert_eq!(auth.create_rule("foo", deny.clone()).await, Err(AuthError::AlreadyExists(DUPLICATE_RULE)));
    assert_eq!(DUPLICATE_RULE, "A rule with this ID already exists");
    assert_eq!(judge(&auth, "foo", None, &call).await, Verdict::Allowed, "default still grants");

    auth.delete_rule("foo", "default").await.unwrap();
    assert_eq!(auth.list_rules("foo").await.unwrap(), vec![deny.clone()]);
    assert_eq!(auth.list_rules("foo").await.unwrap(), vec![deny], "the default is not re-created");
    // The cache was invalidated: anonymous callers are now out, accounts in.
    assert_eq!(judge(&auth, "foo", None, &call).await, Verdict::Unauthorized);
    let bob = Account { id: "bob".into(), issuer: "foo".into(), ..Account::default() };
    assert_eq!(judge(&auth, "foo", Some(&bob), &call).await, Verdict::Allowed);
    assert_eq!(
        judge(&auth, "foo", Some(&bob), &Resource::new("service", "bar", "Bar.Call")).await,
        Verdict::Forbidden
    );

    auth.delete_rule("foo", "deny-anon").await.unwrap();
    assert!(auth.list_rules("foo").await.unwrap().is_empty());
    assert_eq!(judge(&auth, "foo", Some(&bob), &call).await, Verdict::Forbidden);
    assert_eq!(auth.delete_rule("foo", "deny-anon").await, Ok(()), "a missing rule is deleted quietly");

    // Deleting the default of a never-listed namespace also sticks.
    auth.delete_rule("bar", "default").await.unwrap();
    assert!(auth.list_rules("bar").await.unwrap().is_empty());
    // Creating a rule in a fresh namespace keeps the default beside it.
    auth.create_rule("baz", rule("x", "admin", Access::Denied, 1)).await.unwrap();
    assert_eq!(auth.list_rules("baz").await.unwrap().len(), 2);

    assert_eq!(judge(&auth, "Bad Namespace", None, &call).await, Verdict::Unauthorized);
}

#[tokio::test]
async fn rule_validation() {
    let (auth, _) = open(loopback()).await;
    let invalid = |result: Result<(), AuthError>| matches!(result, Err(AuthError::Invalid(_)));
    assert!(invalid(auth.create_rule("foo", rule("", "", Access::Granted, 0)).await));
    let mut no_endpoint = rule("x", "", Access::Granted, 0);
    no_endpoint.resource.endpoint.clear();
    assert!(invalid(auth.create_rule("foo", no_endpoint).await));
    assert!(invalid(
        auth.create_rule("foo", rule(&"x".repeat(MAX_ID_BYTES + 1), "", Access::Granted, 0)).await
    ));
    assert_eq!(auth.list_rules("foo").await.unwrap(), vec![Rule::default_rule()]);
}

// ---- gRPC ----

fn with_context<T>(message: T, context: Option<Context>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(context) = context {
        request.extensions_mut().insert(context);
    }
    request
}

fn options(namespace: &str) -> Option<micro_proto::auth::Options> {
    Some(micro_proto::auth::Options { namespace: namespace.into() })
}

#[tokio::test]
async fn grpc_services() {
    use micro_proto::auth::*;
    let (auth, _) = open(loopback()).await;
    let auth = Arc::new(auth);
    let _mountable = grpc::services(auth.clone());
    let auth_service = grpc::AuthService::new(auth.clone());
    let accounts = grpc::AccountsService::new(auth.clone());
    let rules = grpc::RulesService::new(auth);

    // Token needs no account; the admin logs in.
    let request = TokenRequest { id: "admin".into(), secret: "micro".into(), ..Default::default() };
    let token = auth_service.token(with_context(request, None)).await.unwrap().into_inner().token.unwrap();
    let admin = auth_service
        .inspect(with_context(InspectRequest { token: token.access_token.clone(), options: None }, None))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!((admin.id.as_str(), admin.issuer.as_str(), admin.secret.as_str()), ("admin", "micro", ""));
    let admin_context = Context::with_account("micro", auth_service_account(&admin));

    let bad = auth_service.token(with_context(TokenRequest::default(), None)).await.unwrap_err();
    assert_eq!((bad.code(), bad.message()), (Code::InvalidArgument, CREDENTIALS_REQUIRED));
    let wrong = TokenRequest { id: "admin".into(), secret: "nope".into(), ..Default::default() };
    let wrong = auth_service.token(with_context(wrong, None)).await.unwrap_err();
    assert_eq!((wrong.code(), wrong.message()), (Code::Unauthenticated, INVALID_CREDENTIALS));
    let refresh =
        TokenRequest { refresh_token: token.refresh_token.clone(), token_expiry: 60, ..Default::default() };
    let refreshed =
        auth_service.token(with_context(refresh, None)).await.unwrap().into_inner().token.unwrap();
    assert_eq!(refreshed.expiry - refreshed.created, 60);

    // Generate needs an account authorised for the namespace.
    let generate = || GenerateRequest { id: "bob".into(), options: options("foo"), ..Default::default() };
    let anonymous = auth_service.generate(with_context(generate(), None)).await.unwrap_err();
    assert_eq!((anonymous.code(), anonymous.message()), (Code::Unauthenticated, "An account is required"));
    let generated = auth_service
        .generate(with_context(generate(), Some(admin_context.clone())))
        .await
        .unwrap()
        .into_inner();
    let bob = generated.account.unwrap();
    assert_eq!((bob.issuer.as_str(), bob.r#type.as_str(), bob.secret.len()), ("foo", "user", 36));
    let duplicate =
        auth_service.generate(with_context(generate(), Some(admin_context.clone()))).await.unwrap_err();
    assert_eq!((duplicate.code(), duplicate.message()), (Code::AlreadyExists, DUPLICATE_ID));

    // An account of namespace foo may not act in micro, nor delete itself.
    let bob_context = Context::with_account("foo", auth_service_account(&bob));
    let listed = accounts
        .list(with_context(ListAccountsRequest { options: None }, Some(bob_context.clone())))
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(listed.len(), 1);
    assert!(listed.iter().all(|account| account.secret.is_empty()));
    let denied = accounts
        .list(with_context(ListAccountsRequest { options: options("micro") }, Some(bob_context.clone())))
        .await
        .unwrap_err();
    assert_eq!((denied.code(), denied.message()), (Code::PermissionDenied, "Access denied to namespace"));
    let delete_self = DeleteAccountRequest { id: "bob".into(), options: None };
    let refused = accounts.delete(with_context(delete_self, Some(bob_context.clone()))).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (Code::FailedPrecondition, CANNOT_DELETE_SELF));

    let change = ChangeSecretRequest {
        id: "bob".into(),
        old_secret: "wrong".into(),
        new_secret: "new".into(),
        options: None,
    };
    let incorrect =
        accounts.change_secret(with_context(change, Some(bob_context.clone()))).await.unwrap_err();
    assert_eq!((incorrect.code(), incorrect.message()), (Code::InvalidArgument, SECRET_NOT_CORRECT));

    // Rules.
    let list = || ListRequest { options: options("foo") };
    let listed =
        rules.list(with_context(list(), Some(bob_context.clone()))).await.unwrap().into_inner().rules;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "default");
    assert_eq!(listed[0].access, Access::Granted as i32);
    let resource = Some(Resource { name: "foo".into(), r#type: "service".into(), endpoint: "*".into() });
    let unknown_access = CreateRequest {
        rule: Some(Rule { id: "r".into(), resource: resource.clone(), ..Default::default() }),
        options: None,
    };
    let invalid = rules.create(with_context(unknown_access, Some(bob_context.clone()))).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let create = || CreateRequest {
        rule: Some(Rule {
            id: "r".into(),
            scope: "*".into(),
            resource: resource.clone(),
            access: Access::Denied as i32,
            priority: 3,
        }),
        options: None,
    };
    rules.create(with_context(create(), Some(bob_context.clone()))).await.unwrap();
    let again = rules.create(with_context(create(), Some(bob_context.clone()))).await.unwrap_err();
    assert_eq!((again.code(), again.message()), (Code::AlreadyExists, DUPLICATE_RULE));
    let delete = DeleteRequest { id: "default".into(), options: None };
    rules.delete(with_context(delete, Some(bob_context.clone()))).await.unwrap();
    let listed = rules.list(with_context(list(), Some(bob_context))).await.unwrap().into_inner().rules;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].priority), ("r", 3));

    // Inspect of garbage is unauthenticated.
    let garbage = InspectRequest { token: "a.b.c".into(), options: None };
    assert_eq!(
        auth_service.inspect(with_context(garbage, None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

fn auth_service_account(account: &micro_proto::auth::Account) -> Account {
    Account {
        id: account.id.clone(),
        name: account.name.clone(),
        kind: account.r#type.clone(),
        issuer: account.issuer.clone(),
        scopes: account.scopes.clone(),
        metadata: account.metadata.clone().into_iter().collect(),
    }
}

#[tokio::test]
async fn open_creates_and_reuses_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store();
    let first = Auth::open(store.clone(), dir.path(), loopback()).await.unwrap();
    let token = first.token("micro", login(ADMIN_ID, DEFAULT_ADMIN_PASSWORD), None).await.unwrap();
    let second = Auth::open(store, dir.path(), loopback()).await.unwrap();
    assert_eq!(second.inspect(&token.access_token).unwrap().id, ADMIN_ID, "same key after a restart");
    assert_eq!(first.public_key_pem(), second.public_key_pem());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Expired and tampered tokens are rejected.
    let admin = second.inspect(&token.access_token).unwrap();
    assert_eq!(second.inspect(&second.expired_token(&admin)), Err(AuthError::InvalidToken("expired".into())));
    // Change one character in the middle of the signature.
    let mut tampered = token.access_token.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(matches!(second.inspect(&tampered), Err(AuthError::InvalidToken(_))));
}

#[tokio::test]
async fn works_over_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(micro_store::file::FileStore::open(&dir.path().join("store.redb")).unwrap());
    let auth = Auth::open(store.clone(), dir.path(), loopback()).await.unwrap();
    auth.generate("foo", new_account("bob", "pw")).await.unwrap();
    let token = auth.token("foo", login("bob", "pw"), None).await.unwrap();
    auth.delete_rule("foo", "default").await.unwrap();
    drop(auth);
    let auth = Auth::open(store, dir.path(), loopback()).await.unwrap();
    auth.token("foo", Credentials::RefreshToken(token.refresh_token), None).await.unwrap();
    assert!(auth.list_rules("foo").await.unwrap().is_empty());
    let ids: Vec<String> = auth.list_accounts("micro").await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, vec![ADMIN_ID.to_string()]);
}
