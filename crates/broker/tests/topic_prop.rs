//! Property tests: `TopicMatcher` against a naive reference matcher (every binding checked
//! one by one with a dynamic programme over words), for random binding sets of up to 10,000
//! bindings, random routing keys, and random bind/unbind sequences.

use std::collections::{BTreeSet, HashSet};

use lepus_broker::topic::TopicMatcher;
use proptest::prelude::*;

/// RabbitMQ's split: on '.', empty words kept, but "" is no words at all.
fn words(key: &[u8]) -> Vec<&[u8]> {
    if key.is_empty() { Vec::new() } else { key.split(|b| *b == b'.').collect() }
}

/// Does `pattern` match `key`? `m[i][j]`: the first `i` pattern words match the first `j`
/// key words.
fn reference_match(pattern: &[u8], key: &[u8]) -> bool {
    let p = words(pattern);
    let k = words(key);
    let mut m = vec![vec![false; k.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=k.len() {
            m[i][j] = match p[i - 1] {
                b"#" => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                b"*" => j > 0 && m[i - 1][j - 1],
                w => j > 0 && m[i - 1][j - 1] && k[j - 1] == w,
            };
        }
    }
    m[p.len()][k.len()]
}

/// The reference: the set of bindings, routed by checking each.
#[derive(Default)]
struct Reference {
    bindings: HashSet<(Vec<u8>, u16)>,
}

impl Reference {
    fn route(&self, key: &[u8]) -> BTreeSet<u16> {
        self.bindings.iter().filter(|(p, _)| reference_match(p, key)).map(|(_, d)| *d).collect()
    }
}

fn routed(m: &TopicMatcher<u16>, key: &[u8]) -> BTreeSet<u16> {
    let mut out = Vec::new();
    m.route(key, &mut out);
    let set: BTreeSet<u16> = out.iter().copied().collect();
    assert_eq!(set.len(), out.len(), "a destination was pushed twice for {:?}", String::from_utf8_lossy(key));
    set
}

fn join(ws: Vec<&str>) -> Vec<u8> {
    ws.join(".").into_bytes()
}

/// Binding keys over a small alphabet so that keys and patterns overlap a lot.
fn pattern(max_words: usize) -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        3 => Just("a"),
        3 => Just("b"),
        2 => Just("c"),
        1 => Just(""),
        1 => Just("é"),
        3 => Just("*"),
        3 => Just("#"),
    ];
    prop::collection::vec(word, 0..=max_words).prop_map(join)
}

/// Routing keys: the same words, where `*` and `#` are ordinary words.
fn routing_key() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        4 => Just("a"),
        4 => Just("b"),
        2 => Just("c"),
        1 => Just("d"),
        1 => Just(""),
        1 => Just("é"),
        1 => Just("*"),
        1 => Just("#"),
    ];
    prop::collection::vec(word, 0..=8).prop_map(join)
}

#[derive(Debug, Clone)]
enum Op {
    Bind(Vec<u8>, u16),
    Unbind(Vec<u8>, u16),
}

fn op() -> impl Strategy<Value = Op> {
    // Few patterns and destinations, so that unbinds and duplicate binds hit.
    let pattern = prop_oneof![pattern(3), Just(b"#".to_vec()), Just(Vec::new())];
    (any::<bool>(), pattern, 0u16..6).prop_map(|(bind, p, d)| if bind { Op::Bind(p, d) } else { Op::Unbind(p, d) })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn routes_like_the_reference(
        bindings in prop::collection::vec((pattern(6), 0u16..200), 0..10_000),
        keys in prop::collection::vec(routing_key(), 1..40),
    ) {
        let mut m = TopicMatcher::new();
        let mut reference = Reference::default();
        for (p, d) in &bindings {
            prop_assert_eq!(m.bind(p, *d), reference.bindings.insert((p.clone(), *d)));
        }
        prop_assert_eq!(m.len(), reference.bindings.len());
        for key in &keys {
            prop_assert_eq!(routed(&m, key), reference.route(key), "key {:?}", String::from_utf8_lossy(key));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn bind_unbind_sequences(
        ops in prop::collection::vec(op(), 0..600),
        keys in prop::collection::vec(routing_key(), 1..24),
    ) {
        let mut m = TopicMatcher::new();
        let mut reference = Reference::default();
        for op in &ops {
            match op {
                Op::Bind(p, d) => prop_assert_eq!(m.bind(p, *d), reference.bindings.insert((p.clone(), *d))),
                Op::Unbind(p, d) => prop_assert_eq!(m.unbind(p, d), reference.bindings.remove(&(p.clone(), *d))),
            }
            prop_assert_eq!(m.len(), reference.bindings.len());
            prop_assert_eq!(m.is_empty(), reference.bindings.is_empty());
        }
        for key in &keys {
            prop_assert_eq!(routed(&m, key), reference.route(key), "key {:?}", String::from_utf8_lossy(key));
        }
        // Removing what is left empties the matcher, and a second removal is refused.
        let left: Vec<_> = reference.bindings.iter().cloned().collect();
        for (p, d) in &left {
            prop_assert!(m.unbind(p, d));
            prop_assert!(!m.unbind(p, d));
        }
        prop_assert!(m.is_empty());
        for key in &keys {
            prop_assert!(routed(&m, key).is_empty());
        }
    }

    /// Single patterns against single keys, with longer patterns and keys than above.
    #[test]
    fn single_pattern(p in pattern(10), key in routing_key()) {
        let mut m = TopicMatcher::new();
        prop_assert!(m.bind(&p, 7u16));
        let want: BTreeSet<u16> = if reference_match(&p, &key) { [7].into() } else { BTreeSet::new() };
        prop_assert_eq!(routed(&m, &key), want);
    }
}

/// 100,000 distinct bindings (a deterministic pseudo-random mix of literal and wildcard
/// words): routing agrees with the reference, and removing every binding empties the trie.
#[test]
fn hundred_thousand_bindings() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let vocabulary = ["stock", "usd", "eur", "nyse", "nasdaq", "ibm", "msft", "q1", "q2", "q3"];
    let mut pick = |wildcards: bool| -> Vec<u8> {
        let n = (next() % 5) as usize + 1;
        let ws: Vec<String> = (0..n)
            .map(|_| match next() % 16 {
                0 if wildcards => "*".to_string(),
                1 if wildcards => "#".to_string(),
                r => format!("{}{}", vocabulary[(r % 10) as usize], next() % 40),
            })
            .collect();
        ws.join(".").into_bytes()
    };
    let mut m = TopicMatcher::new();
    let mut reference = Reference::default();
    while reference.bindings.len() < 100_000 {
        let p = pick(true);
        let d = (reference.bindings.len() % 5000) as u16;
        assert_eq!(m.bind(&p, d), reference.bindings.insert((p, d)));
    }
    assert_eq!(m.len(), 100_000);
    let mut keys: Vec<Vec<u8>> = (0..30).map(|_| pick(false)).collect();
    // Keys that certainly hit literal bindings, too.
    keys.extend(reference.bindings.iter().take(30).map(|(p, _)| p.clone()));
    keys.push(Vec::new());
    for key in &keys {
        assert_eq!(routed(&m, key), reference.route(key), "key {:?}", String::from_utf8_lossy(key));
    }
    for (p, d) in &reference.bindings {
        assert!(m.unbind(p, d));
    }
    assert!(m.is_empty());
    assert!(routed(&m, b"stock").is_empty());
}
