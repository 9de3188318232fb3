//! Headers-exchange matching: owns the parsing of a headers binding's arguments (`x-match`
//! and the header values to compare) and the decision whether a message's `headers`
//! property matches one binding.
//!
//! # Semantics (RabbitMQ 3.13 – 4.x, checked against its source)
//!
//! Read in `rabbitmq/rabbitmq-server`: `deps/rabbit/src/rabbit_exchange_type_headers.erl`
//! (`route/3`, `match/2`, `match_x/2`, `match_all/3`, `match_any/3`, `validate_binding/2`),
//! `deps/rabbit/src/mc_amqpl.erl` (`routing_headers/2`, `routing_value/2`: how a message's
//! headers become the map that bindings are compared with),
//! `deps/rabbit_common/src/rabbit_binary_parser.erl` (how field values are represented, so
//! what Erlang's `=:=` compares) and `deps/rabbit/src/rabbit_channel.erl` (an invalid binding
//! is `406 PRECONDITION_FAILED` with the text from `validate_binding/2`). Those files have
//! been this way since the message-container rewrite in 3.13.0, through 4.3.
//!
//! * `x-match` is looked up in the binding arguments (first occurrence): absent means `all`;
//!   a longstr `all`, `any`, `all-with-x` or `any-with-x` selects the mode; any other longstr,
//!   or any other type (even a binary `x` holding `all`), refuses the binding.
//! * The argument `x-match` itself never takes part. Other arguments whose key starts with
//!   `x-` take part only in `all-with-x` / `any-with-x`.
//! * An argument of type void (`V`) matches when the message has a header with that key,
//!   whatever its value (even a void one).
//! * Any other argument matches when the message has the key and the values are equal under
//!   Erlang's exact equality (`=:=`) of the *decoded* values, so the wire type is mostly
//!   ignored: every integer type compares by value (`I` 1 = `l` 1 = `B` 1), `f` and `d` compare
//!   as doubles (`f` 0.5 = `d` 0.5), `S` and `x` compare as bytes (`S` "a" = `x` "a"), but an
//!   integer never equals a float (`I` 1 ≠ `d` 1.0), and `t` true is not the integer 1.
//!   Decimals compare as `(scale, value)` pairs (`D` 1.0 as (1, 10) ≠ (0, 1)).
//!   Floats follow OTP 27+: `0.0 =/= -0.0`; NaN (which Erlang cannot even decode) matches
//!   nothing.
//! * A message header of type timestamp (`T`) is converted to milliseconds first
//!   (`routing_value(timestamp, V) -> V * 1000`) while the binding argument is not: binding
//!   `T` 5 does **not** match header `T` 5, binding `l` 5000 does. Faithfully reproduced.
//! * Tables and arrays are compared whole and *typed*: RabbitMQ keeps nested values as
//!   `{Key, Type, Value}` / `{Type, Value}` lists, so inside them `I` 1 ≠ `l` 1, `S` ≠ `x`,
//!   `f` ≠ `d`, entries compare in wire order and nested timestamps are not converted. At the
//!   top level an empty table equals an empty array (both are Erlang's `[]`).
//! * When a message has the same header key twice, the last one counts (it is folded into a
//!   map). Duplicate binding arguments are each checked.
//! * `all`: every participating argument matches; with none, every message matches (even one
//!   without headers). `any`: at least one matches; with none, nothing matches.
//!
//! RabbitMQ ≤ 3.12 differed (a merge of the two key-sorted tables compared with `==`, so
//! `I` 1 matched `d` 1.0, timestamps were not converted and the first of duplicate header
//! keys counted); this module follows the current behaviour.

use std::fmt::Write as _;

use lepus_protocol::{FieldTable, FieldValue, ShortStr};

/// How a headers binding matches, from its `x-match` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMatch {
    /// `all` (also when `x-match` is absent): every argument not starting with `x-` matches.
    All,
    /// `any`: at least one argument not starting with `x-` matches.
    Any,
    /// `all-with-x`: like `all`, but `x-` arguments (except `x-match`) take part.
    AllWithX,
    /// `any-with-x`: like `any`, but `x-` arguments (except `x-match`) take part.
    AnyWithX,
}

