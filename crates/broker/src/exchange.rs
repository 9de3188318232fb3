//! Exchanges: kinds, bindings and the per-kind routing index.
//!
//! A binding is identified, as in RabbitMQ, by (destination, routing key, arguments). The
//! routing index of direct, fanout and topic exchanges ignores arguments, so it holds each
//! (destination, key) once however many argument variants are bound; headers exchanges index
//! every binding with its parsed arguments.

use std::collections::HashMap;

use lepus_protocol::{FieldTable, ShortStr};

use crate::error::BrokerError;
use crate::headers::HeadersBinding;
use crate::topic::TopicMatcher;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(name: &str) -> Option<ExchangeKind> {
        Some(match name {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Queue(ShortStr),
    Exchange(ShortStr),
}

#[derive(Default)]
struct Index {
    direct: HashMap<ShortStr, Vec<Destination>>,
    fanout: Vec<Destination>,
    topic: TopicMatcher<Destination>,
    headers: Vec<(Destination, FieldTable, HeadersBinding)>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("direct_keys", &self.direct.len())
            .field("fanout", &self.fanout.len())
            .field("topic", &self.topic.len())
            .field("headers", &self.headers.len())
            .finish()
    }
}

#[derive(Debug)]
pub struct Exchange {
    pub name: ShortStr,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// The `alternate-exchange` argument.
    pub alternate: Option<ShortStr>,
    /// (destination, key) → the argument tables bound with it.
    bindings: HashMap<(Destination, ShortStr), Vec<FieldTable>>,
    index: Index,
}

impl Exchange {
    pub fn new(
        name: ShortStr,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        let alternate = match arguments.get("alternate-exchange") {
            Some(v) => v.as_bytes().and_then(|b| ShortStr::from_bytes(bytes::Bytes::copy_from_slice(b))),
            None => None,
        };
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            bindings: HashMap::new(),
            index: Index::default(),
        }
    }

    pub fn binding_count(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    /// Adds a binding; `Ok(false)` if it already existed.
    pub fn bind(&mut self, dest: Destination, key: ShortStr, args: FieldTable) -> Result<bool, BrokerError> {
        let headers = match self.kind {
            ExchangeKind::Headers => Some(HeadersBinding::parse(&args).map_err(BrokerError::PreconditionFailed)?),
            _ => None,
        };
        let variants = self.bindings.entry((dest.clone(), key.clone())).or_default();
        if variants.contains(&args) {
            return Ok(false);
        }
        let first = variants.is_empty();
        variants.push(args.clone());
        match (self.kind, headers) {
            (ExchangeKind::Headers, Some(parsed)) => self.index.headers.push((dest, args, parsed)),
            (ExchangeKind::Headers, None) => {}
            (_, _) if !first => {}
            (ExchangeKind::Direct, _) => self.index.direct.entry(key).or_default().push(dest),
            (ExchangeKind::Fanout, _) => self.index.fanout.push(dest),
            (ExchangeKind::Topic, _) => {
                self.index.topic.bind(key.as_bytes(), dest);
            }
        }
        Ok(true)
    }

    /// Removes a binding; false if it did not exist.
    pub fn unbind(&mut self, dest: &Destination, key: &ShortStr, args: &FieldTable) -> bool {
        let map_key = (dest.clone(), key.clone());
        let Some(variants) = self.bindings.get_mut(&map_key) else { return false };
        let Some(pos) = variants.iter().position(|a| a == args) else { return false };
        variants.remove(pos);
        let last = variants.is_empty();
        if last {
            self.bindings.remove(&map_key);
        }
        match self.kind {
            ExchangeKind::Headers => {
                if let Some(i) = self.index.headers.iter().position(|(d, a, _)| d == dest && a == args) {
                    self.index.headers.remove(i);
                }
            }
            _ if !last => {}
            ExchangeKind::Direct => {
                if let Some(list) = self.index.direct.get_mut(key) {
                    list.retain(|d| d != dest);
                    if list.is_empty() {
                        self.index.direct.remove(key);
                    }
                }
            }
            ExchangeKind::Fanout => self.index.fanout.retain(|d| d != dest),
            ExchangeKind::Topic => {
                self.index.topic.unbind(key.as_bytes(), dest);
            }
        }
        true
    }

    /// Every binding: (destination, key, arguments).
    pub fn bindings(&self) -> impl Iterator<Item = (&Destination, &ShortStr, &FieldTable)> {
        self.bindings.iter().flat_map(|((d, k), args)| args.iter().map(move |a| (d, k, a)))
    }

    /// Pushes the destinations for a message with `routing_keys` (the routing key, then any
    /// `CC`/`BCC` keys) and `headers`. May push duplicates; the caller de-duplicates.
    pub fn route(&self, routing_keys: &[&[u8]], headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        match self.kind {
            ExchangeKind::Fanout => out.extend(self.index.fanout.iter().cloned()),
            ExchangeKind::Direct => {
                for key in routing_keys {
                    if let Some(dests) = self.index.direct.get(*key) {
                        out.extend(dests.iter().cloned());
                    }
                }
            }
            ExchangeKind::Topic => {
                for key in routing_keys {
                    self.index.topic.route(key, out);
                }
            }
            ExchangeKind::Headers => {
                for (dest, _, binding) in &self.index.headers {
                    if binding.matches(headers) {
                        out.push(dest.clone());
                    }
                }
            }
        }
    }

    /// `describe()` for reply texts: `exchange 'x' in vhost 'v'`.
    pub fn describe(&self, vhost: &str) -> String {
        format!("exchange '{}' in vhost '{vhost}'", self.name)
    }
}
