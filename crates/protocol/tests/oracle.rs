//! Property tests against `amq-protocol` (the codec behind lapin) as an oracle: random methods,
//! field tables and content headers, encoded by one side and parsed by the other, both ways,
//! and the two encoders' bytes compared.
//!
//! Where the two codecs legitimately differ, the generators stay on common ground:
//! - Field types: both use RabbitMQ's letters for `t b B s u I i l f d D S A T F V x`, so every
//!   one of those is generated. amq-protocol additionally *reads* `U` (the spec's signed short)
//!   and `L` (the spec's unsigned long long), which RabbitMQ never sends; we reject them as
//!   unknown types (see `malformed.rs`). Never generated here.
//! - amq-protocol's tables are `BTreeMap`s: keys unique and sorted. Ours keep wire order and
//!   duplicates. Generated keys are unique and our tables are built in sorted order.
//! - amq-protocol's shortstrs are `String`s (UTF-8 only); ours are bytes. Generated shortstrs
//!   are UTF-8.
//! - amq-protocol drops reserved fields (`ticket`, `connection.open`'s capabilities/insist,
//!   `channel.open`'s out-of-band, `basic.qos`'s prefetch-size, `basic.get-empty`'s cluster-id)
//!   and writes zero/empty for them. Those are zero/empty in the pairs; `reserved_fields_are_
//!   ignored_by_the_oracle` checks that non-zero values on our side do not confuse it.
//! - NaN floats are excluded (NaN != NaN would fail the comparison, not the codec).

use std::collections::BTreeMap;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext, gen_frame, parse_frame as amq_parse_frame};
use amq_protocol::protocol::{
    AMQPClass, BasicProperties as AmqProps, basic, channel, confirm, connection, exchange, queue, tx,
};
use amq_protocol::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable as AmqTable, LongString, ShortString,
};
use bytes::BytesMut;
use lepus_protocol::frame::{write_content_header, write_method};
use lepus_protocol::method::*;
use lepus_protocol::{
    BasicProperties, ContentHeader, FieldTable, FieldValue, FrameType, LongStr, Method, ShortStr, parse_frame,
};
use proptest::prelude::*;
use proptest::strategy::Union;

/// A field value both codecs can represent, converted to each side's type.
#[derive(Debug, Clone)]
enum V {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal(u8, u32),
    LongStr(Vec<u8>),
    Array(Vec<V>),
    Timestamp(u64),
    Table(BTreeMap<String, V>),
    Void,
    Bytes(Vec<u8>),
}

fn ours(v: &V) -> FieldValue {
    match v {
        V::Bool(x) => FieldValue::Bool(*x),
        V::I8(x) => FieldValue::I8(*x),
        V::U8(x) => FieldValue::U8(*x),
        V::I16(x) => FieldValue::I16(*x),
        V::U16(x) => FieldValue::U16(*x),
        V::I32(x) => FieldValue::I32(*x),
        V::U32(x) => FieldValue::U32(*x),
        V::I64(x) => FieldValue::I64(*x),
        V::F32(x) => FieldValue::F32(*x),
        V::F64(x) => FieldValue::F64(*x),
        V::Decimal(scale, value) => FieldValue::Decimal { scale: *scale, value: *value },
        V::LongStr(b) => FieldValue::LongStr(b.clone().into()),
        V::Array(a) => FieldValue::Array(a.iter().map(ours).collect()),
        V::Timestamp(x) => FieldValue::Timestamp(*x),
        V::Table(t) => FieldValue::Table(our_table(t)),
        V::Void => FieldValue::Void,
        V::Bytes(b) => FieldValue::Bytes(b.clone().into()),
    }
}

