//! Frames: splitting a read buffer into frames, and writing frames into an output buffer.
//!
//! [`parse_frame`] checks the 7-byte header before anything else: the type must be known and
//! the size must fit the negotiated `frame_max`, so a peer cannot make us buffer more than one
//! `frame_max` by announcing a huge frame. A frame's payload is split off the read buffer
//! without copying.

use bytes::{BufMut, Bytes, BytesMut};

use crate::constants::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEADER_SIZE, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};
use crate::content::ContentHeader;
use crate::error::{ProtocolError, Result};
use crate::method::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Method,
    Header,
    Body,
    Heartbeat,
}

impl FrameType {
    pub fn from_octet(octet: u8) -> Result<FrameType> {
        match octet {
            FRAME_METHOD => Ok(FrameType::Method),
            FRAME_HEADER => Ok(FrameType::Header),
            FRAME_BODY => Ok(FrameType::Body),
            FRAME_HEARTBEAT => Ok(FrameType::Heartbeat),
            other => Err(ProtocolError::UnknownFrameType(other)),
        }
    }
}

/// One frame, its payload a zero-copy slice of the read buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub frame_type: FrameType,
    pub channel: u16,
    pub payload: Bytes,
}

/// Splits the next complete frame off `buf`.
///
/// `Ok(None)`: more bytes are needed (and `buf` has room reserved for the rest of the frame).
/// `frame_max` counts the whole frame, header and end octet included, as in `connection.tune`.
pub fn parse_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>> {
    if buf.len() < FRAME_HEADER_SIZE {
        return Ok(None);
    }
    let frame_type = FrameType::from_octet(buf[0])?;
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = size as u64 + FRAME_OVERHEAD as u64;
    if total > frame_max as u64 {
        return Err(ProtocolError::FrameTooLarge { size: total, frame_max });
    }
    let total = total as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let end = buf[total - 1];
    if end != FRAME_END {
        return Err(ProtocolError::BadFrameEnd(end));
    }
    let mut frame = buf.split_to(total);
    frame.truncate(total - 1);
    let payload = frame.freeze().slice(FRAME_HEADER_SIZE..);
    Ok(Some(Frame { frame_type, channel, payload }))
}

/// Writes a frame header with a placeholder size; returns where the size goes.
fn begin(out: &mut BytesMut, frame_type: u8, channel: u16) -> usize {
    out.put_u8(frame_type);
    out.put_u16(channel);
    out.put_u32(0);
    out.len() - 4
}

/// Patches the size written by [`begin`] and appends the end octet.
fn finish(out: &mut BytesMut, size_pos: usize) {
    let size = (out.len() - size_pos - 4) as u32;
    out[size_pos..size_pos + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Appends a method frame.
pub fn write_method(out: &mut BytesMut, channel: u16, method: &Method) {
    let pos = begin(out, FRAME_METHOD, channel);
    method.encode_payload(out);
    finish(out, pos);
}

/// Appends a content header frame carrying `raw_properties` (flags + property list) verbatim.
pub fn write_content_header(out: &mut BytesMut, channel: u16, body_size: u64, raw_properties: &[u8]) {
    let pos = begin(out, FRAME_HEADER, channel);
    ContentHeader::encode_payload(out, body_size, raw_properties);
    finish(out, pos);
}

/// Appends the body frames for `body`, each at most `frame_max` bytes including overhead.
pub fn write_body(out: &mut BytesMut, channel: u16, body: &[u8], frame_max: u32) {
    let chunk_max = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for chunk in body.chunks(chunk_max) {
        out.put_u8(FRAME_BODY);
        out.put_u16(channel);
        out.put_u32(chunk.len() as u32);
        out.extend_from_slice(chunk);
        out.put_u8(FRAME_END);
    }
}

/// Appends a heartbeat frame.
pub fn write_heartbeat(out: &mut BytesMut) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}
