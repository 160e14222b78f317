//! Who may do what: the one admission decision of micro (docs/security.md), used by the
//! server's gRPC gate on :8081, its HTTP gateway and the `micro` framework inside every user
//! service, so the same caller gets the same answer on every path. It holds no storage: each
//! edge brings the namespace's rules (the server from its store, a service over `Rules.List`).
//!
//! - [`rules`]: [`Rule`], [`Resource`], [`Verdict`] and the pure rule engine [`rules::verify`];
//! - [`token`]: the claims of an access token and their verification with the server's public
//!   key ([`token::Verifier`]);
//! - [`admission`]: the decision itself, token → account → namespace → rules → allowed, or a
//!   [`Refusal`] that each edge answers as gRPC `UNAUTHENTICATED`/`PERMISSION_DENIED` or HTTP
//!   401/403 ([`admission::admit`]).
//!
//! # The contract
//!
//! An account of namespace A acts in namespace B only if A = B or A is `micro` (the platform's
//! namespace, whose accounts act everywhere); any other foreign token is refused before a rule is
//! read, on every path, login (`Auth.Token`) excepted. The rules that judge a call are those of
//! the namespace it acts in, and the resource a rule names is the **registered service name**
//! (`service:<name>:<Handler.Method>`), whichever way the call was routed.

pub mod admission;
pub mod rules;
pub mod token;

pub use admission::{NAMESPACE_HEADER, Refusal, admit};
pub use micro_core::Account;
pub use rules::{Access, Resource, Rule, Verdict};