/// What one binding argument requires of the message headers.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Void argument: the key is present.
    Present,
    /// The key is present with an equal value (RabbitMQ's `=:=` on decoded values).
    Equal(FieldValue),
}

/// Parsed binding arguments, built once at bind time.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadersBinding {
    x_match: XMatch,
    /// The arguments that take part, in table order (duplicates kept).
    args: Vec<(ShortStr, Expect)>,
}

impl HeadersBinding {
    /// Err(text) for an invalid x-match value: RabbitMQ refuses the bind with
    /// 406 PRECONDITION_FAILED and this reply text (without the `PRECONDITION_FAILED - `
    /// prefix, which the connection layer adds).
    pub fn parse(arguments: &FieldTable) -> Result<HeadersBinding, String> {
        let x_match = match arguments.get("x-match") {
            None => XMatch::All,
            Some(FieldValue::LongStr(s)) => match s.as_ref() {
                b"all" => XMatch::All,
                b"any" => XMatch::Any,
                b"all-with-x" => XMatch::AllWithX,
                b"any-with-x" => XMatch::AnyWithX,
                _ => {
                    return Err(format!(
                        "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
                        erlang_term(&FieldValue::LongStr(s.clone()))
                    ));
                }
            },
            Some(other) => {
                return Err(format!(
                    "Invalid x-match field type {} (value {}); expected longstr",
                    type_atom(other),
                    erlang_term(other)
                ));
            }
        };
        let with_x = matches!(x_match, XMatch::AllWithX | XMatch::AnyWithX);
        let args = arguments
            .iter()
            .filter(|(k, _)| {
                let k = k.as_bytes();
                k != b"x-match" && (with_x || !k.starts_with(b"x-"))
            })
            .map(|(k, v)| {
                let expect = match v {
                    FieldValue::Void => Expect::Present,
                    v => Expect::Equal(v.clone()),
                };
                (k.clone(), expect)
            })
            .collect();
        Ok(HeadersBinding { x_match, args })
    }

    /// The binding's mode.
    pub fn x_match(&self) -> XMatch {
        self.x_match
    }

    /// Whether a message with these `headers` (None: the property is absent) matches.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let arg_matches = |(key, expect): &(ShortStr, Expect)| {
            // The last of duplicate header keys wins, as in RabbitMQ's header map.
            let found = headers.and_then(|h| h.0.iter().rev().find(|(k, _)| k == key)).map(|(_, v)| v);
            match (expect, found) {
                (_, None) => false,
                (Expect::Present, Some(_)) => true,
                (Expect::Equal(want), Some(have)) => routing_eq(want, have),
            }
        };
        match self.x_match {
            XMatch::All | XMatch::AllWithX => self.args.iter().all(arg_matches),
            XMatch::Any | XMatch::AnyWithX => self.args.iter().any(arg_matches),
        }
    }
}

/// A top-level value as RabbitMQ compares it: the decoded Erlang term, types dropped.
enum Term<'a> {
    Int(i128),
    Float(f64),
    Binary(&'a [u8]),
    Bool(bool),
    Decimal(u8, u32),
    Undefined,
    /// A table or an array: an Erlang list whose elements carry their types.
    List(&'a FieldValue),
}

/// The term for a binding argument (`header` false) or a message header (`header` true: a
/// timestamp becomes milliseconds, as in `mc_amqpl:routing_value/2`).
fn term(v: &FieldValue, header: bool) -> Term<'_> {
    match v {
        FieldValue::Bool(b) => Term::Bool(*b),
        FieldValue::I8(x) => Term::Int((*x).into()),
        FieldValue::U8(x) => Term::Int((*x).into()),
        FieldValue::I16(x) => Term::Int((*x).into()),
        FieldValue::U16(x) => Term::Int((*x).into()),
        FieldValue::I32(x) => Term::Int((*x).into()),
        FieldValue::U32(x) => Term::Int((*x).into()),
        FieldValue::I64(x) => Term::Int((*x).into()),
        FieldValue::Timestamp(t) => Term::Int(i128::from(*t) * if header { 1000 } else { 1 }),
        FieldValue::F32(x) => Term::Float((*x).into()),
        FieldValue::F64(x) => Term::Float(*x),
        FieldValue::Decimal { scale, value } => Term::Decimal(*scale, *value),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => Term::Binary(b),
        FieldValue::Void => Term::Undefined,
        FieldValue::Table(_) | FieldValue::Array(_) => Term::List(v),
    }
}

