//! Permissions: what a user may do in a vhost, decided as RabbitMQ's internal authorisation
//! backend decides it.
//!
//! A user has, per vhost, three regular expressions — configure, write, read — matched
//! against the name of the exchange or queue an operation touches (unanchored, as Erlang's
//! `re:run`; an empty expression matches only the empty name, RabbitMQ's `^$`). A user with no
//! permissions in a vhost may not open a connection to it. Topic permissions add, per user,
//! vhost and topic exchange, write and read expressions on routing keys (publish, bind);
//! `{username}` and `{vhost}` in them are replaced when they are set. Where each permission
//! is checked is the command path's business ([`crate::command`]) and the front end's
//! (publish, consume, get).
//!
//! A front end holds an [`Access`]: one user's grants in one vhost, taken from [`Permissions`]
//! at a version; a change to any permission raises the broker's version, and an [`Access`]
//! older than it is taken again before its next check, so a change applies to the next
//! operation without reconnecting.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use crate::error::{BrokerError, Result};

/// Longest permission expression accepted, in bytes.
pub const PATTERN_MAX_BYTES: usize = 4096;
/// Compiled size limit of one expression (the `regex` crate's measure).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// What an operation needs on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Configure,
    Write,
    Read,
}

/// The kind of a resource, as it is named in a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Exchange,
    Queue,
}

impl Resource {
    fn as_str(self) -> &'static str {
        match self {
            Resource::Exchange => "exchange",
            Resource::Queue => "queue",
        }
    }
}

/// One permission expression, compiled.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// `.*` (the common grant): no regex run.
    Any,
    Regex(Regex),
}

impl Pattern {
    /// Compiles `source` with RabbitMQ's reading (see the module doc).
    pub fn parse(source: &str) -> Result<Pattern> {
        if source.len() > PATTERN_MAX_BYTES {
            return Err(BrokerError::PreconditionFailed(format!(
                "permission expression longer than {PATTERN_MAX_BYTES} bytes"
            )));
        }
        let matcher = match source {
            ".*" => Matcher::Any,
            "" => Matcher::Regex(compile("^$", source)?),
            _ => Matcher::Regex(compile(source, source)?),
        };
        Ok(Pattern { source: source.to_owned(), matcher })
    }

    /// `.*`.
    pub fn any() -> Pattern {
        Pattern { source: ".*".into(), matcher: Matcher::Any }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Regex(re) => re.is_match(name),
        }
    }
}

fn compile(regex: &str, source: &str) -> Result<Regex> {
    RegexBuilder::new(regex).size_limit(PATTERN_SIZE_LIMIT).dfa_size_limit(PATTERN_SIZE_LIMIT).build().map_err(|e| {
        BrokerError::PreconditionFailed(format!("invalid regular expression '{}': {e}", source.escape_debug()))
    })
}

/// A user's configure, write and read expressions in one vhost.
#[derive(Debug, Clone)]
pub struct Grant {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

impl Grant {
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Grant> {
        Ok(Grant { configure: Pattern::parse(configure)?, write: Pattern::parse(write)?, read: Pattern::parse(read)? })
    }

    /// `.*` for all three: what the default user has on the default vhost.
    pub fn full() -> Grant {
        Grant { configure: Pattern::any(), write: Pattern::any(), read: Pattern::any() }
    }

    fn pattern(&self, permission: Permission) -> &Pattern {
        match permission {
            Permission::Configure => &self.configure,
            Permission::Write => &self.write,
            Permission::Read => &self.read,
        }
    }
}

/// A user's write and read expressions on one topic exchange's routing keys, as set
/// (`source`) and with `{username}`/`{vhost}` replaced (`write`/`read`).
#[derive(Debug, Clone)]
pub struct TopicGrant {
    pub write_source: String,
    pub read_source: String,
    write: Pattern,
    read: Pattern,
}

impl TopicGrant {
    pub fn new(user: &str, vhost: &str, write: &str, read: &str) -> Result<TopicGrant> {
        let expand = |s: &str| Pattern::parse(&s.replace("{username}", user).replace("{vhost}", vhost));
        Ok(TopicGrant {
            write_source: write.to_owned(),
            read_source: read.to_owned(),
            write: expand(write)?,
            read: expand(read)?,
        })
    }

