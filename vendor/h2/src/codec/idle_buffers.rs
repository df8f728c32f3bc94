//! The connection's read and write buffers exist only while there is
//! something to read or write, so that an idle connection holds neither.

use super::Codec;
use crate::frame::{self, Frame};
use bytes::Bytes;
use futures_core::Stream;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use tokio::io::{duplex, AsyncWriteExt, DuplexStream};

type TestCodec = Codec<DuplexStream, Bytes>;

fn pair() -> (TestCodec, TestCodec) {
    let (a, b) = duplex(64 * 1024);
    (Codec::new(a), Codec::new(b))
}

fn ping(payload: u8) -> Frame<Bytes> {
    frame::Ping::new([payload; 8]).into()
}

async fn send(codec: &mut TestCodec, frame: Frame<Bytes>) {
    poll_fn(|cx| codec.poll_ready(cx)).await.unwrap();
    codec.buffer(frame).unwrap();
}

async fn flush(codec: &mut TestCodec) {
    poll_fn(|cx| codec.flush(cx)).await.unwrap();
}

async fn next_frame(codec: &mut TestCodec) -> Frame {
    poll_fn(|cx| Pin::new(&mut *codec).poll_next(cx))
        .await
        .unwrap()
        .unwrap()
}

/// Polls once for a frame, expecting none to be there.
async fn poll_nothing(codec: &mut TestCodec) {
    poll_fn(|cx| match Pin::new(&mut *codec).poll_next(cx) {
        Poll::Pending => Poll::Ready(()),
        Poll::Ready(frame) => panic!("unexpected {frame:?}"),
    })
    .await;
}

fn ping_payload(frame: Frame) -> [u8; 8] {
    match frame {
        Frame::Ping(ping) => *ping.payload(),
        other => panic!("expected a ping, got {other:?}"),
    }
}

#[tokio::test]
async fn a_new_connection_holds_no_buffers() {
    let (codec, _peer) = pair();
    assert_eq!(codec.buffer_capacities(), (0, 0));
}

#[tokio::test]
async fn the_write_buffer_is_taken_for_queued_frames_and_released_once_flushed() {
    let (mut writer, mut reader) = pair();
    send(&mut writer, ping(1)).await;
    send(&mut writer, ping(2)).await;
    assert!(
        writer.buffer_capacities().1 > 0,
        "queued frames need a buffer"
    );

    flush(&mut writer).await;
    assert_eq!(
        writer.buffer_capacities().1,
        0,
        "nothing left to write, no buffer"
    );

    assert_eq!(ping_payload(next_frame(&mut reader).await), [1; 8]);
    assert_eq!(ping_payload(next_frame(&mut reader).await), [2; 8]);

    // A released buffer is taken again for the next frame.
    send(&mut writer, ping(3)).await;
    flush(&mut writer).await;
    assert_eq!(ping_payload(next_frame(&mut reader).await), [3; 8]);
}

#[tokio::test]
async fn the_read_buffer_is_released_when_a_read_finds_nothing_left() {
    let (mut writer, mut reader) = pair();
    send(&mut writer, ping(7)).await;
    flush(&mut writer).await;

    assert_eq!(ping_payload(next_frame(&mut reader).await), [7; 8]);
    poll_nothing(&mut reader).await;
    assert_eq!(
        reader.buffer_capacities().0,
        0,
        "everything read, no buffer"
    );
}

#[tokio::test]
async fn a_frame_split_across_reads_keeps_its_first_part() {
    let (raw, other_end) = duplex(64 * 1024);
    let mut reader: TestCodec = Codec::new(other_end);
    let mut raw = raw;
    // A PING frame: length 8, type 6, no flags, stream 0, then the payload.
    let mut wire = vec![0, 0, 8, 6, 0, 0, 0, 0, 0];
    wire.extend_from_slice(&[9; 8]);

    raw.write_all(&wire[..12]).await.unwrap();
    poll_nothing(&mut reader).await;
    assert!(
        reader.buffer_capacities().0 > 0,
        "a partial frame keeps its buffer"
    );

    raw.write_all(&wire[12..]).await.unwrap();
    assert_eq!(ping_payload(next_frame(&mut reader).await), [9; 8]);
}