fn theirs(v: &V) -> AMQPValue {
    match v {
        V::Bool(x) => AMQPValue::Boolean(*x),
        V::I8(x) => AMQPValue::ShortShortInt(*x),
        V::U8(x) => AMQPValue::ShortShortUInt(*x),
        V::I16(x) => AMQPValue::ShortInt(*x),
        V::U16(x) => AMQPValue::ShortUInt(*x),
        V::I32(x) => AMQPValue::LongInt(*x),
        V::U32(x) => AMQPValue::LongUInt(*x),
        V::I64(x) => AMQPValue::LongLongInt(*x),
        V::F32(x) => AMQPValue::Float(*x),
        V::F64(x) => AMQPValue::Double(*x),
        V::Decimal(scale, value) => AMQPValue::DecimalValue(DecimalValue { scale: *scale, value: *value }),
        V::LongStr(b) => AMQPValue::LongString(LongString::from(b.clone())),
        V::Array(a) => AMQPValue::FieldArray(FieldArray::from(a.iter().map(theirs).collect::<Vec<_>>())),
        V::Timestamp(x) => AMQPValue::Timestamp(*x),
        V::Table(t) => AMQPValue::FieldTable(their_table(t)),
        V::Void => AMQPValue::Void,
        V::Bytes(b) => AMQPValue::ByteArray(ByteArray::from(b.clone())),
    }
}

fn our_table(t: &BTreeMap<String, V>) -> FieldTable {
    FieldTable(t.iter().map(|(k, v)| (ss(k), ours(v))).collect())
}

fn their_table(t: &BTreeMap<String, V>) -> AmqTable {
    AmqTable::from(t.iter().map(|(k, v)| (ShortString::from(k.as_str()), theirs(v))).collect::<BTreeMap<_, _>>())
}

fn ss(s: &str) -> ShortStr {
    ShortStr::try_from(s).expect("generated shortstrs fit")
}

/// UTF-8 shortstrs (at most 30 chars, so at most 120 bytes).
fn short() -> impl Strategy<Value = String> {
    "\\PC{0,30}"
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z-]{0,12}", "\\PC{0,8}"]
}

fn long() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn not_nan_f32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("NaN", |f| !f.is_nan())
}

fn not_nan_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN", |f| !f.is_nan())
}

fn leaf() -> impl Strategy<Value = V> {
    prop_oneof![
        any::<bool>().prop_map(V::Bool),
        any::<i8>().prop_map(V::I8),
        any::<u8>().prop_map(V::U8),
        any::<i16>().prop_map(V::I16),
        any::<u16>().prop_map(V::U16),
        any::<i32>().prop_map(V::I32),
        any::<u32>().prop_map(V::U32),
        any::<i64>().prop_map(V::I64),
        not_nan_f32().prop_map(V::F32),
        not_nan_f64().prop_map(V::F64),
        (any::<u8>(), any::<u32>()).prop_map(|(s, v)| V::Decimal(s, v)),
        long().prop_map(V::LongStr),
        any::<u64>().prop_map(V::Timestamp),
        Just(V::Void),
        long().prop_map(V::Bytes),
    ]
}

/// A value nested at most 3 levels below the table holding it.
fn value() -> impl Strategy<Value = V> {
    leaf().prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(V::Array),
            prop::collection::btree_map(key(), inner, 0..6).prop_map(V::Table),
        ]
    })
}

/// A table with nesting depth at most 4 (itself included).
fn table() -> impl Strategy<Value = BTreeMap<String, V>> {
    prop::collection::btree_map(key(), value(), 0..8)
}

/// A method as (ours, theirs), with reserved fields zero/empty on our side.
type Pair = (Method, AMQPClass);