/// Erlang `=:=` on floats (OTP 27+): numerically equal and the same sign of zero.
fn float_exact_eq(a: f64, b: f64) -> bool {
    a == b && a.is_sign_negative() == b.is_sign_negative()
}

/// RabbitMQ's comparison of a binding argument with a message header value.
fn routing_eq(binding: &FieldValue, header: &FieldValue) -> bool {
    match (term(binding, false), term(header, true)) {
        (Term::Int(a), Term::Int(b)) => a == b,
        (Term::Float(a), Term::Float(b)) => float_exact_eq(a, b),
        (Term::Binary(a), Term::Binary(b)) => a == b,
        (Term::Bool(a), Term::Bool(b)) => a == b,
        (Term::Decimal(s1, v1), Term::Decimal(s2, v2)) => s1 == s2 && v1 == v2,
        (Term::Undefined, Term::Undefined) => true,
        (Term::List(a), Term::List(b)) => list_eq(a, b),
        _ => false,
    }
}

/// Two tables/arrays as Erlang lists: `[]` for either when empty; otherwise same kind and
/// element-wise typed equality.
fn list_eq(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::Table(x), FieldValue::Array(y)) => x.is_empty() && y.is_empty(),
        (FieldValue::Array(x), FieldValue::Table(y)) => x.is_empty() && y.is_empty(),
        _ => typed_eq(a, b),
    }
}

