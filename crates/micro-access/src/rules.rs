//! Access rules and the pure rule engine (docs/compatibility.md §6.5), the one copy every edge
//! judges with.
//!
//! A [`Rule`] grants or denies a scope access to a [`Resource`] pattern. [`verify`] picks the
//! rules matching a resource, orders them by priority and lets the first decisive one answer.

use serde::{Deserialize, Serialize};

use micro_core::Account;

/// The scope of a rule that applies to everyone, anonymous callers included.
pub const SCOPE_PUBLIC: &str = "";
/// The scope of a rule that applies to every authenticated account.
pub const SCOPE_ACCOUNT: &str = "*";
/// The id of the rule every namespace starts with.
pub const DEFAULT_RULE_ID: &str = "default";

/// What a request touches: `type:name:endpoint`, e.g. `service:helloworld:Helloworld.Call`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resource {
    /// The kind of resource, e.g. `service`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The resource's name, e.g. the service name.
    pub name: String,
    /// The endpoint, e.g. `Helloworld.Call` or an HTTP path `/foo/bar`.
    pub endpoint: String,
}

impl Resource {
    /// The resource `kind:name:endpoint`.
    pub fn new(kind: impl Into<String>, name: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self { kind: kind.into(), name: name.into(), endpoint: endpoint.into() }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.endpoint)
    }
}

/// Whether a rule lets its scope in or keeps it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Granted,
    Denied,
}

/// One access rule of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Unique within the namespace.
    pub id: String,
    /// [`SCOPE_PUBLIC`], [`SCOPE_ACCOUNT`] or a scope name matched against account scopes.
    pub scope: String,
    /// The resources the rule covers; each part may be `*`, endpoints also `prefix/*`.
    pub resource: Resource,
    pub access: Access,
    /// Higher priorities are considered first; ties keep their stored order.
    pub priority: i32,
}

impl Rule {
    /// The rule every namespace starts with: everyone may call everything.
    pub fn default_rule() -> Self {
        Rule {
            id: DEFAULT_RULE_ID.to_string(),
            scope: SCOPE_PUBLIC.to_string(),
            resource: Resource::new("*", "*", "*"),
            access: Access::Granted,
            priority: 0,
        }
    }
}

impl From<Rule> for micro_proto::auth::Rule {
    fn from(rule: Rule) -> Self {
        use micro_proto::auth::Access as Wire;
        micro_proto::auth::Rule {
            id: rule.id,
            scope: rule.scope,
            resource: Some(micro_proto::auth::Resource {
                name: rule.resource.name,
                r#type: rule.resource.kind,
                endpoint: rule.resource.endpoint,
            }),
            access: match rule.access {
                Access::Granted => Wire::Granted,
                Access::Denied => Wire::Denied,
            } as i32,
            priority: rule.priority,
        }
    }
}

impl TryFrom<micro_proto::auth::Rule> for Rule {
    /// Why the wire rule is no rule, as a sentence for the caller.
    type Error = &'static str;

    fn try_from(rule: micro_proto::auth::Rule) -> Result<Self, Self::Error> {
        use micro_proto::auth::Access as Wire;
        let resource = rule.resource.ok_or("the rule needs a resource")?;
        let access = match Wire::try_from(rule.access) {
            Ok(Wire::Granted) => Access::Granted,
            Ok(Wire::Denied) => Access::Denied,
            _ => return Err("the rule's access must be GRANTED or DENIED"),
        };
        Ok(Rule {
            id: rule.id,
            scope: rule.scope,
            resource: Resource { kind: resource.r#type, name: resource.name, endpoint: resource.endpoint },
            access,
            priority: rule.priority,
        })
    }
}

/// The outcome of a rule check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call may proceed.
    Allowed,
    /// The caller has no account and nothing lets anonymous callers in (HTTP 401).
    Unauthorized,
    /// The caller has an account but is not allowed, or a public deny matched (HTTP 403).
    Forbidden,
}

