//! Feeds arbitrary bytes to the frame parser as a peer's read buffer and decodes every frame's
//! payload as a method, a content header and a property list, checking the invariants in
//! `crates/protocol/tests/common/mod.rs`. That module is shared with the corpus regression
//! test (`crates/protocol/tests/corpus.rs`), so an input saved under
//! `crates/protocol/tests/corpus/` replays exactly this code in `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/protocol/tests/common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = common::fuzz_one(data);
});
