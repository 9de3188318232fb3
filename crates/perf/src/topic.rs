//! Topic runs: the binding patterns, the routing keys producers publish with, and what each
//! key must reach, so that a topic run is verified like any other (lost, duplicated,
//! misrouted) and its backlog is counted in deliveries.
//!
//! A producer's key for message `seq` is a pure function of (producer, seq) ([`key_index`]),
//! pseudo-random over the key space; the summary recomputes it instead of carrying the key in
//! the body. Which queues a key reaches is worked out here with a reference matcher
//! ([`pattern_matches`], RabbitMQ's topic semantics: `*` is exactly one word, `#` zero or more),
//! independent of any broker's implementation.

use crate::stats::SeqSet;

/// How many distinct routing keys topic runs publish with.
pub const KEYS: usize = 1000;

/// Routing key number `n`: `a<i>.b<j>.c<k>`.
pub fn key(n: usize) -> String {
    format!("a{}.b{}.c{}", n % 10, (n / 10) % 10, (n / 100) % 10)
}

/// Binding pattern number `n`: a mix of `*` and `#` wildcards over the key space.
pub fn pattern(n: usize) -> String {
    let (i, j, k) = (n % 10, (n / 10) % 10, (n / 100) % 10);
    match n % 4 {
        0 => format!("a{i}.*.c{k}"),
        1 => format!("a{i}.b{j}.#"),
        2 => format!("*.b{j}.c{k}"),
        _ => format!("#.c{k}"),
    }
}

/// The key producer `producer` uses for its message `seq` (a SplitMix64 finaliser: cheap,
/// well spread, and the same in the producer and in the summary).
pub fn key_index(producer: u16, seq: u64) -> usize {
    let mut z = ((producer as u64) << 48 ^ seq).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % KEYS as u64) as usize
}

/// Whether binding `pattern` matches routing `key`, by RabbitMQ's rules (words split on `.`).
pub fn pattern_matches(pattern: &str, key: &str) -> bool {
    fn words(s: &str) -> Vec<&str> {
        if s.is_empty() { Vec::new() } else { s.split('.').collect() }
    }
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((w, rest)) => k.first() == Some(w) && go(rest, &k[1..]),
        }
    }
    go(&words(pattern), &words(key))
}

/// For each key, the queues (indexes, ascending, each once) its messages must reach.
pub struct Routes {
    per_key: Vec<Vec<usize>>,
    queues: usize,
}

impl Routes {
    /// `bindings`: (queue index below `queues`, pattern).
    pub fn new(queues: usize, bindings: &[(usize, String)]) -> Routes {
        let per_key = (0..KEYS)
            .map(|n| {
                let k = key(n);
                let mut queues: Vec<usize> =
                    bindings.iter().filter(|(_, p)| pattern_matches(p, &k)).map(|(q, _)| *q).collect();
                queues.sort_unstable();
                queues.dedup();
                queues
            })
            .collect();
        Routes { per_key, queues }
    }

    pub fn queues(&self, key_index: usize) -> &[usize] {
        &self.per_key[key_index]
    }

    /// Deliveries per publish, averaged over the keys (producers pick keys uniformly).
    pub fn mean_fanout(&self) -> f64 {
        self.per_key.iter().map(Vec::len).sum::<usize>() as f64 / KEYS as f64
    }

    /// Deliveries due for messages 1..=`sent` of `producer`.
    pub fn deliveries(&self, producer: u16, sent: u64) -> u64 {
        (1..=sent).map(|seq| self.per_key[key_index(producer, seq)].len() as u64).sum()
    }