/// Decides whether `account` (or an anonymous caller) may access `resource` under `rules`.
///
/// Candidates are the rules whose type is `*` or the resource's, whose name is `*` or the
/// resource's, and whose endpoint is `*`, the resource's, or for `/`-paths one of the prefix
/// wildcards (`/*`, `/foo/*`, `/foo/bar/*` for `/foo/bar`); all compared case-insensitively.
/// They are sorted by priority, highest first (stable), and the first decisive rule wins:
/// a public rule decides for everyone; without an account other rules are skipped; a `*` rule
/// decides for any account; a scope rule decides for accounts holding the scope. When nothing
/// decides: [`Verdict::Unauthorized`] without an account, else [`Verdict::Forbidden`].
pub fn verify(rules: &[Rule], account: Option<&Account>, resource: &Resource) -> Verdict {
    let denied = if account.is_some() { Verdict::Forbidden } else { Verdict::Unauthorized };
    let endpoints = endpoint_patterns(&resource.endpoint);
    let mut candidates: Vec<&Rule> = rules
        .iter()
        .filter(|rule| matches_any(&rule.resource.kind, &["*", &resource.kind]))
        .filter(|rule| matches_any(&rule.resource.name, &["*", &resource.name]))
        .filter(|rule| endpoints.iter().any(|pattern| rule.resource.endpoint.eq_ignore_ascii_case(pattern)))
        .collect();
    candidates.sort_by_key(|rule| std::cmp::Reverse(rule.priority));

    for rule in candidates {
        let applies = if rule.scope == SCOPE_PUBLIC {
            true
        } else if let Some(account) = account {
            rule.scope == SCOPE_ACCOUNT
                || account.scopes.iter().any(|scope| scope.eq_ignore_ascii_case(&rule.scope))
        } else {
            false
        };
        if applies {
            return match rule.access {
                Access::Granted => Verdict::Allowed,
                Access::Denied => denied,
            };
        }
    }
    denied
}

fn matches_any(value: &str, candidates: &[&str]) -> bool {
    candidates.iter().any(|candidate| value.eq_ignore_ascii_case(candidate))
}

