//! The fanout exchange type: a message goes to every bound destination, whatever its routing
//! key.

use lepus_protocol::{FieldTable, ShortStr};

use super::{Destination, ExchangeType};

pub const NAME: &str = "fanout";

/// The bound destinations: each once per binding key it is bound with.
#[derive(Debug, Default)]
pub struct Fanout {
    dests: Vec<Destination>,
}

impl ExchangeType for Fanout {
    fn name(&self) -> &'static str {
        NAME
    }

    fn bind(&mut self, dest: &Destination, _key: &ShortStr, _arguments: &FieldTable) {
        self.dests.push(dest.clone());
    }

    fn unbind(&mut self, dest: &Destination, _key: &ShortStr, _arguments: &FieldTable) {
        // One entry goes: the destination may still be bound with another key.
        if let Some(i) = self.dests.iter().position(|d| d == dest) {
            self.dests.remove(i);
        }
    }

    fn route(&self, _routing_keys: &[&[u8]], _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        out.extend(self.dests.iter().cloned());
    }

    fn memoizable(&self) -> bool {
        true
    }
}
