//! Topic-exchange matching: owns the binding-key trie of one topic exchange and answers
//! "which destinations does this routing key reach".
//!
//! The module knows nothing about queues or exchanges; it is generic over the destination
//! type `D`. Whoever owns the exchange keeps one [`TopicMatcher`] per topic exchange and
//! binds/unbinds `(binding key, destination)` pairs.
//!
//! # Semantics (RabbitMQ's, checked against its source)
//!
//! Read in `rabbitmq/rabbitmq-server`: `deps/rabbit/src/rabbit_db_topic_exchange.erl`
//! (`split_topic_key_binary/1`, `trie_match*`), the 3.12 Mnesia version of the same module
//! (`split_topic_key/3`), `deps/rabbit/src/rabbit_exchange_type_topic.erl`, and the
//! expectations in `deps/rabbit/test/routing_SUITE.erl` (`topic1`).
//!
//! * Routing keys and binding keys are split the same way: on every `.`, keeping empty
//!   words (`binary:split(Key, <<".">>, [global])`), except that the empty key `""` is
//!   **zero** words, not one empty word. So `"a..b"` is `["a", "", "b"]`, `"a."` is
//!   `["a", ""]`, `"."` is `["", ""]` and `""` is `[]`. (No key splits into exactly one
//!   empty word.)
//! * In a binding key, the whole word `*` matches exactly one word (possibly empty) and
//!   the whole word `#` matches zero or more words. Any other word, including `a*` or
//!   `#a`, is literal and matches byte for byte (no UTF-8 interpretation).
//! * In a routing key, `*` and `#` are ordinary words: the key `"a.*"` is matched by
//!   binding `"a.*"` (the star matches the word `*`) but not by binding `"a.b"`.
//! * Consequences, all covered by the unit tests below:
//!   - `"#"` and `"#.#"` match every key, including `""`;
//!   - `""` matches only `""`; `"*"` matches one-word keys only, so not `""` but `"a"` and
//!     not `"."` (two empty words);
//!   - `"a.#"` matches `"a"`, `"a.b"`, `"a.b.c"`; `"#.a"` matches `"a"`, `"x.a"`;
//!   - `"a.#.b"` matches `"a.b"` and `"a.x.y.b"`; `"*.#"` matches every key of ≥ 1 word;
//!   - `"#.*.#"` matches every key of ≥ 1 word; `"a.#.#.b"` matches `"a.b"`.
//! * A destination reached through several bindings is delivered to once (RabbitMQ's
//!   `route/2` may return duplicates and its caller de-duplicates; [`TopicMatcher::route`]
//!   de-duplicates itself).
//! * Not reproduced here: RabbitMQ's unreleased (main branch, after 4.3) limit of two `#`
//!   words per binding key, refused at bind time. The matcher is safe without it: states
//!   are de-duplicated, so a key costs at most `nodes × (words + 1)` steps.
//!
//! # Structure
//!
//! A trie over words, stored in an arena (`Vec` of nodes, free list for reuse). Each node has
//! literal children in a hash map, an optional `*` child and an optional `#` child, and the
//! set of destinations whose binding key ends there. Matching walks the trie with an
//! explicit stack of `(node, word index)` states — no recursion. A state can only be reached
//! twice through two or more `#` edges, so states are remembered (and skipped when seen
//! again) only below nodes with at least two `#` on their path, as RabbitMQ does; this keeps
//! patterns such as `#.#.#.#.x` linear in the trie size instead of exponential.
//! `unbind` prunes nodes left with no destinations and no children.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

/// Index of a node in the arena. The root is always node 0.
type NodeId = usize;

const ROOT: NodeId = 0;

/// Up to this many destinations per node are kept in a `Vec`; more move to a `HashSet` so
/// that binding 100,000 queues with the same key stays linear.
const FEW_DESTS_MAX: usize = 16;

/// One word of a binding key.
#[derive(Clone, Copy)]
enum Word<'a> {
    Literal(&'a [u8]),
    Star,
    Hash,
}

