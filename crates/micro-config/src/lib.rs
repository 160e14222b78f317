//! The config service: one JSON document per namespace, addressed by dotted paths, with
//! merge-on-set semantics, sealed secrets and a change stream (docs/compatibility.md §3.4, §8).
//!
//! Layout, from the inside out:
//!
//! - [`document`]: the pure data model, with no I/O. [`document::Path`] parses and bounds dotted
//!   paths; [`document::Document`] applies Set/Get/Delete with the merge rules of
//!   docs/compatibility.md §8 and converts to and from the stored format below.
//! - [`secret`]: [`SecretKey`] seals secret leaves with XChaCha20-Poly1305 and is loaded from
//!   (or created as) a 0600 key file, or taken from `MICRO_CONFIG_SECRET_KEY`.
//! - [`service`]: [`Config`], the service core. It reads and writes documents in the platform
//!   [`micro_store::Store`], serialises read-modify-write per namespace, and fans changes out to
//!   [`Watcher`]s.
//! - [`grpc`]: the `config.Config` gRPC adapter over [`Config`] and the one place
//!   [`ConfigError`] becomes a [`tonic::Status`].
//!
//! # Storage format
//!
//! Each namespace's document is one store record: database [`DATABASE`] (`micro`), table
//! [`TABLE`] (`config`), key = the namespace, value = UTF-8 JSON in the wrapped-leaf format of the
//! original (docs/compatibility.md §8), so that types and secret flags survive:
//!
//! ```json
//! {"key": {"subkey": {"value": "\"val1\"", "leaf": true},
//!          "pin":    {"value": "<base64(nonce || ciphertext)>", "leaf": true, "secret": true}}}
//! ```
//!
//! Interior nodes are plain JSON objects; every leaf is an object with `"leaf": true` whose
//! `value` is the JSON text of the leaf's value (a scalar, an array, or `null`). A secret leaf's
//! `value` is instead the base64 of a random 24-byte nonce followed by the XChaCha20-Poly1305
//! ciphertext of that JSON text. The format is unambiguous: a child of an interior node is always
//! an object, so a user key named `leaf` can never hold the JSON `true` that marks a leaf.
//!
//! # Limits
//!
//! [`document::MAX_PATH_BYTES`], [`document::MAX_DEPTH`], [`document::MAX_VALUE_BYTES`] and
//! [`document::MAX_DOCUMENT_BYTES`] bound every input; exceeding one is a clear error and changes
//! nothing.

pub mod document;
pub mod grpc;
pub mod secret;
pub mod service;

pub use secret::{SecretError, SecretKey, SecretKeyError};
pub use service::{Action, Change, Config, ConfigError, DATABASE, TABLE, WATCH_BUFFER, WatchError, Watcher};