fn pairs() -> BoxedStrategy<Pair> {
    let arms: Vec<BoxedStrategy<Pair>> = vec![
        (any::<u8>(), any::<u8>(), table(), long(), long())
            .prop_map(|(major, minor, t, mech, loc)| {
                (
                    ConnectionStart {
                        version_major: major,
                        version_minor: minor,
                        server_properties: our_table(&t),
                        mechanisms: LongStr::from(mech.clone()),
                        locales: LongStr::from(loc.clone()),
                    }
                    .into(),
                    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                        version_major: major,
                        version_minor: minor,
                        server_properties: their_table(&t),
                        mechanisms: mech.into(),
                        locales: loc.into(),
                    })),
                )
            })
            .boxed(),
        (table(), short(), long(), short())
            .prop_map(|(t, mech, resp, loc)| {
                (
                    ConnectionStartOk {
                        client_properties: our_table(&t),
                        mechanism: ss(&mech),
                        response: LongStr::from(resp.clone()),
                        locale: ss(&loc),
                    }
                    .into(),
                    AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                        client_properties: their_table(&t),
                        mechanism: mech.into(),
                        response: resp.into(),
                        locale: loc.into(),
                    })),
                )
            })
            .boxed(),
        long()
            .prop_map(|c| {
                (
                    ConnectionSecure { challenge: LongStr::from(c.clone()) }.into(),
                    AMQPClass::Connection(connection::AMQPMethod::Secure(connection::Secure { challenge: c.into() })),
                )
            })
            .boxed(),
        (any::<u16>(), any::<u32>(), any::<u16>(), any::<bool>())
            .prop_map(|(channel_max, frame_max, heartbeat, ok)| {
                if ok {
                    (
                        ConnectionTuneOk { channel_max, frame_max, heartbeat }.into(),
                        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                            channel_max,
                            frame_max,
                            heartbeat,
                        })),
                    )
                } else {
                    (
                        ConnectionTune { channel_max, frame_max, heartbeat }.into(),
                        AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                            channel_max,
                            frame_max,
                            heartbeat,
                        })),
                    )
                }
            })
            .boxed(),
        short()
            .prop_map(|vhost| {
                (
                    ConnectionOpen { virtual_host: ss(&vhost), ..Default::default() }.into(),
                    AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                        virtual_host: vhost.into(),
                    })),
                )
            })
            .boxed(),
        (any::<u16>(), short(), any::<u16>(), any::<u16>(), any::<bool>())
            .prop_map(|(reply_code, text, class_id, method_id, on_channel)| {
                if on_channel {
                    (
                        ChannelClose { reply_code, reply_text: ss(&text), class_id, method_id }.into(),
                        AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                            reply_code,
                            reply_text: text.into(),
                            class_id,
                            method_id,
                        })),
                    )
                } else {
                    (
                        ConnectionClose { reply_code, reply_text: ss(&text), class_id, method_id }.into(),
                        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                            reply_code,
                            reply_text: text.into(),
                            class_id,
                            method_id,
                        })),
                    )
                }
            })
            .boxed(),
        (long(), short())
            .prop_map(|(secret, reason)| {
                (
                    ConnectionUpdateSecret { new_secret: LongStr::from(secret.clone()), reason: ss(&reason) }.into(),
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(connection::UpdateSecret {
                        new_secret: secret.into(),
                        reason: reason.into(),
                    })),
                )
            })
            .boxed(),
        short()
            .prop_map(|reason| {
                (
                    ConnectionBlocked { reason: ss(&reason) }.into(),
                    AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                        reason: reason.into(),
                    })),
                )
            })
            .boxed(),
        Just(())
            .prop_map(|()| {
                (ChannelOpen::default().into(), AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})))
            })
            .boxed(),
        (any::<bool>(), any::<bool>())
            .prop_map(|(active, ok)| {
                if ok {
                    (
                        ChannelFlowOk { active }.into(),
                        AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active })),
                    )
                } else {
                    (
                        ChannelFlow { active }.into(),
                        AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active })),
                    )
                }
            })
            .boxed(),
        (short(), short(), any::<[bool; 5]>(), table())
            .prop_map(|(ex, kind, b, t)| {
                (
                    ExchangeDeclare {
                        ticket: 0,
                        exchange: ss(&ex),
                        kind: ss(&kind),
                        passive: b[0],
                        durable: b[1],
                        auto_delete: b[2],
                        internal: b[3],
                        no_wait: b[4],
                        arguments: our_table(&t),
                    }
                    .into(),
                    AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                        exchange: ex.into(),
                        kind: kind.into(),
                        passive: b[0],
                        durable: b[1],
                        auto_delete: b[2],
                        internal: b[3],
                        nowait: b[4],
                        arguments: their_table(&t),
                    })),
                )
            })
            .boxed(),
        (short(), any::<[bool; 2]>())
            .prop_map(|(ex, b)| {
                (
                    ExchangeDelete { ticket: 0, exchange: ss(&ex), if_unused: b[0], no_wait: b[1] }.into(),
                    AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                        exchange: ex.into(),
                        if_unused: b[0],
                        nowait: b[1],
                    })),
                )
            })
            .boxed(),
        (short(), short(), short(), any::<bool>(), table(), any::<bool>())
            .prop_map(|(dst, src, rk, no_wait, t, unbind)| {
                if unbind {
                    (
                        ExchangeUnbind {
                            ticket: 0,
                            destination: ss(&dst),
                            source: ss(&src),
                            routing_key: ss(&rk),
                            no_wait,
                            arguments: our_table(&t),
                        }
                        .into(),
                        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                            destination: dst.into(),
                            source: src.into(),
                            routing_key: rk.into(),
                            nowait: no_wait,
                            arguments: their_table(&t),
                        })),
                    )
                } else {
                    (
                        ExchangeBind {
                            ticket: 0,
                            destination: ss(&dst),
                            source: ss(&src),
                            routing_key: ss(&rk),
                            no_wait,
                            arguments: our_table(&t),
                        }
                        .into(),
                        AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                            destination: dst.into(),
                            source: src.into(),
                            routing_key: rk.into(),
                            nowait: no_wait,
                            arguments: their_table(&t),
                        })),
                    )
                }
            })
            .boxed(),
        (short(), any::<[bool; 5]>(), table())
            .prop_map(|(q, b, t)| {
                (
                    QueueDeclare {
                        ticket: 0,
                        queue: ss(&q),
                        passive: b[0],
                        durable: b[1],
                        exclusive: b[2],
                        auto_delete: b[3],
                        no_wait: b[4],
                        arguments: our_table(&t),
                    }
                    .into(),
                    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                        queue: q.into(),
                        passive: b[0],
                        durable: b[1],
                        exclusive: b[2],
                        auto_delete: b[3],
                        nowait: b[4],
                        arguments: their_table(&t),
                    })),
                )
            })
            .boxed(),
        (short(), any::<u32>(), any::<u32>())
            .prop_map(|(q, message_count, consumer_count)| {
                (
                    QueueDeclareOk { queue: ss(&q), message_count, consumer_count }.into(),
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: q.into(),
                        message_count,
                        consumer_count,
                    })),
                )
            })
            .boxed(),
        (short(), short(), short(), any::<bool>(), table())
            .prop_map(|(q, ex, rk, no_wait, t)| {
                (
                    QueueBind {
                        ticket: 0,
                        queue: ss(&q),
                        exchange: ss(&ex),
                        routing_key: ss(&rk),
                        no_wait,
                        arguments: our_table(&t),
                    }
                    .into(),
                    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                        queue: q.into(),
                        exchange: ex.into(),
                        routing_key: rk.into(),
                        nowait: no_wait,
                        arguments: their_table(&t),
                    })),
                )
            })
            .boxed(),
        (short(), short(), short(), table())
            .prop_map(|(q, ex, rk, t)| {
                (
                    QueueUnbind {
                        ticket: 0,
                        queue: ss(&q),
                        exchange: ss(&ex),
                        routing_key: ss(&rk),
                        arguments: our_table(&t),
                    }
                    .into(),
                    AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                        queue: q.into(),
                        exchange: ex.into(),
                        routing_key: rk.into(),
                        arguments: their_table(&t),
                    })),
                )
            })
            .boxed(),
        (short(), any::<[bool; 3]>())
            .prop_map(|(q, b)| {
                (
                    QueueDelete { ticket: 0, queue: ss(&q), if_unused: b[0], if_empty: b[1], no_wait: b[2] }.into(),
                    AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                        queue: q.into(),
                        if_unused: b[0],
                        if_empty: b[1],
                        nowait: b[2],
                    })),
                )
            })
            .boxed(),
        (short(), any::<bool>())
            .prop_map(|(q, no_wait)| {
                (
                    QueuePurge { ticket: 0, queue: ss(&q), no_wait }.into(),
                    AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge { queue: q.into(), nowait: no_wait })),
                )
            })
            .boxed(),
        (short(), short(), any::<[bool; 2]>())
            .prop_map(|(ex, rk, b)| {
                (
                    BasicPublish {
                        ticket: 0,
                        exchange: ss(&ex),
                        routing_key: ss(&rk),
                        mandatory: b[0],
                        immediate: b[1],
                    }
                    .into(),
                    AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                        exchange: ex.into(),
                        routing_key: rk.into(),
                        mandatory: b[0],
                        immediate: b[1],
                    })),
                )
            })
            .boxed(),
        (any::<u16>(), short(), short(), short())
            .prop_map(|(code, text, ex, rk)| {
                (
                    BasicReturn { reply_code: code, reply_text: ss(&text), exchange: ss(&ex), routing_key: ss(&rk) }
                        .into(),
                    AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                        reply_code: code,
                        reply_text: text.into(),
                        exchange: ex.into(),
                        routing_key: rk.into(),
                    })),
                )
            })
            .boxed(),
        (short(), any::<u64>(), any::<bool>(), short(), short())
            .prop_map(|(tag, delivery_tag, redelivered, ex, rk)| {
                (
                    BasicDeliver {
                        consumer_tag: ss(&tag),
                        delivery_tag,
                        redelivered,
                        exchange: ss(&ex),
                        routing_key: ss(&rk),
                    }
                    .into(),
                    AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                        consumer_tag: tag.into(),
                        delivery_tag,
                        redelivered,
                        exchange: ex.into(),
                        routing_key: rk.into(),
                    })),
                )
            })
            .boxed(),
        (any::<u64>(), any::<bool>(), short(), short(), any::<u32>())
            .prop_map(|(delivery_tag, redelivered, ex, rk, message_count)| {
                (
                    BasicGetOk { delivery_tag, redelivered, exchange: ss(&ex), routing_key: ss(&rk), message_count }
                        .into(),
                    AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                        delivery_tag,
                        redelivered,
                        exchange: ex.into(),
                        routing_key: rk.into(),
                        message_count,
                    })),
                )
            })
            .boxed(),
        (short(), any::<bool>())
            .prop_map(|(q, no_ack)| {
                (
                    BasicGet { ticket: 0, queue: ss(&q), no_ack }.into(),
                    AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get { queue: q.into(), no_ack })),
                )
            })
            .boxed(),
        (any::<u64>(), any::<[bool; 2]>(), 0..3u8)
            .prop_map(|(delivery_tag, b, which)| match which {
                0 => (
                    BasicAck { delivery_tag, multiple: b[0] }.into(),
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag, multiple: b[0] })),
                ),
                1 => (
                    BasicNack { delivery_tag, multiple: b[0], requeue: b[1] }.into(),
                    AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag,
                        multiple: b[0],
                        requeue: b[1],
                    })),
                ),
                _ => (
                    BasicReject { delivery_tag, requeue: b[1] }.into(),
                    AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject { delivery_tag, requeue: b[1] })),
                ),
            })
            .boxed(),
        (short(), short(), any::<[bool; 4]>(), table())
            .prop_map(|(q, tag, b, t)| {
                (
                    BasicConsume {
                        ticket: 0,
                        queue: ss(&q),
                        consumer_tag: ss(&tag),
                        no_local: b[0],
                        no_ack: b[1],
                        exclusive: b[2],
                        no_wait: b[3],
                        arguments: our_table(&t),
                    }
                    .into(),
                    AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                        queue: q.into(),
                        consumer_tag: tag.into(),
                        no_local: b[0],
                        no_ack: b[1],
                        exclusive: b[2],
                        nowait: b[3],
                        arguments: their_table(&t),
                    })),
                )
            })
            .boxed(),
        (short(), any::<bool>())
            .prop_map(|(tag, no_wait)| {
                (
                    BasicCancel { consumer_tag: ss(&tag), no_wait }.into(),
                    AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                        consumer_tag: tag.into(),
                        nowait: no_wait,
                    })),
                )
            })
            .boxed(),
        (any::<u16>(), any::<bool>())
            .prop_map(|(prefetch_count, global)| {
                (
                    BasicQos { prefetch_size: 0, prefetch_count, global }.into(),
                    AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count, global })),
                )
            })
            .boxed(),
        (any::<bool>(), any::<bool>())
            .prop_map(|(requeue, sync)| {
                if sync {
                    (
                        BasicRecover { requeue }.into(),
                        AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover { requeue })),
                    )
                } else {
                    (
                        BasicRecoverAsync { requeue }.into(),
                        AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue })),
                    )
                }
            })
            .boxed(),
        any::<bool>()
            .prop_map(|no_wait| {
                (
                    ConfirmSelect { no_wait }.into(),
                    AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: no_wait })),
                )
            })
            .boxed(),
        (0..6u8)
            .prop_map(|which| match which {
                0 => (TxSelect {}.into(), AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}))),
                1 => (TxSelectOk {}.into(), AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {}))),
                2 => (TxCommit {}.into(), AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))),
                3 => (TxCommitOk {}.into(), AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}))),
                4 => (TxRollback {}.into(), AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {}))),
                _ => (TxRollbackOk {}.into(), AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {}))),
            })
            .boxed(),
        (0..8u8)
            .prop_map(|which| match which {
                0 => (
                    ConnectionCloseOk {}.into(),
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                ),
                1 => (ChannelCloseOk {}.into(), AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}))),
                2 => (
                    ChannelOpenOk::default().into(),
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                ),
                3 => (
                    ConnectionOpenOk::default().into(),
                    AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
                ),
                4 => {
                    (ConfirmSelectOk {}.into(), AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})))
                }
                5 => (BasicQosOk {}.into(), AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {}))),
                6 => {
                    (BasicGetEmpty::default().into(), AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})))
                }
                _ => (QueueBindOk {}.into(), AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {}))),
            })
            .boxed(),
    ];
    Union::new(arms).boxed()
}

