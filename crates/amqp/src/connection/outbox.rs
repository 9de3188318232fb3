//! A connection's pending output: encoded frames, and large message bodies by reference.
//!
//! Small frames are encoded into one growing buffer (the *tail*), so a batch of replies and
//! deliveries leaves in one `write`. A large body is not copied there: the tail so far is
//! sealed into a chunk, the body goes on the list as a reference to the queued message's
//! bytes, and the socket takes everything with one vectored write. For 64 KiB messages this
//! saves a copy of every byte the broker sends (S4 in BENCHMARKS.md).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use lepus_protocol::constants::{FRAME_BODY, FRAME_END, FRAME_OVERHEAD};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bodies at least this large are written by reference; smaller ones are cheaper to copy
/// than to give their own `iovec`.
pub(super) const BODY_BY_REFERENCE_MIN: usize = 8 * 1024;

/// Slices handed to one `writev` (the kernel's limit is 1,024).
const IOV_MAX: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Sealed {
    /// Chunks that go before the tail, oldest first.
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    len: usize,
}

impl Sealed {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Appends body frames for `body` to the output, the body itself by reference: every
    /// frame's header goes into `tail`, which is then sealed ahead of the body bytes.
    pub(super) fn write_body(&mut self, tail: &mut BytesMut, channel: u16, body: &Bytes, frame_max: u32) {
        let chunk_max = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
        let mut at = 0;
        while at < body.len() {
            let end = (at + chunk_max).min(body.len());
            tail.put_u8(FRAME_BODY);
            tail.put_u16(channel);
            tail.put_u32((end - at) as u32);
            self.push(tail.split().freeze());
            self.push(body.slice(at..end));
            tail.put_u8(FRAME_END);
            at = end;
        }
    }

    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Writes sealed chunks and then `tail` with one vectored write; returns the bytes taken.
    pub(super) async fn write_to(&self, wr: &mut (impl AsyncWrite + Unpin), tail: &BytesMut) -> std::io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); IOV_MAX];
        let mut n = 0;
        for chunk in self.chunks.iter().take(IOV_MAX - 1) {
            slices[n] = IoSlice::new(chunk);
            n += 1;
        }
        if n < IOV_MAX && n == self.chunks.len() && !tail.is_empty() {
            slices[n] = IoSlice::new(tail);
            n += 1;
        }
        wr.write_vectored(&slices[..n]).await
    }

    /// Drops `written` bytes from the front of the output (sealed chunks, then `tail`).
    pub(super) fn consume(&mut self, tail: &mut BytesMut, mut written: usize) {
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                tail.advance(written.min(tail.len()));
                return;
            };
            let n = written.min(front.len());
            front.advance(n);
            self.len -= n;
            written -= n;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepus_protocol::frame::write_body;

    /// Everything pending, in the order the socket would get it.
    fn pending(sealed: &Sealed, tail: &BytesMut) -> Vec<u8> {
        let mut all: Vec<u8> = sealed.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        all.extend_from_slice(tail);
        all
    }

    #[test]
    fn bodies_by_reference_encode_like_copied_bodies() {
        for (size, frame_max) in
            [(0usize, 4096u32), (1, 4096), (4088, 4096), (4089, 4096), (20_000, 4096), (70_000, 131_072)]
        {
            let body = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            let mut expected = BytesMut::from(&b"before"[..]);
            write_body(&mut expected, 7, &body, frame_max);
            expected.extend_from_slice(b"after");

            let mut sealed = Sealed::default();
            let mut tail = BytesMut::from(&b"before"[..]);
            sealed.write_body(&mut tail, 7, &body, frame_max);
            tail.extend_from_slice(b"after");
            assert_eq!(pending(&sealed, &tail), &expected[..], "size {size}");
            assert_eq!(sealed.len() + tail.len(), expected.len());
        }
    }

    #[test]
    fn partial_writes_consume_in_order() {
        let body = Bytes::from((0..50_000).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
        let mut sealed = Sealed::default();
        let mut tail = BytesMut::from(&b"head"[..]);
        sealed.write_body(&mut tail, 1, &body, 16_384);
        tail.extend_from_slice(b"middle");
        sealed.write_body(&mut tail, 2, &body, 16_384);
        tail.extend_from_slice(b"end");
        let all = pending(&sealed, &tail);
        let mut taken = 0;
        for step in [1usize, 3, 4_000, 16_390, 7, 1, 30_000, 50_000, 100_000] {
            let n = step.min(all.len() - taken);
            sealed.consume(&mut tail, n);
            taken += n;
            assert_eq!(pending(&sealed, &tail), &all[taken..], "after {taken} bytes");
            assert_eq!(sealed.len() + tail.len(), all.len() - taken);
        }
        assert!(sealed.is_empty() && tail.is_empty());
    }
}
