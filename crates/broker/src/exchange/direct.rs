//! The direct exchange type: a message goes to the destinations bound with exactly its routing
//! key (or one of its `CC`/`BCC` keys), compared byte for byte.

use std::collections::HashMap;

use lepus_protocol::{FieldTable, ShortStr};

use super::{Destination, ExchangeType};

pub const NAME: &str = "direct";

/// Binding key → the destinations bound with it, each once.
#[derive(Debug, Default)]
pub struct Direct {
    by_key: HashMap<ShortStr, Vec<Destination>>,
}

impl ExchangeType for Direct {
    fn name(&self) -> &'static str {
        NAME
    }

    fn bind(&mut self, dest: &Destination, key: &ShortStr, _arguments: &FieldTable) {
        self.by_key.entry(key.clone()).or_default().push(dest.clone());
    }

    fn unbind(&mut self, dest: &Destination, key: &ShortStr, _arguments: &FieldTable) {
        if let Some(list) = self.by_key.get_mut(key) {
            list.retain(|d| d != dest);
            if list.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    fn route(&self, routing_keys: &[&[u8]], _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        for key in routing_keys {
            if let Some(dests) = self.by_key.get(*key) {
                out.extend(dests.iter().cloned());
            }
        }
    }
}
