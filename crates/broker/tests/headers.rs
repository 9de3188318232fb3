//! Headers-exchange matching through the public API: tables decoded from wire bytes (so the
//! field types are the ones clients send), and property tests of the `x-match` modes.

use bytes::Bytes;
use lepus_broker::headers::{HeadersBinding, XMatch};
use lepus_protocol::codec::Decoder;
use lepus_protocol::table::{FieldTable, FieldValue, decode_table};
use lepus_protocol::types::ShortStr;
use proptest::prelude::*;

/// Builds the wire form of a field table from `(key, type tag, value bytes)` entries.
fn wire_table(entries: &[(&str, u8, &[u8])]) -> FieldTable {
    let mut body = Vec::new();
    for (k, tag, v) in entries {
        body.push(k.len() as u8);
        body.extend_from_slice(k.as_bytes());
        body.push(*tag);
        body.extend_from_slice(v);
    }
    let mut buf = (body.len() as u32).to_be_bytes().to_vec();
    buf.extend_from_slice(&body);
    decode_table(&mut Decoder::new(Bytes::from(buf), "test table")).expect("valid table")
}

fn longstr(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

#[test]
fn wire_decoded_tables() {
    let any = longstr("any");
    let all = longstr("all");
    let s_blue = longstr("blue");
    // Binding: x-match=any, colour (S) "blue", size (I) 1, x-ignored (S) "blue".
    let args = wire_table(&[
        ("x-match", b'S', &any),
        ("colour", b'S', &s_blue),
        ("size", b'I', &1i32.to_be_bytes()),
        ("x-ignored", b'S', &s_blue),
    ]);
    let b = HeadersBinding::parse(&args).expect("valid");
    assert_eq!(b.x_match(), XMatch::Any);
    // colour sent as a byte array ('x') still matches the longstr.
    assert!(b.matches(Some(&wire_table(&[("colour", b'x', &s_blue)]))));
    // size sent as a 64-bit long 1 matches the 32-bit 1.
    assert!(b.matches(Some(&wire_table(&[("size", b'l', &1i64.to_be_bytes())]))));
    // ... and as an unsigned byte.
    assert!(b.matches(Some(&wire_table(&[("size", b'B', &[1])]))));
    // ... but not as a double 1.0.
    assert!(!b.matches(Some(&wire_table(&[("size", b'd', &1f64.to_be_bytes())]))));
    // x- arguments are ignored under `any`.
    assert!(!b.matches(Some(&wire_table(&[("x-ignored", b'S', &s_blue)]))));
    assert!(!b.matches(None));

    // Binding: x-match=all, present (V), n (s) -2.
    let args = wire_table(&[("present", b'V', &[]), ("x-match", b'S', &all), ("n", b's', &(-2i16).to_be_bytes())]);
    let b = HeadersBinding::parse(&args).expect("valid");
    assert_eq!(b.x_match(), XMatch::All);
    let both = wire_table(&[("n", b'b', &[0xFE]), ("present", b't', &[0])]);
    assert!(b.matches(Some(&both)));
    let only_n = wire_table(&[("n", b'l', &(-2i64).to_be_bytes())]);
    assert!(!b.matches(Some(&only_n)));

    // An x-match sent as 'x' bytes is refused with RabbitMQ's text.
    let args = wire_table(&[("x-match", b'x', &all)]);
    assert_eq!(
        HeadersBinding::parse(&args),
        Err("Invalid x-match field type binary (value <<\"all\">>); expected longstr".to_string())
    );
    let bogus = longstr("some");
    let args = wire_table(&[("x-match", b'S', &bogus)]);
    assert_eq!(
        HeadersBinding::parse(&args),
        Err("Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x".to_string())
    );
}

fn key() -> impl Strategy<Value = ShortStr> {
    // Never starts with "x-" (w is the last letter used).
    "[a-w][a-z0-9-]{0,6}".prop_map(|k| ShortStr::try_from(k).expect("short"))
}

fn x_key() -> impl Strategy<Value = ShortStr> {
    "x-[a-z]{1,6}".prop_filter("not x-match", |k| k != "x-match").prop_map(|k| ShortStr::try_from(k).expect("short"))
}

/// Values that equal themselves under RabbitMQ's comparison: no timestamps (a header's is
/// scaled to milliseconds), no NaN.
fn value() -> impl Strategy<Value = FieldValue> {
    let scalar = prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        any::<f32>().prop_filter("not NaN", |f| !f.is_nan()).prop_map(FieldValue::F32),
        any::<f64>().prop_filter("not NaN", |f| !f.is_nan()).prop_map(FieldValue::F64),
        (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
        "[a-z]{0,8}".prop_map(|s| FieldValue::LongStr(Bytes::from(s))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| FieldValue::Bytes(Bytes::from(b))),
        Just(FieldValue::Void),
    ];
    scalar.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(FieldValue::Array),
            prop::collection::vec((key(), inner), 0..4).prop_map(|e| FieldValue::Table(FieldTable(e))),
        ]
    })
}