fn encode_ours(channel: u16, m: &Method) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_method(&mut out, channel, m);
    out.to_vec()
}

fn encode_theirs(frame: &AMQPFrame) -> Vec<u8> {
    let ctx = gen_frame(frame)(WriteContext::from(Vec::new())).expect("amq-protocol encodes");
    ctx.write
}

fn parse_theirs(bytes: &[u8]) -> AMQPFrame {
    let (rest, frame) = amq_parse_frame(bytes).unwrap_or_else(|e| panic!("amq-protocol rejects {bytes:?}: {e:?}"));
    assert!(rest.is_empty(), "amq-protocol left {} bytes", rest.len());
    frame
}

fn parse_ours(bytes: &[u8]) -> lepus_protocol::Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = parse_frame(&mut buf, u32::MAX).expect("we parse the frame").expect("complete");
    assert!(buf.is_empty());
    frame
}

/// Sets the reserved fields amq-protocol ignores.
fn with_reserved(m: &Method, ticket: u16, text: &str) -> Method {
    let mut m = m.clone();
    match &mut m {
        Method::ExchangeDeclare(x) => x.ticket = ticket,
        Method::ExchangeDelete(x) => x.ticket = ticket,
        Method::ExchangeBind(x) => x.ticket = ticket,
        Method::ExchangeUnbind(x) => x.ticket = ticket,
        Method::QueueDeclare(x) => x.ticket = ticket,
        Method::QueueBind(x) => x.ticket = ticket,
        Method::QueueUnbind(x) => x.ticket = ticket,
        Method::QueuePurge(x) => x.ticket = ticket,
        Method::QueueDelete(x) => x.ticket = ticket,
        Method::BasicConsume(x) => x.ticket = ticket,
        Method::BasicPublish(x) => x.ticket = ticket,
        Method::BasicGet(x) => x.ticket = ticket,
        Method::BasicQos(x) => x.prefetch_size = ticket as u32 * 3,
        Method::ConnectionOpen(x) => {
            x.capabilities = ss(text);
            x.insist = ticket % 2 == 1;
        }
        Method::ChannelOpen(x) => x.out_of_band = ss(text),
        Method::BasicGetEmpty(x) => x.cluster_id = ss(text),
        _ => {}
    }
    m
}

