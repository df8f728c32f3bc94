//! gRPC length-prefixed message framing: a 1-byte compression flag, a 4-byte
//! big-endian length, then the message. The decoder is incremental so bodies
//! stream through holding at most one message.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const HEADER_LEN: usize = 5;

/// One complete message as it arrived: the framed bytes (header included) so an
/// untouched message is forwarded without re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed(Bytes);

impl Framed {
    pub fn encode(message: &[u8]) -> Framed {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + message.len());
        buf.put_u8(0);
        buf.put_u32(message.len() as u32);
        buf.put_slice(message);
        Framed(buf.freeze())
    }

    /// The message without its header.
    pub fn message(&self) -> Bytes {
        self.0.slice(HEADER_LEN..)
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

/// A frame doltgate will not pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// Dolt never compresses messages, so doltgate does not decompress them.
    #[error("compressed gRPC messages are not supported")]
    Compressed,
    #[error("gRPC frame flag is neither 0 nor 1")]
    BadFlag,
}

/// Splits a byte stream into gRPC messages, refusing compressed or oversized ones.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_message: usize,
}

impl FrameDecoder {
    pub fn new(max_message: usize) -> Self {
        Self { buf: BytesMut::new(), max_message }
    }

    pub fn push(&mut self, mut data: impl Buf) {
        while data.has_remaining() {
            let chunk = data.chunk();
            self.buf.extend_from_slice(chunk);
            let n = chunk.len();
            data.advance(n);
        }
    }

    /// The next complete message, if the buffer holds one.
    pub fn next_message(&mut self) -> Result<Option<Framed>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        match self.buf[0] {
            0 => {}
            1 => return Err(FrameError::Compressed),
            _ => return Err(FrameError::BadFlag),
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max_message {
            return Err(FrameError::TooLarge { size: len, limit: self.max_message });
        }
        if self.buf.len() < HEADER_LEN + len {
            // Reserve once for the whole message instead of growing chunk by chunk.
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        Ok(Some(Framed(self.buf.split_to(HEADER_LEN + len).freeze())))
    }

    /// True when no partial message is pending (a clean end of stream).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_and_within_chunks() {
        let a = Framed::encode(b"hello");
        let b = Framed::encode(b"");
        let c = Framed::encode(&[7u8; 300]);
        let mut all = Vec::new();
        for f in [&a, &b, &c] {
            all.extend_from_slice(&f.0);
        }
        for split in 1..all.len() {
            let mut dec = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for piece in all.chunks(split) {
                dec.push(piece);
                while let Some(m) = dec.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, vec![a.clone(), b.clone(), c.clone()], "split {split}");
            assert!(dec.is_empty());
        }
    }

    #[test]
    fn oversized_and_compressed_frames_are_refused_before_buffering() {
        let mut dec = FrameDecoder::new(10);
        dec.push(&[0u8, 0, 0, 0, 11][..]);
        assert_eq!(dec.next_message(), Err(FrameError::TooLarge { size: 11, limit: 10 }));
        let mut dec = FrameDecoder::new(10);
        dec.push(&[1u8, 0, 0, 0, 1, 0][..]);
        assert_eq!(dec.next_message(), Err(FrameError::Compressed));
    }

    #[test]
    fn partial_message_is_pending() {
        let mut dec = FrameDecoder::new(100);
        dec.push(&[0u8, 0, 0, 0, 3, 1][..]);
        assert_eq!(dec.next_message().unwrap(), None);
        assert!(!dec.is_empty());
    }
}