    /// Checks what each queue received of `producer`'s messages 1..=`sent` (`seen(q)`) against
    /// where their keys lead: (deliveries missing, deliveries to a queue the key does not
    /// reach).
    pub fn verify<'s>(&self, producer: u16, sent: u64, seen: impl Fn(usize) -> Option<&'s SeqSet>) -> (u64, u64) {
        let sets: Vec<Option<&SeqSet>> = (0..self.queues).map(seen).collect();
        let mut expected_and_seen = vec![0u64; self.queues];
        let mut missing = 0;
        for seq in 1..=sent {
            for &q in &self.per_key[key_index(producer, seq)] {
                if sets[q].is_some_and(|s| s.contains(seq)) {
                    expected_and_seen[q] += 1;
                } else {
                    missing += 1;
                }
            }
        }
        let misrouted = sets
            .iter()
            .zip(&expected_and_seen)
            .map(|(s, ok)| s.map_or(0, |s| s.count_upto(sent)).saturating_sub(*ok))
            .sum();
        (missing, misrouted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_matcher_follows_rabbitmq() {
        let yes = [
            ("#", ""),
            ("#", "a.b"),
            ("a.#", "a"),
            ("a.#", "a.b.c"),
            ("#.c", "c"),
            ("#.c", "a.b.c"),
            ("a.*.c", "a.b.c"),
            ("a.*.c", "a..c"),
            ("*", "a"),
            ("a.#.b", "a.b"),
            ("#.*.#", "a"),
            ("", ""),
        ];
        let no = [("*", ""), ("*", "a.b"), ("a.*.c", "a.c"), ("a.b", "a.b.c"), ("#.c", "c.d"), ("", "a"), ("a.*", "a")];
        for (p, k) in yes {
            assert!(pattern_matches(p, k), "{p:?} should match {k:?}");
        }
        for (p, k) in no {
            assert!(!pattern_matches(p, k), "{p:?} should not match {k:?}");
        }
    }

    #[test]
    fn routes_of_the_standard_binding_set() {
        let bindings: Vec<(usize, String)> = (0..1000).map(|n| (n % 10, pattern(n))).collect();
        let routes = Routes::new(10, &bindings);
        // a0.b0.c0 is matched by pattern 0 (a0.*.c0, queue 0), 3 (#.c0, queue 3), ...
        assert!(routes.queues(0).contains(&0));
        assert!(routes.queues(0).windows(2).all(|w| w[0] < w[1]));
        let mean = routes.mean_fanout();
        assert!(mean > 1.0 && mean <= 10.0, "mean fanout {mean}");
        assert_eq!(routes.deliveries(0, 0), 0);
    }

    #[test]
    fn verify_counts_missing_and_misrouted() {
        let bindings = vec![(0, "#".to_string()), (1, "a1.#".to_string())];
        let routes = Routes::new(3, &bindings);
        let sent = 200;
        let mut sets = vec![SeqSet::default(), SeqSet::default(), SeqSet::default()];
        for seq in 1..=sent {
            for &q in routes.queues(key_index(7, seq)) {
                sets[q].insert(seq);
            }
        }
        assert_eq!(routes.verify(7, sent, |q| Some(&sets[q])), (0, 0));
        // Lose one delivery to queue 0, misroute one message to queue 2.
        let mut lossy = sets.clone();
        lossy[0] = SeqSet::default();
        (2..=sent).for_each(|seq| {
            lossy[0].insert(seq);
        });
        lossy[2].insert(5);
        assert_eq!(routes.verify(7, sent, |q| Some(&lossy[q])), (1, 1));
        assert_eq!(routes.verify(7, sent, |_| None).0, routes.deliveries(7, sent));
    }

    #[test]
    fn keys_are_spread_and_stable() {
        let mut hits = vec![0u32; KEYS];
        for seq in 1..=100_000 {
            hits[key_index(3, seq)] += 1;
        }
        assert!(hits.iter().all(|&h| h > 0), "every key is used");
        assert_eq!(key_index(3, 12345), key_index(3, 12345));
        assert_ne!(
            (1..50).map(|s| key_index(0, s)).collect::<Vec<_>>(),
            (1..50).map(|s| key_index(1, s)).collect::<Vec<_>>()
        );
    }
}