/// `*`, the endpoint itself and, for paths, every `prefix/*` wildcard.
fn endpoint_patterns(endpoint: &str) -> Vec<String> {
    let mut patterns = vec!["*".to_string(), endpoint.to_string()];
    let parts: Vec<&str> = endpoint.split('/').collect();
    if parts.len() > 1 {
        for end in 1..=parts.len() {
            patterns.push(format!("{}/*", parts[..end].join("/")));
        }
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, scope: &str, resource: &str, access: Access, priority: i32) -> Rule {
        let mut parts = resource.splitn(3, ':');
        let mut next = || parts.next().unwrap().to_string();
        Rule {
            id: id.into(),
            scope: scope.into(),
            resource: Resource { kind: next(), name: next(), endpoint: next() },
            access,
            priority,
        }
    }

    fn account(scopes: &[&str]) -> Account {
        Account {
            id: "bob".into(),
            issuer: "micro".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Account::default()
        }
    }

    fn res(kind: &str, name: &str, endpoint: &str) -> Resource {
        Resource::new(kind, name, endpoint)
    }

    #[test]
    fn rules_cross_the_wire_unchanged() {
        let rule = rule("r", "admin", "service:foo:Foo.Call", Access::Denied, -3);
        let wire = micro_proto::auth::Rule::from(rule.clone());
        assert_eq!(Rule::try_from(wire.clone()), Ok(rule));
        let unknown = micro_proto::auth::Rule { access: 0, ..wire.clone() };
        assert_eq!(Rule::try_from(unknown), Err("the rule's access must be GRANTED or DENIED"));
        let bare = micro_proto::auth::Rule { resource: None, ..wire };
        assert_eq!(Rule::try_from(bare), Err("the rule needs a resource"));
    }

    #[test]
    fn default_rule_lets_everyone_in() {
        let rules = [Rule::default_rule()];
        let r = res("service", "foo", "Foo.Call");
        assert_eq!(verify(&rules, None, &r), Verdict::Allowed);
        assert_eq!(verify(&rules, Some(&account(&[])), &r), Verdict::Allowed);
        assert_eq!(Rule::default_rule().resource.to_string(), "*:*:*");
    }

    #[test]
    fn no_rules_or_no_match_denies() {
        let r = res("service", "foo", "Foo.Call");
        assert_eq!(verify(&[], None, &r), Verdict::Unauthorized);
        assert_eq!(verify(&[], Some(&account(&["admin"])), &r), Verdict::Forbidden);
        let other = [rule("x", "", "service:bar:*", Access::Granted, 0)];
        assert_eq!(verify(&other, None, &r), Verdict::Unauthorized);
        assert_eq!(verify(&other, Some(&account(&[])), &r), Verdict::Forbidden);
    }

    #[test]
    fn public_deny_is_forbidden_or_unauthorized() {
        let rules = [rule("deny", "", "service:foo:*", Access::Denied, 1), Rule::default_rule()];
        let r = res("service", "foo", "Foo.Call");
        assert_eq!(verify(&rules, None, &r), Verdict::Unauthorized);
        assert_eq!(verify(&rules, Some(&account(&["admin"])), &r), Verdict::Forbidden);
        assert_eq!(verify(&rules, None, &res("service", "bar", "Bar.Call")), Verdict::Allowed);
    }

    #[test]
    fn anonymous_callers_skip_account_rules() {
        let rules = [
            rule("any", "*", "service:foo:*", Access::Granted, 10),
            rule("admins", "admin", "service:foo:*", Access::Granted, 10),
        ];
        let r = res("service", "foo", "Foo.Call");
        assert_eq!(verify(&rules, None, &r), Verdict::Unauthorized);
        assert_eq!(verify(&rules, Some(&account(&[])), &r), Verdict::Allowed);
    }

    #[test]
    fn any_account_scope() {
        let deny = [rule("d", "*", "*:*:*", Access::Denied, 5), Rule::default_rule()];
        let r = res("service", "foo", "Foo.Call");
        assert_eq!(verify(&deny, Some(&account(&[])), &r), Verdict::Forbidden);
        assert_eq!(verify(&deny, None, &r), Verdict::Allowed, "the public default still lets anonymous in");
        let grant = [rule("g", "*", "*:*:*", Access::Granted, 0)];
        assert_eq!(verify(&grant, Some(&account(&[])), &r), Verdict::Allowed);
        assert_eq!(verify(&grant, None, &r), Verdict::Unauthorized);
    }

    #[test]
    fn scoped_rules_match_account_scopes_case_insensitively() {
        let rules = [
            rule("deny-guests", "guest", "service:foo:*", Access::Denied, 2),
            rule("admins", "admin", "service:foo:*", Access::Granted, 1),
        ];
        let r = res("service", "foo", "Foo.Call");
        assert_eq!(verify(&rules, Some(&account(&["ADMIN"])), &r), Verdict::Allowed);
        assert_eq!(verify(&rules, Some(&account(&["guest", "admin"])), &r), Verdict::Forbidden);
        assert_eq!(verify(&rules, Some(&account(&["other"])), &r), Verdict::Forbidden);
    }

    #[test]
    fn priority_orders_and_ties_keep_stored_order() {
        let r = res("service", "foo", "Foo.Call");
        let high_deny = [Rule::default_rule(), rule("d", "", "service:foo:Foo.Call", Access::Denied, 1)];
        assert_eq!(verify(&high_deny, None, &r), Verdict::Unauthorized);
        let low_deny = [Rule::default_rule(), rule("d", "", "service:foo:Foo.Call", Access::Denied, -1)];
        assert_eq!(verify(&low_deny, None, &r), Verdict::Allowed);
        let tie = [rule("d", "", "*:*:*", Access::Denied, 0), Rule::default_rule()];
        assert_eq!(verify(&tie, None, &r), Verdict::Unauthorized, "first of equal priority wins");
    }

    #[test]
    fn resource_matching() {
        let grant = |pattern: &str| [rule("g", "", pattern, Access::Granted, 0)];
        let call = res("service", "foo", "Foo.Call");
        assert_eq!(verify(&grant("SERVICE:FOO:foo.call"), None, &call), Verdict::Allowed);
        assert_eq!(verify(&grant("*:foo:Foo.Call"), None, &call), Verdict::Allowed);
        assert_eq!(verify(&grant("service:*:Foo.Call"), None, &call), Verdict::Allowed);
        assert_eq!(verify(&grant("api:foo:Foo.Call"), None, &call), Verdict::Unauthorized);
        assert_eq!(verify(&grant("service:foo:Foo.Other"), None, &call), Verdict::Unauthorized);
        assert_eq!(verify(&grant("service:foo:Foo.*"), None, &call), Verdict::Unauthorized, "no dot globs");

        let path = res("api", "web", "/foo/bar/baz");
        for pattern in ["/*", "/foo/*", "/foo/bar/*", "/foo/bar/baz/*", "/FOO/*", "/foo/bar/baz"] {
            assert_eq!(
                verify(&grant(&format!("api:web:{pattern}")), None, &path),
                Verdict::Allowed,
                "{pattern}"
            );
        }
        for pattern in ["/foo", "/fo/*", "/foo/ba*", "/other/*"] {
            assert_eq!(
                verify(&grant(&format!("api:web:{pattern}")), None, &path),
                Verdict::Unauthorized,
                "{pattern}"
            );
        }
    }
}
