//! The topic exchange type: a message goes to the destinations whose binding key, a pattern of
//! words with `*` and `#`, matches its routing key. The matching is [`crate::topic`]'s trie.

use std::fmt;

use lepus_protocol::{FieldTable, ShortStr};

use super::{Destination, ExchangeType};
use crate::topic::TopicMatcher;

pub const NAME: &str = "topic";

/// The binding keys as a word trie.
#[derive(Default)]
pub struct Topic {
    trie: TopicMatcher<Destination>,
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic").field("bindings", &self.trie.len()).finish()
    }
}

impl ExchangeType for Topic {
    fn name(&self) -> &'static str {
        NAME
    }

    fn bind(&mut self, dest: &Destination, key: &ShortStr, _arguments: &FieldTable) {
        self.trie.bind(key.as_bytes(), dest.clone());
    }

    fn unbind(&mut self, dest: &Destination, key: &ShortStr, _arguments: &FieldTable) {
        self.trie.unbind(key.as_bytes(), dest);
    }

    fn route(&self, routing_keys: &[&[u8]], _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        for key in routing_keys {
            self.trie.route(key, out);
        }
    }

    fn memoizable(&self) -> bool {
        true
    }
}
