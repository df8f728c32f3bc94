//! Generated test data.

use std::path::Path;

/// Writes `rows` rows of `id,payload` with incompressible payloads of
/// `payload_bytes` (a fixed-seed generator: every run has the same data).
pub fn write_csv(path: &Path, rows: usize, payload_bytes: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    writeln!(out, "id,payload").unwrap();
    let mut payload = vec![0u8; payload_bytes];
    for id in 0..rows {
        for byte in payload.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = alphabet[(state % alphabet.len() as u64) as usize];
        }
        writeln!(out, "{id},{}", std::str::from_utf8(&payload).unwrap()).unwrap();
    }
}