/// A table with distinct keys.
fn table(keys: impl Strategy<Value = ShortStr>, max: usize) -> impl Strategy<Value = FieldTable> {
    prop::collection::btree_map(keys, value(), 0..max).prop_map(|m| FieldTable(m.into_iter().collect()))
}

fn with_x_match(mode: &'static str, mut args: FieldTable) -> FieldTable {
    args.0.insert(0, (ShortStr::from_static("x-match"), FieldValue::from(mode)));
    args
}

fn shuffled(t: &FieldTable, seed: usize) -> FieldTable {
    let mut entries = t.0.clone();
    if !entries.is_empty() {
        let n = entries.len();
        entries.rotate_left(seed % n);
    }
    FieldTable(entries)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `all`: the arguments themselves, in any order and among other headers, match; losing
    /// any one argument does not.
    #[test]
    fn all_matches_its_own_arguments(args in table(key(), 6), extra in table(key(), 4), seed in any::<usize>()) {
        let b = HeadersBinding::parse(&with_x_match("all", args.clone())).expect("valid");
        let mut headers = extra.clone();
        for (k, v) in args.iter() {
            headers.insert(k.clone(), v.clone());
        }
        prop_assert!(b.matches(Some(&shuffled(&headers, seed))));
        prop_assert_eq!(b.matches(None), args.is_empty());
        for (k, _) in args.iter() {
            let mut fewer = headers.clone();
            let _ = fewer.remove(k.as_str().expect("ascii key"));
            prop_assert!(!b.matches(Some(&fewer)));
        }
    }

    /// `any`: one argument suffices; no matching argument fails.
    #[test]
    fn any_needs_one(args in table(key(), 6), pick in any::<usize>()) {
        let b = HeadersBinding::parse(&with_x_match("any", args.clone())).expect("valid");
        prop_assert!(!b.matches(None));
        prop_assert!(!b.matches(Some(&FieldTable::new())));
        if !args.is_empty() {
            let (k, v) = &args.0[pick % args.len()];
            let one = FieldTable(vec![(k.clone(), v.clone())]);
            prop_assert!(b.matches(Some(&one)));
        }
    }

    /// `x-` arguments take no part in `all`/`any`, and do in `all-with-x`/`any-with-x`.
    #[test]
    fn x_arguments(args in table(key(), 4), xs in table(x_key(), 4)) {
        let mut both = args.clone();
        both.0.extend(xs.0.iter().cloned());
        // Headers with only the non-x arguments.
        let all = HeadersBinding::parse(&with_x_match("all", both.clone())).expect("valid");
        prop_assert!(all.matches(Some(&args)));
        let all_x = HeadersBinding::parse(&with_x_match("all-with-x", both.clone())).expect("valid");
        prop_assert_eq!(all_x.matches(Some(&args)), xs.is_empty());
        prop_assert!(all_x.matches(Some(&both)));
        // Headers with only the x- arguments.
        let any = HeadersBinding::parse(&with_x_match("any", both.clone())).expect("valid");
        prop_assert!(!any.matches(Some(&xs)));
        let any_x = HeadersBinding::parse(&with_x_match("any-with-x", both)).expect("valid");
        prop_assert_eq!(any_x.matches(Some(&xs)), !xs.is_empty());
    }

    /// Integer arguments match headers of every integer type holding the same number.
    #[test]
    fn integer_width_does_not_matter(v in any::<i16>()) {
        let b = HeadersBinding::parse(&FieldTable(vec![(ShortStr::from_static("n"), FieldValue::I16(v))])).expect("valid");
        let mut forms = vec![FieldValue::I32(v.into()), FieldValue::I64(v.into())];
        if let Ok(x) = i8::try_from(v) { forms.push(FieldValue::I8(x)); }
        if let Ok(x) = u8::try_from(v) { forms.push(FieldValue::U8(x)); }
        if let Ok(x) = u16::try_from(v) { forms.push(FieldValue::U16(x)); }
        if let Ok(x) = u32::try_from(v) { forms.push(FieldValue::U32(x)); }
        for f in forms {
            prop_assert!(b.matches(Some(&FieldTable(vec![(ShortStr::from_static("n"), f)]))));
        }
        prop_assert!(!b.matches(Some(&FieldTable(vec![(ShortStr::from_static("n"), FieldValue::F64(v.into()))]))));
        prop_assert!(!b.matches(Some(&FieldTable(vec![(ShortStr::from_static("n"), FieldValue::I64(i64::from(v) + 1))]))));
    }

    /// Header timestamps are compared in milliseconds (RabbitMQ's `routing_value/2`).
    #[test]
    fn header_timestamps_are_milliseconds(t in 0u64..1 << 40) {
        let header = FieldTable(vec![(ShortStr::from_static("t"), FieldValue::Timestamp(t))]);
        let ms = HeadersBinding::parse(&FieldTable(vec![(ShortStr::from_static("t"), FieldValue::I64((t * 1000) as i64))])).expect("valid");
        prop_assert!(ms.matches(Some(&header)));
        let same = HeadersBinding::parse(&FieldTable(vec![(ShortStr::from_static("t"), FieldValue::Timestamp(t))])).expect("valid");
        prop_assert_eq!(same.matches(Some(&header)), t == 0);
    }
}