impl<'a> Word<'a> {
    fn classify(word: &'a [u8]) -> Word<'a> {
        match word {
            b"*" => Word::Star,
            b"#" => Word::Hash,
            _ => Word::Literal(word),
        }
    }
}

/// Splits a routing or binding key into words the way RabbitMQ does: `""` is no words.
fn split_words(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut words = key.split(|b| *b == b'.');
    if key.is_empty() {
        // `split` yields one empty word for an empty input; RabbitMQ has none.
        words.next();
    }
    words
}

/// The destinations bound at one node, without duplicates.
enum Dests<D> {
    Few(Vec<D>),
    Many(HashSet<D>),
}

impl<D: Clone + Eq + Hash> Dests<D> {
    fn insert(&mut self, dest: D) -> bool {
        match self {
            Dests::Few(v) => {
                if v.contains(&dest) {
                    return false;
                }
                if v.len() < FEW_DESTS_MAX {
                    v.push(dest);
                } else {
                    let mut set: HashSet<D> = v.drain(..).collect();
                    set.insert(dest);
                    *self = Dests::Many(set);
                }
                true
            }
            Dests::Many(s) => s.insert(dest),
        }
    }

    fn remove(&mut self, dest: &D) -> bool {
        match self {
            Dests::Few(v) => match v.iter().position(|d| d == dest) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            Dests::Many(s) => {
                let removed = s.remove(dest);
                if removed && s.is_empty() {
                    *self = Dests::Few(Vec::new());
                }
                removed
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Dests::Few(v) => v.is_empty(),
            Dests::Many(s) => s.is_empty(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Dests::Few(v) => v.len(),
            Dests::Many(s) => s.len(),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&D)) {
        match self {
            Dests::Few(v) => v.iter().for_each(&mut f),
            Dests::Many(s) => s.iter().for_each(&mut f),
        }
    }
}

struct Node<D> {
    literals: HashMap<Box<[u8]>, NodeId>,
    star: Option<NodeId>,
    hash: Option<NodeId>,
    dests: Dests<D>,
    /// Reached through a `#` edge: the `#` may absorb further words while staying here.
    is_hash: bool,
    /// Number of `#` edges from the root to here, saturating at 2 (only "< 2" matters).
    hashes: u8,
}

impl<D> Node<D> {
    fn new(is_hash: bool, hashes: u8) -> Node<D> {
        Node { literals: HashMap::new(), star: None, hash: None, dests: Dests::Few(Vec::new()), is_hash, hashes }
    }

    fn has_children(&self) -> bool {
        !self.literals.is_empty() || self.star.is_some() || self.hash.is_some()
    }
}

/// The bindings of one topic exchange, as a trie over binding-key words.
pub struct TopicMatcher<D: Clone + Eq + Hash> {
    /// Arena; `nodes[0]` is the root. Freed slots are listed in `free` and hold stale nodes.
    nodes: Vec<Node<D>>,
    free: Vec<NodeId>,
    bindings: usize,
}

impl<D: Clone + Eq + Hash> Default for TopicMatcher<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Clone + Eq + Hash> TopicMatcher<D> {
    pub fn new() -> Self {
        TopicMatcher { nodes: vec![Node::new(false, 0)], free: Vec::new(), bindings: 0 }
    }

    /// Adds a binding; false if this (pattern, dest) pair was already bound.
    pub fn bind(&mut self, pattern: &[u8], dest: D) -> bool {
        let mut at = ROOT;
        for word in split_words(pattern) {
            at = self.child_or_insert(at, Word::classify(word));
        }
        let inserted = self.nodes[at].dests.insert(dest);
        if inserted {
            self.bindings += 1;
        }
        inserted
    }

    /// Removes a binding; false if it was not bound.
    pub fn unbind(&mut self, pattern: &[u8], dest: &D) -> bool {
        // The path from the root: each node with the word leading out of it.
        let mut path: Vec<(NodeId, Word<'_>)> = Vec::new();
        let mut at = ROOT;
        for word in split_words(pattern) {
            let word = Word::classify(word);
            match self.child(at, word) {
                Some(next) => {
                    path.push((at, word));
                    at = next;
                }
                None => return false,
            }
        }
        if !self.nodes[at].dests.remove(dest) {
            return false;
        }
        self.bindings -= 1;
        // Prune from the bottom up while nodes are left with nothing.
        while let Some((parent, word)) = path.pop() {
            let node = &self.nodes[at];
            if !node.dests.is_empty() || node.has_children() {
                break;
            }
            self.release(at);
            let p = &mut self.nodes[parent];
            match word {
                Word::Literal(w) => {
                    p.literals.remove(w);
                }
                Word::Star => p.star = None,
                Word::Hash => p.hash = None,
            }
            at = parent;
        }
        true
    }

    /// Pushes every destination with at least one pattern matching `routing_key`, each
    /// destination at most once per call (destinations already in `out` are not looked at).
    pub fn route(&self, routing_key: &[u8], out: &mut Vec<D>) {
        if self.bindings == 0 {
            return;
        }
        let words: Vec<&[u8]> = split_words(routing_key).collect();
        // Nodes where a binding key ended exactly at the end of the routing key. Each node is
        // recorded once: its state `(node, end)` is reached once (see `seen`).
        let mut hits: Vec<NodeId> = Vec::new();
        // Only states below two or more `#` edges can be reached twice; only those are kept.
        let mut seen: HashSet<(NodeId, usize)> = HashSet::new();
        let mut stack: Vec<(NodeId, usize)> = vec![(ROOT, 0)];

        while let Some((id, i)) = stack.pop() {
            let node = &self.nodes[id];
            if node.hashes >= 2 && !seen.insert((id, i)) {
                continue;
            }
            // `#` entered from the parent: it may start (at `i`) matching zero words here.
            if let Some(h) = node.hash {
                stack.push((h, i));
            }
            match words.get(i) {
                None => {
                    if !node.dests.is_empty() {
                        hits.push(id);
                    }
                }
                Some(word) => {
                    if node.is_hash {
                        // The `#` that led here absorbs one more word.
                        stack.push((id, i + 1));
                    }
                    if let Some(s) = node.star {
                        stack.push((s, i + 1));
                    }
                    if let Some(&c) = node.literals.get(*word) {
                        stack.push((c, i + 1));
                    }
                }
            }
        }

        match hits.as_slice() {
            [] => {}
            // Destinations within one node are distinct.
            [one] => self.nodes[*one].dests.for_each(|d| out.push(d.clone())),
            many => {
                let capacity = many.iter().map(|&id| self.nodes[id].dests.len()).sum();
                let mut pushed: HashSet<&D> = HashSet::with_capacity(capacity);
                for &id in many {
                    match &self.nodes[id].dests {
                        Dests::Few(v) => {
                            for d in v {
                                if pushed.insert(d) {
                                    out.push(d.clone());
                                }
                            }
                        }
                        Dests::Many(s) => {
                            for d in s {
                                if pushed.insert(d) {
                                    out.push(d.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Number of (pattern, dest) bindings.
    pub fn len(&self) -> usize {
        self.bindings
    }

    pub fn is_empty(&self) -> bool {
        self.bindings == 0
    }

    fn child(&self, at: NodeId, word: Word<'_>) -> Option<NodeId> {
        let node = &self.nodes[at];
        match word {
            Word::Literal(w) => node.literals.get(w).copied(),
            Word::Star => node.star,
            Word::Hash => node.hash,
        }
    }

    fn child_or_insert(&mut self, at: NodeId, word: Word<'_>) -> NodeId {
        if let Some(c) = self.child(at, word) {
            return c;
        }
        let parent_hashes = self.nodes[at].hashes;
        let is_hash = matches!(word, Word::Hash);
        let hashes = if is_hash { parent_hashes.saturating_add(1).min(2) } else { parent_hashes };
        let id = self.alloc(Node::new(is_hash, hashes));
        let node = &mut self.nodes[at];
        match word {
            Word::Literal(w) => {
                node.literals.insert(w.into(), id);
            }
            Word::Star => node.star = Some(id),
            Word::Hash => node.hash = Some(id),
        }
        id
    }

    fn alloc(&mut self, node: Node<D>) -> NodeId {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id] = node;
                id
            }
            None => {
                let id = self.nodes.len();
                self.nodes.push(node);
                id
            }
        }
    }

    /// Frees an (empty, childless) node's slot; its allocations are dropped now.
    fn release(&mut self, id: NodeId) {
        self.nodes[id] = Node::new(false, 0);
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        let mut m = TopicMatcher::new();
        assert!(m.bind(pattern.as_bytes(), 1u8));
        let mut out = Vec::new();
        m.route(key.as_bytes(), &mut out);
        assert!(out.len() <= 1, "duplicate destination for {pattern:?} / {key:?}");
        out.len() == 1
    }

    fn check(pattern: &str, key: &str, expected: bool) {
        assert_eq!(matches(pattern, key), expected, "pattern {pattern:?} key {key:?}");
    }

    #[test]
    fn split_like_rabbitmq() {
        let split =
            |k: &str| split_words(k.as_bytes()).map(|w| String::from_utf8_lossy(w).into_owned()).collect::<Vec<_>>();
        assert_eq!(split(""), Vec::<String>::new());
        assert_eq!(split("a"), ["a"]);
        assert_eq!(split("a.b"), ["a", "b"]);
        assert_eq!(split("a..b"), ["a", "", "b"]);
        assert_eq!(split("a."), ["a", ""]);
        assert_eq!(split(".a"), ["", "a"]);
        assert_eq!(split("."), ["", ""]);
        assert_eq!(split(".."), ["", "", ""]);
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            // literal
            ("a.b.c", "a.b.c", true),
            ("a.b.c", "a.b", false),
            ("a.b", "a.b.c", false),
            ("a.b.c", "a.b.d", false),
            ("a", "A", false),
            ("", "", true),
            ("", "a", false),
            ("", ".", false),
            ("a", "", false),
            // `#`
            ("#", "", true),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("#", ".", true),
            ("#", "..", true),
            ("#.#", "", true),
            ("#.#", "a", true),
            ("#.#", "a.b.c.d", true),
            ("a.#", "a", true),
            ("a.#", "a.b", true),
            ("a.#", "a.b.c", true),
            ("a.#", "", false),
            ("a.#", "b.a", false),
            ("a.#", "a.", true),
            ("#.a", "a", true),
            ("#.a", "x.y.a", true),
            ("#.a", "a.x", false),
            ("#.a", "", false),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.b", true),
            ("a.#.b", "a.x.y.z.b", true),
            ("a.#.b", "a.b.c", false),
            ("a.#.b", "a", false),
            ("a.#.#.b", "a.b", true),
            ("a.#.#.b", "a.x.y.b", true),
            ("a.#.#.b", "a.x.y", false),
            ("#.b.#", "b", true),
            ("#.b.#", "a.b.c", true),
            ("#.b.#", "a.c", false),
            // `*`
            ("*", "", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*", ".", false),
            ("*.*", "a.b", true),
            ("*.*", "a", false),
            ("*.*", "a.b.c", false),
            ("*.*", ".", true),
            ("*.*", "a.", true),
            ("*.*.*", "..", true),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.", true),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a..c", true),
            ("a.*.c", "a.c", false),
            // mixed
            ("*.#", "", false),
            ("*.#", "a", true),
            ("*.#", "a.b.c", true),
            ("#.*", "", false),
            ("#.*", "a", true),
            ("#.*.#", "", false),
            ("#.*.#", "a", true),
            ("#.*.#", "a.b.c", true),
            ("*.#.#", "a", true),
            ("a.*.#", "a", false),
            ("a.*.#", "a.b", true),
            ("a.*.#", "a.b.c.d", true),
            ("a.*.#", "b.b", false),
            ("#.#.#.#.#.#", "", true),
            ("#.#.#.#.#.#.z", "a.b.c.d.e.f.g.h.z", true),
            ("#.#.#.#.#.#.z", "a.b.c.d.e.f.g.h", false),
            // empty words
            ("a..b", "a..b", true),
            ("a..b", "a.b", false),
            ("a.*.b", "a..b", true),
            ("a.#.b", "a...b", true),
            (".", ".", true),
            (".", "", false),
            ("a.", "a.", true),
            ("a.", "a", false),
            (".a", ".a", true),
            // `*` and `#` in a routing key are ordinary words
            ("a.*", "a.*", true),
            ("a.#", "a.#", true),
            ("a.b", "a.*", false),
            ("a.b", "a.#", false),
            ("*", "#", true),
            // not wildcards: only whole words are
            ("a*", "ab", false),
            ("a*", "a*", true),
            ("#a", "a", false),
            ("#a", "#a", true),
            ("*a.#", "xa.b", false),
            // bytes, not characters
            ("é.*", "é.ü", true),
            ("é", "e", false),
            ("*", "日本語", true),
            ("日本.#", "日本.語.x", true),
            ("\u{0}", "\u{0}", true),
        ];
        assert!(cases.len() >= 40);
        for &(pattern, key, expected) in cases {
            check(pattern, key, expected);
        }
    }

    #[test]
    fn non_utf8_bytes() {
        let mut m = TopicMatcher::new();
        assert!(m.bind(b"\xff.*", 1u8));
        let mut out = Vec::new();
        m.route(b"\xff.\xfe", &mut out);
        assert_eq!(out, [1]);
        out.clear();
        m.route(b"\xfe.\xfe", &mut out);
        assert!(out.is_empty());
    }

    /// The expectations of RabbitMQ's `routing_SUITE:topic1` (same bindings, same keys).
    #[test]
    fn rabbitmq_routing_suite() {
        let bindings = [
            ("a.b.c", 1),
            ("a.*.c", 2),
            ("a.#.b", 3),
            ("a.b.b.c", 4),
            ("#", 5),
            ("#.#", 6),
            ("#.b", 7),
            ("*.*", 8),
            ("a.*", 9),
            ("*.b.c", 10),
            ("a.#", 11),
            ("a.#.#", 12),
            ("b.b.c", 13),
            ("a.b.b", 14),
            ("a.b", 15),
            ("b.c", 16),
            ("", 17),
            ("*.*.*", 18),
            ("vodka.martini", 19),
            ("a.b.c", 20),
            ("*.#", 21),
            ("#.*.#", 22),
            ("*.#.#", 23),
            ("*", 25),
            ("#.b.#", 26),
        ];
        let mut m = TopicMatcher::new();
        for (p, d) in bindings {
            assert!(m.bind(p.as_bytes(), d));
        }
        let route = |m: &TopicMatcher<i32>, key: &str| {
            let mut out = Vec::new();
            m.route(key.as_bytes(), &mut out);
            let n = out.len();
            out.sort();
            out.dedup();
            assert_eq!(n, out.len(), "duplicates for {key:?}");
            out
        };
        let expect: &[(&str, &[i32])] = &[
            ("a.b.c", &[1, 2, 5, 6, 10, 11, 12, 18, 20, 21, 22, 23, 26]),
            ("a.b", &[3, 5, 6, 7, 8, 9, 11, 12, 15, 21, 22, 23, 26]),
            ("a.b.b", &[3, 5, 6, 7, 11, 12, 14, 18, 21, 22, 23, 26]),
            ("", &[5, 6, 17]),
            ("b.c.c", &[5, 6, 18, 21, 22, 23, 26]),
            ("a.a.a.a.a", &[5, 6, 11, 12, 21, 22, 23]),
            ("vodka.gin", &[5, 6, 8, 21, 22, 23]),
            ("vodka.martini", &[5, 6, 8, 19, 21, 22, 23]),
            ("b.b.c", &[5, 6, 10, 13, 18, 21, 22, 23, 26]),
            ("nothing.here.at.all", &[5, 6, 21, 22, 23]),
            ("oneword", &[5, 6, 21, 22, 23, 25]),
        ];
        for (key, want) in expect {
            assert_eq!(route(&m, key), *want, "key {key:?}");
        }
        // RabbitMQ then removes bindings 1, 5, 11, 19, 21 (by position: t1, t5, t11, t19, t21).
        for (p, d) in [("a.b.c", 1), ("#", 5), ("a.#", 11), ("vodka.martini", 19), ("*.#", 21)] {
            assert!(m.unbind(p.as_bytes(), &d));
        }
        let expect: &[(&str, &[i32])] = &[
            ("a.b.c", &[2, 6, 10, 12, 18, 20, 22, 23, 26]),
            ("a.b", &[3, 6, 7, 8, 9, 12, 15, 22, 23, 26]),
            ("a.b.b", &[3, 6, 7, 12, 14, 18, 22, 23, 26]),
            ("", &[6, 17]),
            ("b.c.c", &[6, 18, 22, 23, 26]),
            ("a.a.a.a.a", &[6, 12, 22, 23]),
            ("vodka.gin", &[6, 8, 22, 23]),
            ("vodka.martini", &[6, 8, 22, 23]),
            ("b.b.c", &[6, 10, 13, 18, 22, 23, 26]),
            ("nothing.here.at.all", &[6, 22, 23]),
            ("oneword", &[6, 22, 23, 25]),
        ];
        for (key, want) in expect {
            assert_eq!(route(&m, key), *want, "key {key:?}");
        }
    }

    #[test]
    fn bind_unbind_counts_and_duplicates() {
        let mut m = TopicMatcher::new();
        assert!(m.is_empty());
        assert!(m.bind(b"a.b", "q1"));
        assert!(!m.bind(b"a.b", "q1"));
        assert!(m.bind(b"a.b", "q2"));
        assert!(m.bind(b"a.*", "q1"));
        assert_eq!(m.len(), 3);
        // q1 is reached through two bindings but delivered to once.
        let mut out = vec!["already-there"];
        m.route(b"a.b", &mut out);
        out[1..].sort();
        assert_eq!(out, ["already-there", "q1", "q2"]);
        assert!(!m.unbind(b"a.c", &"q1"));
        assert!(!m.unbind(b"a.b", &"q3"));
        assert!(!m.unbind(b"a.b.c", &"q1"));
        assert!(m.unbind(b"a.b", &"q1"));
        assert!(!m.unbind(b"a.b", &"q1"));
        assert_eq!(m.len(), 2);
        let mut out = Vec::new();
        m.route(b"a.b", &mut out);
        out.sort();
        assert_eq!(out, ["q1", "q2"]);
    }

    fn live_nodes<D: Clone + Eq + Hash>(m: &TopicMatcher<D>) -> usize {
        m.nodes.len() - m.free.len()
    }

    #[test]
    fn unbind_prunes_and_reuses_nodes() {
        let mut m = TopicMatcher::new();
        assert!(m.bind(b"a.b.c.d", 1));
        assert!(m.bind(b"a.b", 2));
        assert!(m.bind(b"a.*.#", 3));
        assert!(m.bind(b"", 4));
        // root, a, b, c, d, *, #
        assert_eq!(live_nodes(&m), 7);
        assert!(m.unbind(b"a.b.c.d", &1));
        // c and d pruned; b keeps its binding.
        assert_eq!(live_nodes(&m), 5);
        assert!(m.unbind(b"a.*.#", &3));
        assert_eq!(live_nodes(&m), 3);
        assert!(m.unbind(b"a.b", &2));
        assert_eq!(live_nodes(&m), 1);
        assert!(m.unbind(b"", &4));
        assert_eq!(live_nodes(&m), 1);
        assert!(m.is_empty());
        let arena = m.nodes.len();
        assert!(m.bind(b"x.y.#", 5));
        assert_eq!(m.nodes.len(), arena, "freed slots are reused");
        let mut out = Vec::new();
        m.route(b"x.y", &mut out);
        assert_eq!(out, [5]);
    }

    #[test]
    fn many_destinations_on_one_key() {
        let mut m = TopicMatcher::new();
        for d in 0..1000u32 {
            assert!(m.bind(b"#", d));
            assert!(m.bind(b"a.*", d));
        }
        for d in 0..1000u32 {
            assert!(!m.bind(b"#", d));
        }
        assert_eq!(m.len(), 2000);
        let mut out = Vec::new();
        m.route(b"a.b", &mut out);
        out.sort_unstable();
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
        for d in 0..1000u32 {
            assert!(m.unbind(b"#", &d));
            assert!(m.unbind(b"a.*", &d));
        }
        assert!(m.is_empty());
        assert_eq!(live_nodes(&m), 1);
    }

    /// Many `#` and a long key that fails at the very end: exponential without state
    /// de-duplication (C(128, 40) paths), quick with it.
    #[test]
    fn many_hashes_do_not_blow_up() {
        let mut m = TopicMatcher::new();
        let pattern = ["#"; 40].join(".") + ".z";
        assert!(m.bind(pattern.as_bytes(), 1u8));
        assert!(m.bind(b"#.*.#.*.#.*.#.*.#.y", 2u8));
        let key = ["a"; 127].join(".");
        assert_eq!(key.len(), 253);
        let mut out = Vec::new();
        m.route(key.as_bytes(), &mut out);
        assert!(out.is_empty());
        m.route(format!("{key}.z").as_bytes(), &mut out);
        assert_eq!(out, [1]);
        out.clear();
        m.route(format!("{key}.y").as_bytes(), &mut out);
        assert_eq!(out, [2]);
    }
}