/// (ours, theirs) content header properties.
fn properties() -> impl Strategy<Value = (BasicProperties, AmqProps)> {
    let strings = prop::collection::vec(prop::option::of(short()), 11);
    (
        strings,
        prop::option::of(table()),
        prop::option::of(any::<u8>()),
        prop::option::of(any::<u8>()),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(s, headers, delivery_mode, priority, timestamp)| {
            let o = |i: usize| s[i].as_deref().map(ss);
            let ours = BasicProperties {
                content_type: o(0),
                content_encoding: o(1),
                headers: headers.as_ref().map(our_table),
                delivery_mode,
                priority,
                correlation_id: o(2),
                reply_to: o(3),
                expiration: o(4),
                message_id: o(5),
                timestamp,
                kind: o(6),
                user_id: o(7),
                app_id: o(8),
                cluster_id: o(9),
            };
            let mut t = AmqProps::default();
            let st = |i: usize| s[i].clone().map(ShortString::from);
            if let Some(v) = st(0) {
                t = t.with_content_type(v);
            }
            if let Some(v) = st(1) {
                t = t.with_content_encoding(v);
            }
            if let Some(h) = &headers {
                t = t.with_headers(their_table(h));
            }
            if let Some(v) = delivery_mode {
                t = t.with_delivery_mode(v);
            }
            if let Some(v) = priority {
                t = t.with_priority(v);
            }
            if let Some(v) = st(2) {
                t = t.with_correlation_id(v);
            }
            if let Some(v) = st(3) {
                t = t.with_reply_to(v);
            }
            if let Some(v) = st(4) {
                t = t.with_expiration(v);
            }
            if let Some(v) = st(5) {
                t = t.with_message_id(v);
            }
            if let Some(v) = timestamp {
                t = t.with_timestamp(v);
            }
            if let Some(v) = st(6) {
                t = t.with_type(v);
            }
            if let Some(v) = st(7) {
                t = t.with_user_id(v);
            }
            if let Some(v) = st(8) {
                t = t.with_app_id(v);
            }
            if let Some(v) = st(9) {
                t = t.with_cluster_id(v);
            }
            (ours, t)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn ours_to_theirs((ours, theirs) in pairs(), channel in any::<u16>()) {
        let bytes = encode_ours(channel, &ours);
        prop_assert_eq!(parse_theirs(&bytes), AMQPFrame::Method(channel, theirs));
    }

    #[test]
    fn theirs_to_ours((ours, theirs) in pairs(), channel in any::<u16>()) {
        let bytes = encode_theirs(&AMQPFrame::Method(channel, theirs));
        let frame = parse_ours(&bytes);
        prop_assert_eq!(frame.frame_type, FrameType::Method);
        prop_assert_eq!(frame.channel, channel);
        prop_assert_eq!(Method::decode(frame.payload).expect("we decode"), ours);
    }

    #[test]
    fn both_encoders_produce_the_same_bytes((ours, theirs) in pairs(), channel in any::<u16>()) {
        let name = ours.name();
        prop_assert_eq!(encode_ours(channel, &ours), encode_theirs(&AMQPFrame::Method(channel, theirs)), "{}", name);
    }

    #[test]
    fn reserved_fields_are_ignored_by_the_oracle((ours, theirs) in pairs(), ticket in 1..=u16::MAX, text in "[a-z]{1,10}") {
        let bytes = encode_ours(7, &with_reserved(&ours, ticket, &text));
        prop_assert_eq!(parse_theirs(&bytes), AMQPFrame::Method(7, theirs));
    }

    #[test]
    fn field_tables_both_ways(t in table()) {
        // Through connection.start-ok's client properties (a table as the first argument).
        let ours: Method = ConnectionStartOk { client_properties: our_table(&t), ..Default::default() }.into();
        let theirs = AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: their_table(&t),
            ..Default::default()
        }));
        let ours_bytes = encode_ours(0, &ours);
        let theirs_bytes = encode_theirs(&AMQPFrame::Method(0, theirs.clone()));
        prop_assert_eq!(&ours_bytes, &theirs_bytes);
        prop_assert_eq!(parse_theirs(&ours_bytes), AMQPFrame::Method(0, theirs));
        prop_assert_eq!(Method::decode(parse_ours(&theirs_bytes).payload).expect("we decode"), ours);
    }

    /// The hand-written hot-path encoders in `fast` write exactly what the generic encoder
    /// writes (shortstrs over 255 bytes truncated), and amq-protocol reads it.
    #[test]
    fn fast_encoders_match_generic_and_oracle(
        channel in any::<u16>(),
        strs in prop::collection::vec(
            prop_oneof![prop::collection::vec(any::<u8>(), 0..300), "[ -~]{0,300}".prop_map(String::into_bytes)],
            3,
        ),
        tag in any::<u64>(),
        flag in any::<bool>(),
        n in any::<u32>(),
        code in any::<u16>(),
    ) {
        use lepus_protocol::fast;
        let cut = |b: &[u8]| ShortStr::from_bytes(bytes::Bytes::copy_from_slice(&b[..b.len().min(255)])).expect("fits");
        let (a, b, c) = (&strs[0], &strs[1], &strs[2]);
        let cases: Vec<(BytesMut, Method)> = vec![
            (
                {
                    let mut out = BytesMut::new();
                    fast::write_deliver(&mut out, channel, a, tag, flag, b, c);
                    out
                },
                BasicDeliver { consumer_tag: cut(a), delivery_tag: tag, redelivered: flag, exchange: cut(b), routing_key: cut(c) }.into(),
            ),
            (
                {
                    let mut out = BytesMut::new();
                    fast::write_get_ok(&mut out, channel, tag, flag, a, b, n);
                    out
                },
                BasicGetOk { delivery_tag: tag, redelivered: flag, exchange: cut(a), routing_key: cut(b), message_count: n }.into(),
            ),
            (
                {
                    let mut out = BytesMut::new();
                    fast::write_return(&mut out, channel, code, a, b, c);
                    out
                },
                BasicReturn { reply_code: code, reply_text: cut(a), exchange: cut(b), routing_key: cut(c) }.into(),
            ),
            (
                {
                    let mut out = BytesMut::new();
                    fast::write_ack(&mut out, channel, tag, flag);
                    out
                },
                BasicAck { delivery_tag: tag, multiple: flag }.into(),
            ),
            (
                {
                    let mut out = BytesMut::new();
                    fast::write_nack(&mut out, channel, tag, flag);
                    out
                },
                BasicNack { delivery_tag: tag, multiple: flag, requeue: false }.into(),
            ),
        ];
        for (fast_bytes, generic) in cases {
            prop_assert_eq!(fast_bytes.to_vec(), encode_ours(channel, &generic), "{}", generic.name());
            prop_assert_eq!(Method::decode(parse_ours(&fast_bytes).payload).expect("decodes"), generic.clone());
            // amq-protocol's shortstrs must be UTF-8; only ask it about the ones that are.
            if strs.iter().all(|s| std::str::from_utf8(&s[..s.len().min(255)]).is_ok()) {
                prop_assert!(matches!(parse_theirs(&fast_bytes), AMQPFrame::Method(ch, _) if ch == channel));
            }
        }
    }

    #[test]
    fn content_headers_ours_to_theirs((ours, theirs) in properties(), body_size in any::<u64>(), channel in any::<u16>()) {
        let mut out = BytesMut::new();
        write_content_header(&mut out, channel, body_size, &ours.to_raw());
        let expected = AMQPFrame::Header(channel, AMQPContentHeader { class_id: 60, body_size, properties: theirs });
        prop_assert_eq!(parse_theirs(&out), expected.clone());
        prop_assert_eq!(out.to_vec(), encode_theirs(&expected));
    }

    #[test]
    fn content_headers_theirs_to_ours((ours, theirs) in properties(), body_size in any::<u64>(), channel in any::<u16>()) {
        let bytes = encode_theirs(&AMQPFrame::Header(channel, AMQPContentHeader { class_id: 60, body_size, properties: theirs }));
        let frame = parse_ours(&bytes);
        prop_assert_eq!(frame.frame_type, FrameType::Header);
        prop_assert_eq!(frame.channel, channel);
        let header = ContentHeader::decode(frame.payload.clone()).expect("we decode the header");
        prop_assert_eq!(header.body_size, body_size);
        prop_assert_eq!(header.delivery_mode, ours.delivery_mode);
        prop_assert_eq!(header.priority, ours.priority);
        prop_assert_eq!(&header.expiration, &ours.expiration);
        prop_assert_eq!(header.timestamp, ours.timestamp);
        prop_assert_eq!(header.raw_properties.as_ref(), &frame.payload[12..]);
        prop_assert_eq!(header.properties().expect("we decode the properties"), ours);
    }
}