    fn pattern(&self, permission: Permission) -> Option<&Pattern> {
        match permission {
            Permission::Configure => None,
            Permission::Write => Some(&self.write),
            Permission::Read => Some(&self.read),
        }
    }
}

/// Everything one user may do in one vhost.
#[derive(Debug, Clone, Default)]
pub struct VhostGrants {
    /// None: no permissions here (topic permissions alone do not admit to the vhost).
    pub grant: Option<Grant>,
    /// Topic permissions by exchange name.
    pub topics: BTreeMap<Vec<u8>, TopicGrant>,
}

/// Every user's permissions, by (user, vhost).
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    by_user_vhost: HashMap<(String, String), Arc<VhostGrants>>,
}

impl Permissions {
    pub fn get(&self, user: &str, vhost: &str) -> Option<&Arc<VhostGrants>> {
        self.by_user_vhost.get(&(user.to_owned(), vhost.to_owned()))
    }

    fn edit(&mut self, user: &str, vhost: &str, f: impl FnOnce(&mut VhostGrants)) {
        let key = (user.to_owned(), vhost.to_owned());
        let mut grants = self.by_user_vhost.get(&key).map(|g| (**g).clone()).unwrap_or_default();
        f(&mut grants);
        if grants.grant.is_none() && grants.topics.is_empty() {
            self.by_user_vhost.remove(&key);
        } else {
            self.by_user_vhost.insert(key, Arc::new(grants));
        }
    }

    pub fn set(&mut self, user: &str, vhost: &str, grant: Grant) {
        self.edit(user, vhost, |g| g.grant = Some(grant));
    }

    pub fn clear(&mut self, user: &str, vhost: &str) {
        self.edit(user, vhost, |g| g.grant = None);
    }

    pub fn set_topic(&mut self, user: &str, vhost: &str, exchange: &[u8], grant: TopicGrant) {
        self.edit(user, vhost, |g| {
            g.topics.insert(exchange.to_vec(), grant);
        });
    }

    /// Clears one exchange's topic permission, or (`None`) all of them in the vhost.
    pub fn clear_topic(&mut self, user: &str, vhost: &str, exchange: Option<&[u8]>) {
        self.edit(user, vhost, |g| match exchange {
            Some(x) => {
                g.topics.remove(x);
            }
            None => g.topics.clear(),
        });
    }

    /// Forgets everything of a deleted user.
    pub fn remove_user(&mut self, user: &str) {
        self.by_user_vhost.retain(|(u, _), _| u != user);
    }

    /// Forgets everything in a deleted vhost.
    pub fn remove_vhost(&mut self, vhost: &str) {
        self.by_user_vhost.retain(|(_, v), _| v != vhost);
    }

    /// Every (user, vhost, grants), sorted by user then vhost.
    pub fn list(&self) -> Vec<(&str, &str, &Arc<VhostGrants>)> {
        let mut all: Vec<_> = self.by_user_vhost.iter().map(|((u, v), g)| (u.as_str(), v.as_str(), g)).collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        all
    }
}

/// What one user may do in one vhost, as of a permissions version (see the module doc).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Access {
    user: Arc<str>,
    vhost: Arc<str>,
    /// None: unrestricted (the node itself, or a trusted caller).
    grants: Option<Arc<VhostGrants>>,
    version: u64,
}

impl Access {
    pub fn new(user: &str, vhost: &str, grants: Option<Arc<VhostGrants>>, version: u64) -> Access {
        let grants = Some(grants.unwrap_or_default());
        Access { user: user.into(), vhost: vhost.into(), grants, version }
    }

    /// Everything allowed: for what the node does itself.
    pub fn unrestricted() -> Access {
        Access { user: "".into(), vhost: "".into(), grants: None, version: 0 }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }

    /// The permissions version this was taken at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the user has permissions in the vhost (may open a connection to it).
    pub fn may_enter(&self) -> bool {
        self.grants.as_ref().is_none_or(|g| g.grant.is_some())
    }

    /// Whether `permission` on `name` is granted.
    pub fn allows(&self, permission: Permission, name: &[u8]) -> bool {
        match &self.grants {
            None => true,
            Some(g) => g.grant.as_ref().is_some_and(|grant| grant.pattern(permission).matches(name)),
        }
    }

    /// `permission` on the resource, or 403 with RabbitMQ's text. The default exchange is
    /// named `amq.default`, as RabbitMQ names it here.
    pub fn check(&self, permission: Permission, kind: Resource, name: &[u8]) -> Result<()> {
        let name = match (kind, name) {
            (Resource::Exchange, b"") => b"amq.default".as_slice(),
            _ => name,
        };
        if self.allows(permission, name) {
            return Ok(());
        }
        Err(BrokerError::AccessRefused(format!(
            "access to {} '{}' in vhost '{}' refused for user '{}'",
            kind.as_str(),
            String::from_utf8_lossy(name),
            self.vhost,
            self.user
        )))
    }

