//! Replays every file in `tests/corpus/` through the fuzz target's exact decode loop
//! (`common::fuzz_one`, also what `fuzz/fuzz_targets/frames.rs` runs), so inputs that once
//! crashed the fuzzer stay fixed. Hand-made seeds are checked for their expected outcome too.

mod common;

use std::path::PathBuf;

use lepus_protocol::ProtocolError;
use lepus_protocol::constants::TABLE_DEPTH_MAX;

use common::{Outcome, fuzz_one};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, data)
        })
        .collect();
    files.sort();
    files
}

fn outcome(name: &str) -> [Outcome; 2] {
    let (_, data) = corpus().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} missing"));
    fuzz_one(&data)
}

#[test]
fn every_corpus_file_replays_without_panicking() {
    let files = corpus();
    assert!(files.len() >= 5, "the corpus has its seeds");
    for (name, data) in &files {
        let [small, min] = fuzz_one(data);
        assert!(small.leftover <= data.len() && min.leftover <= data.len(), "{name}");
    }
}

#[test]
fn seed_publish_header_body() {
    let [o, min] = outcome("publish_header_body.bin");
    assert_eq!((o.methods, o.headers, o.bodies, o.heartbeats), (1, 1, 2, 1));
    assert_eq!(o.error, None);
    assert!(o.decode_errors.is_empty(), "{:?}", o.decode_errors);
    assert_eq!(o.leftover, 0);
    assert_eq!(min, o, "every frame fits 4096");
}

#[test]
fn seed_handshake_and_acks() {
    let [o, _] = outcome("handshake_and_acks.bin");
    assert_eq!((o.frames, o.methods), (8, 8));
    assert!(o.decode_errors.is_empty(), "{:?}", o.decode_errors);
    assert_eq!((o.error, o.leftover), (None, 0));
}

#[test]
fn seed_deep_tables() {
    for name in ["queue_declare_table_1500_deep.bin", "content_header_headers_1500_deep.bin"] {
        let [o, min] = outcome(name);
        assert_eq!(o.frames, 1, "{name}");
        assert_eq!(o.decode_errors, [ProtocolError::TableTooDeep(TABLE_DEPTH_MAX)], "{name}");
        assert!(matches!(min.error, Some(ProtocolError::FrameTooLarge { frame_max: 4096, .. })), "{name}");
    }
}

#[test]
fn seed_frame_too_large() {
    let [o, _] = outcome("frame_too_large_header_only.bin");
    assert_eq!(
        o.error,
        Some(ProtocolError::FrameTooLarge { size: 0x7fff_ffff + 8, frame_max: common::FUZZ_FRAME_MAX })
    );
    assert_eq!(o.frames, 0);
}
