//! Every method of the connection, channel, exchange, queue, basic, confirm and tx classes,
//! in both directions, generated from one table by the `methods!` macro.
//!
//! Decoding a method never copies strings: `shortstr`/`longstr` fields are slices of the frame
//! payload. `basic.publish`, `basic.ack`/`nack`/`reject` therefore decode without allocating;
//! only methods with field tables (declare/bind/consume arguments) allocate.

use bytes::{Bytes, BytesMut};

use crate::codec::{Decoder, Encoder, Field};
use crate::error::{ProtocolError, Result};
use crate::table::FieldTable;
use crate::types::{LongStr, ShortStr};

macro_rules! methods {
    ($( $class:literal, $method:literal, $text:literal, $name:ident { $( $field:ident : $ty:ty ),* $(,)? } )*) => {
        /// A decoded AMQP method.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Method {
            $( $name($name), )*
        }

        $(
            #[doc = concat!("`", $text, "` (", stringify!($class), ".", stringify!($method), ")")]
            #[derive(Debug, Clone, PartialEq, Default)]
            pub struct $name {
                $( pub $field: $ty, )*
            }

            impl $name {
                pub const CLASS_ID: u16 = $class;
                pub const METHOD_ID: u16 = $method;
                /// `(class_id << 16) | method_id`, what [`Method::decode`] dispatches on.
                pub const ID: u32 = (($class as u32) << 16) | $method;
            }

            impl From<$name> for Method {
                fn from(m: $name) -> Method {
                    Method::$name(m)
                }
            }
        )*

        impl Method {
            /// `(class_id, method_id)`.
            pub fn ids(&self) -> (u16, u16) {
                match self {
                    $( Method::$name(_) => ($class, $method), )*
                }
            }

            /// The spec's name, such as `basic.publish`.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Method::$name(_) => $text, )*
                }
            }

            /// The spec's name of a method by its ids, if it exists.
            pub fn name_of(class_id: u16, method_id: u16) -> Option<&'static str> {
                match ((class_id as u32) << 16) | method_id as u32 {
                    $( $name::ID => Some($text), )*
                    _ => None,
                }
            }

            /// Decodes a method frame payload (class id, method id, arguments).
            pub fn decode(payload: Bytes) -> Result<Method> {
                let mut d = Decoder::new(payload, "method frame");
                let class_id = d.u16()?;
                let method_id = d.u16()?;
                let method = match ((class_id as u32) << 16) | method_id as u32 {
                    $( $name::ID => {
                        d.set_what($text);
                        Method::$name($name { $( $field: Field::decode(&mut d)?, )* })
                    } )*
                    _ => return Err(ProtocolError::UnknownMethod { class_id, method_id }),
                };
                d.finish()?;
                Ok(method)
            }

            /// Appends the method frame payload (class id, method id, arguments) to `out`.
            pub fn encode_payload(&self, out: &mut BytesMut) {
                let mut e = Encoder::new(out);
                match self {
                    $( Method::$name(_m) => {
                        e.u16($class);
                        e.u16($method);
                        $( _m.$field.encode(&mut e); )*
                    } )*
                }
            }
        }
    };
}

