//! The headers exchange type: a message goes to the destinations whose binding arguments match
//! its `headers` property (`x-match` all or any); the routing key plays no part. Parsing and
//! matching are [`crate::headers`]'.

use lepus_protocol::{FieldTable, ShortStr};

use super::{Destination, ExchangeType};
use crate::headers::HeadersBinding;

pub const NAME: &str = "headers";

/// Every binding with its arguments, raw (to find it again on unbind) and parsed.
#[derive(Debug, Default)]
pub struct Headers {
    bindings: Vec<(Destination, FieldTable, HeadersBinding)>,
}

impl ExchangeType for Headers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check_binding(&self, arguments: &FieldTable) -> Result<(), String> {
        HeadersBinding::parse(arguments).map(drop)
    }

    fn indexes_arguments(&self) -> bool {
        true
    }

    fn bind(&mut self, dest: &Destination, _key: &ShortStr, arguments: &FieldTable) {
        let parsed = HeadersBinding::parse(arguments);
        debug_assert!(parsed.is_ok(), "a headers binding bound unchecked: {parsed:?}");
        if let Ok(parsed) = parsed {
            self.bindings.push((dest.clone(), arguments.clone(), parsed));
        }
    }

    fn unbind(&mut self, dest: &Destination, _key: &ShortStr, arguments: &FieldTable) {
        if let Some(i) = self.bindings.iter().position(|(d, a, _)| d == dest && a == arguments) {
            self.bindings.remove(i);
        }
    }

    fn route(&self, _routing_keys: &[&[u8]], headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        for (dest, _, binding) in &self.bindings {
            if binding.matches(headers) {
                out.push(dest.clone());
            }
        }
    }

    fn routes_by_headers(&self) -> bool {
        true
    }
}
