//! The auth service: accounts, secrets, access tokens, refresh tokens and access rules
//! (docs/compatibility.md §3.2 and §6), hardened as docs/security.md describes.
//!
//! - Secrets are hashed with argon2id and never stored or returned in plain (except once, in
//!   the answer to the `Generate` that created them).
//! - Access tokens are EdDSA (Ed25519) JWTs signed with a key generated on first boot
//!   (`<key_dir>/auth_key`, mode 0600); [`Auth::inspect`] verifies them without I/O.
//! - Refresh tokens are opaque random strings stored hashed; each is single use (rotation)
//!   and all of an account's are revoked when its secret changes or it is deleted.
//! - The default `admin` of namespace `micro` only gets the well-known password `micro`
//!   while every listener is on loopback.
//!
//! Layout:
//! - [`service`]: [`Auth`], the service over a [`micro_store::Store`], and its store layout;
//! - [`rules`]: [`Rule`], [`Resource`], [`Verdict`] and the rule engine, re-exported from
//!   micro-access, the one copy the gate, the gateway and the framework all judge with;
//! - [`grpc`]: the `auth.Auth`, `auth.Accounts` and `auth.Rules` gRPC services;
//! - [`error`]: [`AuthError`] and the client-visible messages;
//! - [`throttle`]: the failed-login limits per account and per peer, with backoff;
//! - [`peer`]: who a login comes from (the connection, or the client the gateway names);
//! - `keys`: the signing key file and JWTs; `secret`: argon2id on a bounded queue, and random
//!   strings.

use std::time::Duration;

pub mod error;
pub mod grpc;
mod keys;
pub mod peer;
mod secret;
pub mod service;
pub mod throttle;

pub use error::AuthError;
pub use keys::{KEY_FILE, generate_pem as generate_signing_key};
pub use micro_access::rules::{self, Access, Resource, Rule, Verdict};
pub use micro_core::Account;
pub use secret::{HASH_THREADS, MAX_QUEUED_HASHES};
pub use service::{Auth, AuthOptions, Credentials, NewAccount, Token};

/// Longest account id or name, rule id, metadata key, or resource type/name/endpoint, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest secret (or password, or refresh token) accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 8 * 1024;
/// Most scopes one account may hold.
pub const MAX_SCOPES: usize = 64;
/// Longest scope name (of an account or a rule), in bytes.
pub const MAX_SCOPE_BYTES: usize = 128;
/// Most metadata entries one account may hold.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Most bytes of metadata (keys plus values) one account may hold. Metadata travels in every
/// access token, so it is kept small.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;
/// Most rules one namespace may hold.
pub const MAX_RULES: usize = 1024;
/// Most accounts one namespace holds (so `Accounts.List` stays bounded); one more is refused.
pub const MAX_ACCOUNTS: usize = 10_000;
/// Longest access-token lifetime `Auth.Token` grants; longer requests are capped.
pub const MAX_TOKEN_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// The access-token lifetime when a request asks for none.
pub const DEFAULT_TOKEN_EXPIRY: Duration = Duration::from_secs(10 * 60);
/// How long an unused refresh token stays valid.
pub const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How long [`Auth::verify`] trusts its in-memory copy of a namespace's rules; local changes
/// apply at once, changes made by another server sharing the store within this time.
pub const RULES_CACHE_TTL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests;