methods! {
    10, 10, "connection.start", ConnectionStart {
        version_major: u8, version_minor: u8, server_properties: FieldTable,
        mechanisms: LongStr, locales: LongStr,
    }
    10, 11, "connection.start-ok", ConnectionStartOk {
        client_properties: FieldTable, mechanism: ShortStr, response: LongStr, locale: ShortStr,
    }
    10, 20, "connection.secure", ConnectionSecure { challenge: LongStr }
    10, 21, "connection.secure-ok", ConnectionSecureOk { response: LongStr }
    10, 30, "connection.tune", ConnectionTune { channel_max: u16, frame_max: u32, heartbeat: u16 }
    10, 31, "connection.tune-ok", ConnectionTuneOk { channel_max: u16, frame_max: u32, heartbeat: u16 }
    10, 40, "connection.open", ConnectionOpen { virtual_host: ShortStr, capabilities: ShortStr, insist: bool }
    10, 41, "connection.open-ok", ConnectionOpenOk { known_hosts: ShortStr }
    10, 50, "connection.close", ConnectionClose {
        reply_code: u16, reply_text: ShortStr, class_id: u16, method_id: u16,
    }
    10, 51, "connection.close-ok", ConnectionCloseOk {}
    10, 60, "connection.blocked", ConnectionBlocked { reason: ShortStr }
    10, 61, "connection.unblocked", ConnectionUnblocked {}
    10, 70, "connection.update-secret", ConnectionUpdateSecret { new_secret: LongStr, reason: ShortStr }
    10, 71, "connection.update-secret-ok", ConnectionUpdateSecretOk {}

    20, 10, "channel.open", ChannelOpen { out_of_band: ShortStr }
    20, 11, "channel.open-ok", ChannelOpenOk { channel_id: LongStr }
    20, 20, "channel.flow", ChannelFlow { active: bool }
    20, 21, "channel.flow-ok", ChannelFlowOk { active: bool }
    20, 40, "channel.close", ChannelClose {
        reply_code: u16, reply_text: ShortStr, class_id: u16, method_id: u16,
    }
    20, 41, "channel.close-ok", ChannelCloseOk {}

    40, 10, "exchange.declare", ExchangeDeclare {
        ticket: u16, exchange: ShortStr, kind: ShortStr, passive: bool, durable: bool,
        auto_delete: bool, internal: bool, no_wait: bool, arguments: FieldTable,
    }
    40, 11, "exchange.declare-ok", ExchangeDeclareOk {}
    40, 20, "exchange.delete", ExchangeDelete { ticket: u16, exchange: ShortStr, if_unused: bool, no_wait: bool }
    40, 21, "exchange.delete-ok", ExchangeDeleteOk {}
    40, 30, "exchange.bind", ExchangeBind {
        ticket: u16, destination: ShortStr, source: ShortStr, routing_key: ShortStr,
        no_wait: bool, arguments: FieldTable,
    }
    40, 31, "exchange.bind-ok", ExchangeBindOk {}
    40, 40, "exchange.unbind", ExchangeUnbind {
        ticket: u16, destination: ShortStr, source: ShortStr, routing_key: ShortStr,
        no_wait: bool, arguments: FieldTable,
    }
    40, 51, "exchange.unbind-ok", ExchangeUnbindOk {}

    50, 10, "queue.declare", QueueDeclare {
        ticket: u16, queue: ShortStr, passive: bool, durable: bool, exclusive: bool,
        auto_delete: bool, no_wait: bool, arguments: FieldTable,
    }
    50, 11, "queue.declare-ok", QueueDeclareOk { queue: ShortStr, message_count: u32, consumer_count: u32 }
    50, 20, "queue.bind", QueueBind {
        ticket: u16, queue: ShortStr, exchange: ShortStr, routing_key: ShortStr, no_wait: bool,
        arguments: FieldTable,
    }
    50, 21, "queue.bind-ok", QueueBindOk {}
    50, 30, "queue.purge", QueuePurge { ticket: u16, queue: ShortStr, no_wait: bool }
    50, 31, "queue.purge-ok", QueuePurgeOk { message_count: u32 }
    50, 40, "queue.delete", QueueDelete {
        ticket: u16, queue: ShortStr, if_unused: bool, if_empty: bool, no_wait: bool,
    }
    50, 41, "queue.delete-ok", QueueDeleteOk { message_count: u32 }
    50, 50, "queue.unbind", QueueUnbind {
        ticket: u16, queue: ShortStr, exchange: ShortStr, routing_key: ShortStr,
        arguments: FieldTable,
    }
    50, 51, "queue.unbind-ok", QueueUnbindOk {}

    60, 10, "basic.qos", BasicQos { prefetch_size: u32, prefetch_count: u16, global: bool }
    60, 11, "basic.qos-ok", BasicQosOk {}
    60, 20, "basic.consume", BasicConsume {
        ticket: u16, queue: ShortStr, consumer_tag: ShortStr, no_local: bool, no_ack: bool,
        exclusive: bool, no_wait: bool, arguments: FieldTable,
    }
    60, 21, "basic.consume-ok", BasicConsumeOk { consumer_tag: ShortStr }
    60, 30, "basic.cancel", BasicCancel { consumer_tag: ShortStr, no_wait: bool }
    60, 31, "basic.cancel-ok", BasicCancelOk { consumer_tag: ShortStr }
    60, 40, "basic.publish", BasicPublish {
        ticket: u16, exchange: ShortStr, routing_key: ShortStr, mandatory: bool, immediate: bool,
    }
    60, 50, "basic.return", BasicReturn {
        reply_code: u16, reply_text: ShortStr, exchange: ShortStr, routing_key: ShortStr,
    }
    60, 60, "basic.deliver", BasicDeliver {
        consumer_tag: ShortStr, delivery_tag: u64, redelivered: bool, exchange: ShortStr,
        routing_key: ShortStr,
    }
    60, 70, "basic.get", BasicGet { ticket: u16, queue: ShortStr, no_ack: bool }
    60, 71, "basic.get-ok", BasicGetOk {
        delivery_tag: u64, redelivered: bool, exchange: ShortStr, routing_key: ShortStr,
        message_count: u32,
    }
    60, 72, "basic.get-empty", BasicGetEmpty { cluster_id: ShortStr }
    60, 80, "basic.ack", BasicAck { delivery_tag: u64, multiple: bool }
    60, 90, "basic.reject", BasicReject { delivery_tag: u64, requeue: bool }
    60, 100, "basic.recover-async", BasicRecoverAsync { requeue: bool }
    60, 110, "basic.recover", BasicRecover { requeue: bool }
    60, 111, "basic.recover-ok", BasicRecoverOk {}
    60, 120, "basic.nack", BasicNack { delivery_tag: u64, multiple: bool, requeue: bool }

    85, 10, "confirm.select", ConfirmSelect { no_wait: bool }
    85, 11, "confirm.select-ok", ConfirmSelectOk {}

    90, 10, "tx.select", TxSelect {}
    90, 11, "tx.select-ok", TxSelectOk {}
    90, 20, "tx.commit", TxCommit {}
    90, 21, "tx.commit-ok", TxCommitOk {}
    90, 30, "tx.rollback", TxRollback {}
    90, 31, "tx.rollback-ok", TxRollbackOk {}
}

impl Method {
    /// Whether this method is followed by a content header and body (publish, return,
    /// deliver, get-ok).
    pub fn carries_content(&self) -> bool {
        matches!(
            self,
            Method::BasicPublish(_) | Method::BasicReturn(_) | Method::BasicDeliver(_) | Method::BasicGetOk(_)
        )
    }
}