/// Exact equality of nested values, types included (`{Type, Value}` in RabbitMQ), walked
/// with an explicit stack.
fn typed_eq(a: &FieldValue, b: &FieldValue) -> bool {
    let mut stack = vec![(a, b)];
    while let Some((a, b)) = stack.pop() {
        let same = match (a, b) {
            (FieldValue::F32(x), FieldValue::F32(y)) => float_exact_eq((*x).into(), (*y).into()),
            (FieldValue::F64(x), FieldValue::F64(y)) => float_exact_eq(*x, *y),
            (FieldValue::Table(x), FieldValue::Table(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                for ((kx, vx), (ky, vy)) in x.iter().zip(y.iter()) {
                    if kx != ky {
                        return false;
                    }
                    stack.push((vx, vy));
                }
                true
            }
            (FieldValue::Array(x), FieldValue::Array(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                stack.extend(x.iter().zip(y.iter()));
                true
            }
            (FieldValue::Table(_) | FieldValue::Array(_), _) | (_, FieldValue::Table(_) | FieldValue::Array(_)) => {
                false
            }
            // Scalars other than floats: same variant (type) and same value.
            (a, b) => a == b,
        };
        if !same {
            return false;
        }
    }
    true
}

use crate::args::type_name as type_atom;

/// A value printed the way Erlang's `~tp` prints RabbitMQ's decoded form of it, for reply
/// texts. Close to, not byte-identical with, Erlang in corner cases (line wrapping of long
/// terms, latin-1 binaries that are not UTF-8, float notation).
fn erlang_term(v: &FieldValue) -> String {
    enum Tok<'a> {
        Value(&'a FieldValue),
        /// A table entry: `{<<"key">>,type,Value}`.
        Entry(&'a ShortStr, &'a FieldValue),
        /// An array element: `{type,Value}`.
        Element(&'a FieldValue),
        Text(&'static str),
    }
    let mut out = String::new();
    let mut stack = vec![Tok::Value(v)];
    while let Some(tok) = stack.pop() {
        match tok {
            Tok::Text(s) => out.push_str(s),
            Tok::Entry(k, v) => {
                out.push('{');
                erlang_binary(&mut out, k.as_bytes());
                let _ = write!(out, ",{},", type_atom(v));
                stack.push(Tok::Text("}"));
                stack.push(Tok::Value(v));
            }
            Tok::Element(v) => {
                let _ = write!(out, "{{{},", type_atom(v));
                stack.push(Tok::Text("}"));
                stack.push(Tok::Value(v));
            }
            Tok::Value(v) => match v {
                FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                FieldValue::I8(x) => out.push_str(&x.to_string()),
                FieldValue::U8(x) => out.push_str(&x.to_string()),
                FieldValue::I16(x) => out.push_str(&x.to_string()),
                FieldValue::U16(x) => out.push_str(&x.to_string()),
                FieldValue::I32(x) => out.push_str(&x.to_string()),
                FieldValue::U32(x) => out.push_str(&x.to_string()),
                FieldValue::I64(x) => out.push_str(&x.to_string()),
                FieldValue::Timestamp(x) => out.push_str(&x.to_string()),
                FieldValue::F32(x) => erlang_float(&mut out, (*x).into()),
                FieldValue::F64(x) => erlang_float(&mut out, *x),
                FieldValue::Decimal { scale, value } => {
                    let _ = write!(out, "{{{scale},{value}}}");
                }
                FieldValue::LongStr(b) | FieldValue::Bytes(b) => erlang_binary(&mut out, b),
                FieldValue::Void => out.push_str("undefined"),
                FieldValue::Table(t) => {
                    out.push('[');
                    stack.push(Tok::Text("]"));
                    for (i, (k, v)) in t.0.iter().enumerate().rev() {
                        stack.push(Tok::Entry(k, v));
                        if i > 0 {
                            stack.push(Tok::Text(","));
                        }
                    }
                }
                FieldValue::Array(a) => {
                    out.push('[');
                    stack.push(Tok::Text("]"));
                    for (i, v) in a.iter().enumerate().rev() {
                        stack.push(Tok::Element(v));
                        if i > 0 {
                            stack.push(Tok::Text(","));
                        }
                    }
                }
            },
        }
    }
    out
}

/// `<<"text">>`, `<<"tëxt"/utf8>>` or `<<1,2,3>>`, as `~tp` prints a binary.
fn erlang_binary(out: &mut String, b: &[u8]) {
    fn printable(c: char) -> bool {
        matches!(c, ' '..='~' | '\n' | '\r' | '\t' | '\x0B' | '\x08' | '\x0C' | '\x1B') || c >= '\u{A0}'
    }
    match std::str::from_utf8(b) {
        Ok(s) if !s.is_empty() && s.chars().all(printable) => {
            out.push_str("<<\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\x0B' => out.push_str("\\v"),
                    '\x08' => out.push_str("\\b"),
                    '\x0C' => out.push_str("\\f"),
                    '\x1B' => out.push_str("\\e"),
                    c => out.push(c),
                }
            }
            out.push('"');
            if !s.is_ascii() {
                out.push_str("/utf8");
            }
            out.push_str(">>");
        }
        _ => {
            out.push_str("<<");
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{byte}");
            }
            out.push_str(">>");
        }
    }
}

/// Shortest round-trip digits with a `.0` where Erlang insists on one (`1.0`, `1.0e20`).
fn erlang_float(out: &mut String, x: f64) {
    let s = format!("{x:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) if !mantissa.contains('.') => {
            let _ = write!(out, "{mantissa}.0e{exp}");
        }
        _ => out.push_str(&s),
    }
}

/// A message's `headers` property as routing receives it: decoded already (the general publish
/// path), still raw (the borrowed publish path, which walked and checked it: it is decoded only
/// if a headers exchange is on the route), or absent.
#[derive(Debug, Clone, Copy, Default)]
pub enum MessageHeaders<'a> {
    #[default]
    None,
    Decoded(&'a FieldTable),
    /// A well-formed table, length prefix included.
    Raw(&'a [u8]),
}

impl<'a> From<Option<&'a FieldTable>> for MessageHeaders<'a> {
    fn from(headers: Option<&'a FieldTable>) -> MessageHeaders<'a> {
        headers.map_or(MessageHeaders::None, MessageHeaders::Decoded)
    }
}

impl<'a> MessageHeaders<'a> {
    /// The table, decoded into `decoded` on first use if it is raw (a table that does not
    /// decode counts as no headers; the publish view lets only well-formed ones through).
    pub fn table(self, decoded: &'a std::cell::OnceCell<Option<FieldTable>>) -> Option<&'a FieldTable> {
        match self {
            MessageHeaders::None => None,
            MessageHeaders::Decoded(table) => Some(table),
            MessageHeaders::Raw(raw) => decoded
                .get_or_init(|| {
                    let mut d = lepus_protocol::Decoder::new(bytes::Bytes::copy_from_slice(raw), "headers");
                    let table = lepus_protocol::table::decode_table(&mut d);
                    debug_assert!(table.is_ok(), "the publish view passed a table that does not decode");
                    table.ok()
                })
                .as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn s(v: &str) -> FieldValue {
        FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn x(v: &[u8]) -> FieldValue {
        FieldValue::Bytes(Bytes::copy_from_slice(v))
    }

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        FieldTable(entries.iter().map(|(k, v)| (ShortStr::try_from(*k).expect("short key"), v.clone())).collect())
    }

    fn binding(entries: &[(&str, FieldValue)]) -> HeadersBinding {
        HeadersBinding::parse(&table(entries)).expect("valid binding")
    }

    #[test]
    fn x_match_parsing() {
        let cases: &[(&[(&str, FieldValue)], XMatch)] = &[
            (&[], XMatch::All),
            (&[("a", s("1"))], XMatch::All),
            (&[("x-match", s("all"))], XMatch::All),
            (&[("x-match", s("any"))], XMatch::Any),
            (&[("x-match", s("all-with-x"))], XMatch::AllWithX),
            (&[("x-match", s("any-with-x"))], XMatch::AnyWithX),
            // The first x-match counts.
            (&[("x-match", s("any")), ("x-match", s("bogus"))], XMatch::Any),
        ];
        for (args, want) in cases {
            assert_eq!(binding(args).x_match(), *want, "{args:?}");
        }
    }

    #[test]
    fn invalid_x_match() {
        let cases: &[(FieldValue, &str)] = &[
            (s("ALL"), "Invalid x-match field value <<\"ALL\">>; expected all, any, all-with-x, or any-with-x"),
            (s(""), "Invalid x-match field value <<>>; expected all, any, all-with-x, or any-with-x"),
            (s("all "), "Invalid x-match field value <<\"all \">>; expected all, any, all-with-x, or any-with-x"),
            (s("a\"b"), "Invalid x-match field value <<\"a\\\"b\">>; expected all, any, all-with-x, or any-with-x"),
            (s("née"), "Invalid x-match field value <<\"née\"/utf8>>; expected all, any, all-with-x, or any-with-x"),
            (
                FieldValue::LongStr(Bytes::from_static(b"\x00\xff")),
                "Invalid x-match field value <<0,255>>; expected all, any, all-with-x, or any-with-x",
            ),
            (x(b"all"), "Invalid x-match field type binary (value <<\"all\">>); expected longstr"),
            (FieldValue::I32(1), "Invalid x-match field type signedint (value 1); expected longstr"),
            (FieldValue::I64(-7), "Invalid x-match field type long (value -7); expected longstr"),
            (FieldValue::U8(3), "Invalid x-match field type unsignedbyte (value 3); expected longstr"),
            (FieldValue::Bool(true), "Invalid x-match field type bool (value true); expected longstr"),
            (FieldValue::F64(1.5), "Invalid x-match field type double (value 1.5); expected longstr"),
            (FieldValue::F64(1e20), "Invalid x-match field type double (value 1.0e20); expected longstr"),
            (FieldValue::Void, "Invalid x-match field type void (value undefined); expected longstr"),
            (
                FieldValue::Decimal { scale: 2, value: 150 },
                "Invalid x-match field type decimal (value {2,150}); expected longstr",
            ),
            (FieldValue::Timestamp(9), "Invalid x-match field type timestamp (value 9); expected longstr"),
            (
                FieldValue::Table(table(&[("k", s("all")), ("n", FieldValue::I16(2))])),
                "Invalid x-match field type table (value [{<<\"k\">>,longstr,<<\"all\">>},{<<\"n\">>,short,2}]); \
                 expected longstr",
            ),
            (
                FieldValue::Array(vec![s("all"), FieldValue::Array(vec![])]),
                "Invalid x-match field type array (value [{longstr,<<\"all\">>},{array,[]}]); expected longstr",
            ),
        ];
        for (value, want) in cases {
            let args = table(&[("a", s("1")), ("x-match", value.clone())]);
            assert_eq!(HeadersBinding::parse(&args), Err(want.to_string()), "{value:?}");
        }
    }

    type Entries = Vec<(&'static str, FieldValue)>;

    #[test]
    fn modes_and_x_arguments() {
        use FieldValue::{I32, Void};
        // (binding arguments, message headers (None: no headers property), matches?)
        let cases: Vec<(Entries, Option<Entries>, bool)> = vec![
            // all, no participating arguments: everything matches, even no headers.
            (vec![], None, true),
            (vec![], Some(vec![]), true),
            (vec![("x-match", s("all"))], Some(vec![("a", I32(1))]), true),
            (vec![("x-match", s("all")), ("x-foo", s("bar"))], None, true),
            // any, no participating arguments: nothing matches.
            (vec![("x-match", s("any"))], None, false),
            (vec![("x-match", s("any"))], Some(vec![("a", I32(1))]), false),
            (vec![("x-match", s("any")), ("x-foo", s("bar"))], Some(vec![("x-foo", s("bar"))]), false),
            (vec![("x-match", s("any-with-x"))], Some(vec![("x-match", s("any-with-x"))]), false),
            (vec![("x-match", s("all-with-x"))], None, true),
            // all
            (vec![("a", I32(1)), ("b", s("x"))], Some(vec![("b", s("x")), ("a", I32(1))]), true),
            (vec![("a", I32(1)), ("b", s("x"))], Some(vec![("a", I32(1))]), false),
            (vec![("a", I32(1)), ("b", s("x"))], Some(vec![("a", I32(1)), ("b", s("y"))]), false),
            (vec![("a", I32(1))], Some(vec![("a", I32(1)), ("extra", I32(2))]), true),
            (vec![("a", I32(1))], None, false),
            (vec![("a", I32(1))], Some(vec![]), false),
            // any
            (vec![("x-match", s("any")), ("a", I32(1)), ("b", I32(2))], Some(vec![("b", I32(2))]), true),
            (vec![("x-match", s("any")), ("a", I32(1)), ("b", I32(2))], Some(vec![("b", I32(3))]), false),
            (vec![("x-match", s("any")), ("a", I32(1))], None, false),
            // x- arguments are ignored unless *-with-x
            (vec![("a", I32(1)), ("x-b", I32(2))], Some(vec![("a", I32(1))]), true),
            (vec![("x-match", s("all-with-x")), ("a", I32(1)), ("x-b", I32(2))], Some(vec![("a", I32(1))]), false),
            (
                vec![("x-match", s("all-with-x")), ("a", I32(1)), ("x-b", I32(2))],
                Some(vec![("a", I32(1)), ("x-b", I32(2))]),
                true,
            ),
            (vec![("x-match", s("any")), ("x-b", I32(2))], Some(vec![("x-b", I32(2))]), false),
            (vec![("x-match", s("any-with-x")), ("x-b", I32(2))], Some(vec![("x-b", I32(2))]), true),
            (vec![("x-match", s("any-with-x")), ("x-b", Void)], Some(vec![("x-b", s("?"))]), true),
            // x-match in the headers never takes part
            (vec![("x-match", s("all-with-x"))], Some(vec![("x-match", s("other"))]), true),
            // "x-" exactly and "x" prefixes
            (vec![("x-", I32(1))], None, true),
            (vec![("x", I32(1))], None, false),
            (vec![("X-a", I32(1))], None, false),
            // void: presence, whatever the value
            (vec![("a", Void)], Some(vec![("a", s("anything"))]), true),
            (vec![("a", Void)], Some(vec![("a", Void)]), true),
            (vec![("a", Void)], Some(vec![("b", Void)]), false),
            (vec![("a", Void)], None, false),
            (vec![("x-match", s("any")), ("a", Void), ("b", I32(1))], Some(vec![("a", I32(9))]), true),
            // a void header only matches a void argument
            (vec![("a", s("undefined"))], Some(vec![("a", Void)]), false),
            // duplicate binding arguments are each checked
            (vec![("a", I32(1)), ("a", I32(2))], Some(vec![("a", I32(1))]), false),
            (vec![("x-match", s("any")), ("a", I32(1)), ("a", I32(2))], Some(vec![("a", I32(2))]), true),
            // duplicate header keys: the last counts
            (vec![("a", I32(1))], Some(vec![("a", I32(1)), ("a", I32(2))]), false),
            (vec![("a", I32(2))], Some(vec![("a", I32(1)), ("a", I32(2))]), true),
            // keys are case-sensitive bytes
            (vec![("A", I32(1))], Some(vec![("a", I32(1))]), false),
        ];
        for (i, (args, headers, want)) in cases.iter().enumerate() {
            let b = binding(args);
            let h = headers.as_ref().map(|h| table(h));
            assert_eq!(b.matches(h.as_ref()), *want, "case {i}: binding {args:?} headers {headers:?}");
        }
    }

    #[test]
    fn value_equality() {
        use FieldValue::*;
        let dec = |scale, value| Decimal { scale, value };
        // (binding value, header value, equal?)
        let cases: Vec<(FieldValue, FieldValue, bool)> = vec![
            // integers compare by value whatever the width or signedness
            (I32(1), I64(1), true),
            (I64(1), I32(1), true),
            (I8(-1), I64(-1), true),
            (U8(255), I16(255), true),
            (U16(65535), U32(65535), true),
            (U32(4_000_000_000), I64(4_000_000_000), true),
            (I8(-1), U8(255), false),
            (I32(1), I32(2), false),
            // integers never equal floats (=:=)
            (I32(1), F64(1.0), false),
            (F64(1.0), I64(1), false),
            // floats compare as doubles
            (F32(0.5), F64(0.5), true),
            (F64(0.5), F32(0.5), true),
            (F32(0.1), F64(0.1), false),
            (F64(0.1), F64(0.1), true),
            (F64(0.0), F64(-0.0), false),
            (F64(f64::NAN), F64(f64::NAN), false),
            (F64(f64::INFINITY), F64(f64::INFINITY), true),
            // strings: S and x are both binaries
            (s("abc"), s("abc"), true),
            (s("abc"), x(b"abc"), true),
            (x(b"abc"), s("abc"), true),
            (s("abc"), s("abd"), false),
            (s(""), x(b""), true),
            (s("1"), I32(1), false),
            (s("true"), Bool(true), false),
            // booleans are atoms
            (Bool(true), Bool(true), true),
            (Bool(true), Bool(false), false),
            (Bool(true), I8(1), false),
            (Bool(false), I32(0), false),
            // decimals compare as (scale, value)
            (dec(2, 150), dec(2, 150), true),
            (dec(1, 10), dec(0, 1), false),
            (dec(0, 1), I32(1), false),
            // header timestamps become milliseconds; binding ones do not
            (Timestamp(5), Timestamp(5), false),
            (Timestamp(0), Timestamp(0), true),
            (Timestamp(5000), Timestamp(5), true),
            (I64(5000), Timestamp(5), true),
            (Timestamp(5), I64(5), true),
            (Timestamp(5), I64(5000), false),
            (Timestamp(u64::MAX), Timestamp(u64::MAX), false),
            // tables and arrays: whole and typed
            (Table(table(&[("k", I32(1))])), Table(table(&[("k", I32(1))])), true),
            (Table(table(&[("k", I32(1))])), Table(table(&[("k", I64(1))])), false),
            (Table(table(&[("k", s("v"))])), Table(table(&[("k", x(b"v"))])), false),
            (Table(table(&[("a", I32(1)), ("b", I32(2))])), Table(table(&[("b", I32(2)), ("a", I32(1))])), false),
            (Table(table(&[("k", I32(1))])), Table(table(&[("k", I32(1)), ("l", Void)])), false),
            (Table(table(&[("k", Timestamp(5))])), Table(table(&[("k", Timestamp(5))])), true),
            (Table(table(&[("k", F32(0.5))])), Table(table(&[("k", F64(0.5))])), false),
            (Table(table(&[("k", F64(0.0))])), Table(table(&[("k", F64(-0.0))])), false),
            (Array(vec![I32(1), s("a")]), Array(vec![I32(1), s("a")]), true),
            (Array(vec![I32(1)]), Array(vec![I64(1)]), false),
            (Array(vec![I32(1)]), Array(vec![I32(1), I32(1)]), false),
            (
                Array(vec![Array(vec![Table(table(&[("d", dec(1, 2))]))])]),
                Array(vec![Array(vec![Table(table(&[("d", dec(1, 2))]))])]),
                true,
            ),
            (
                Array(vec![Array(vec![Table(table(&[("d", dec(1, 2))]))])]),
                Array(vec![Array(vec![Table(table(&[("d", dec(1, 3))]))])]),
                false,
            ),
            // top level: an empty table is an empty array; nested, they differ by type
            (Table(FieldTable::new()), Array(vec![]), true),
            (Array(vec![]), Table(FieldTable::new()), true),
            (Array(vec![Array(vec![])]), Array(vec![Table(FieldTable::new())]), false),
            (Array(vec![I32(1)]), Table(table(&[("k", I32(1))])), false),
            (Array(vec![]), s(""), false),
            (Table(FieldTable::new()), Void, false),
        ];
        for (i, (want, have, equal)) in cases.iter().enumerate() {
            let b = binding(&[("k", want.clone())]);
            let h = table(&[("k", have.clone())]);
            assert_eq!(b.matches(Some(&h)), *equal, "case {i}: binding {want:?} header {have:?}");
        }
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let mut a = FieldValue::I32(1);
        let mut b = FieldValue::I32(1);
        for _ in 0..10_000 {
            a = FieldValue::Array(vec![a]);
            b = FieldValue::Array(vec![b]);
        }
        assert!(typed_eq(&a, &b));
        assert!(routing_eq(&a, &b));
        let text = erlang_term(&a);
        assert!(text.starts_with("[{array,[{array,"));
        assert!(text.ends_with(&format!("[{{signedint,1}}]{}", "}]".repeat(9_999))));
        let two = FieldValue::Array(vec![FieldValue::Array(vec![FieldValue::I32(1)])]);
        assert_eq!(erlang_term(&two), "[{array,[{signedint,1}]}]");
        // Dropping 10,000 nested Vecs recursively is the protocol crate's concern; unwind
        // them here without deep drops.
        for v in [a, b] {
            let mut v = v;
            while let FieldValue::Array(mut items) = v {
                v = items.pop().unwrap_or(FieldValue::Void);
            }
        }
    }
}
