//! gRPC framing on arbitrary byte streams split at arbitrary points: never
//! a panic, never a message over the limit.
#![no_main]

use doltgate::remotesapi::frame::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut decoder = FrameDecoder::new(1 << 16);
    for piece in rest.chunks(usize::from(split).max(1)) {
        decoder.push(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => assert!(message.message().len() <= 1 << 16),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