    /// A topic permission on `routing_key` through topic exchange `exchange`: granted unless
    /// a topic permission for that exchange says otherwise.
    pub fn check_topic(&self, permission: Permission, exchange: &[u8], routing_key: &[u8]) -> Result<()> {
        let Some(topic) = self.grants.as_ref().and_then(|g| g.topics.get(exchange)) else {
            return Ok(());
        };
        if topic.pattern(permission).is_none_or(|p| p.matches(routing_key)) {
            return Ok(());
        }
        Err(BrokerError::AccessRefused(format!(
            "access to topic '{}' in exchange '{}' in vhost '{}' refused for user '{}'",
            String::from_utf8_lossy(routing_key),
            String::from_utf8_lossy(exchange),
            self.vhost,
            self.user
        )))
    }

    /// Whether any topic permission is set in this vhost (a publisher may skip the check).
    pub fn has_topic_grants(&self) -> bool {
        self.grants.as_ref().is_some_and(|g| !g.topics.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(p: &Permissions, user: &str, vhost: &str) -> Access {
        Access::new(user, vhost, p.get(user, vhost).cloned(), 1)
    }

    #[test]
    fn expressions_are_unanchored_and_empty_matches_only_empty() {
        let p = Pattern::parse("bob-").expect("valid");
        assert!(p.matches(b"bob-q") && p.matches(b"x-bob-q") && !p.matches(b"alice"));
        let empty = Pattern::parse("").expect("valid");
        assert!(empty.matches(b"") && !empty.matches(b"q"));
        let anchored = Pattern::parse("^bob-").expect("valid");
        assert!(!anchored.matches(b"x-bob-q"));
        assert!(Pattern::parse(".*").expect("valid").matches(b"anything"));
        assert!(matches!(Pattern::parse("(unclosed"), Err(BrokerError::PreconditionFailed(_))));
        assert!(matches!(Pattern::parse(&"a".repeat(PATTERN_MAX_BYTES + 1)), Err(BrokerError::PreconditionFailed(_))));
    }

    #[test]
    fn refusals_name_the_resource_as_rabbitmq_does() {
        let mut p = Permissions::default();
        p.set("bob", "v1", Grant::new("^bob-", "^bob-|amq.default", "^bob-").expect("valid"));
        let a = access(&p, "bob", "v1");
        assert!(a.may_enter());
        assert!(a.check(Permission::Configure, Resource::Queue, b"bob-q").is_ok());
        assert!(a.check(Permission::Write, Resource::Exchange, b"").is_ok(), "the default exchange is amq.default");
        let refused = a.check(Permission::Configure, Resource::Queue, b"q1").unwrap_err();
        assert_eq!(
            refused,
            BrokerError::AccessRefused("access to queue 'q1' in vhost 'v1' refused for user 'bob'".into())
        );
        assert!(!access(&p, "bob", "/").may_enter());
        assert!(!access(&p, "alice", "v1").allows(Permission::Read, b"bob-q"));
    }

    #[test]
    fn topic_permissions_expand_variables_and_apply_per_exchange() {
        let mut p = Permissions::default();
        p.set("bob", "v1", Grant::full());
        p.set_topic("bob", "v1", b"amq.topic", TopicGrant::new("bob", "v1", "^{username}\\.", "^r\\.").expect("valid"));
        let a = access(&p, "bob", "v1");
        assert!(a.check_topic(Permission::Write, b"amq.topic", b"bob.x").is_ok());
        assert_eq!(
            a.check_topic(Permission::Write, b"amq.topic", b"alice.x").unwrap_err(),
            BrokerError::AccessRefused(
                "access to topic 'alice.x' in exchange 'amq.topic' in vhost 'v1' refused for user 'bob'".into()
            )
        );
        assert!(a.check_topic(Permission::Read, b"amq.topic", b"s.x").is_err());
        assert!(a.check_topic(Permission::Write, b"other.topic", b"alice.x").is_ok(), "no topic grant: allowed");
        p.clear_topic("bob", "v1", None);
        assert!(!access(&p, "bob", "v1").has_topic_grants());
    }

    #[test]
    fn deleting_users_and_vhosts_forgets_their_grants() {
        let mut p = Permissions::default();
        p.set("bob", "v1", Grant::full());
        p.set("bob", "v2", Grant::full());
        p.set("eve", "v1", Grant::full());
        p.remove_user("bob");
        p.remove_vhost("v1");
        assert!(p.list().is_empty());
        assert!(Access::unrestricted().may_enter() && Access::unrestricted().allows(Permission::Write, b"x"));
    }
}
