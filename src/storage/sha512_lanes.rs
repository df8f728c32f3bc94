//! SHA-512 of many independent messages at once, one message per 64-bit lane
//! of an AVX-512 register.
//!
//! One SHA-512 is a chain of dependent rounds, so a single message cannot use
//! a vector unit's width; eight messages can, each lane running exactly the
//! scalar algorithm (FIPS 180-4, section 6.4). The verifier of a push hashes
//! hundreds of thousands of independent chunks of a few KiB each, which is
//! the case this serves: about 2.8 times OpenSSL's single-message rate on the
//! same core. A lane is refilled as soon as its message ends, so messages of
//! different lengths keep every lane busy until the last few of a batch.
//!
//! [`crate::storage::address::Address::of_each`] picks this path when the CPU
//! has AVX-512F and OpenSSL otherwise; the tests compare the two.

use std::arch::x86_64::{
    __m512i, _mm512_add_epi64, _mm512_loadu_si512, _mm512_mask_mov_epi64, _mm512_ror_epi64, _mm512_set1_epi64,
    _mm512_srli_epi64, _mm512_storeu_si512, _mm512_ternarylogic_epi64,
};

const LANES: usize = 8;
const BLOCK: usize = 128;
const WORDS: usize = BLOCK / 8;

const IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

const K: [u64; 80] = [
    0x428a2f98d728ae22,
    0x7137449123ef65cd,
    0xb5c0fbcfec4d3b2f,
    0xe9b5dba58189dbbc,
    0x3956c25bf348b538,
    0x59f111f1b605d019,
    0x923f82a4af194f9b,
    0xab1c5ed5da6d8118,
    0xd807aa98a3030242,
    0x12835b0145706fbe,
    0x243185be4ee4b28c,
    0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f,
    0x80deb1fe3b1696b1,
    0x9bdc06a725c71235,
    0xc19bf174cf692694,
    0xe49b69c19ef14ad2,
    0xefbe4786384f25e3,
    0x0fc19dc68b8cd5b5,
    0x240ca1cc77ac9c65,
    0x2de92c6f592b0275,
    0x4a7484aa6ea6e483,
    0x5cb0a9dcbd41fbd4,
    0x76f988da831153b5,
    0x983e5152ee66dfab,
    0xa831c66d2db43210,
    0xb00327c898fb213f,
    0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2,
    0xd5a79147930aa725,
    0x06ca6351e003826f,
    0x142929670a0e6e70,
    0x27b70a8546d22ffc,
    0x2e1b21385c26c926,
    0x4d2c6dfc5ac42aed,
    0x53380d139d95b3df,
    0x650a73548baf63de,
    0x766a0abb3c77b2a8,
    0x81c2c92e47edaee6,
    0x92722c851482353b,
    0xa2bfe8a14cf10364,
    0xa81a664bbc423001,
    0xc24b8b70d0f89791,
    0xc76c51a30654be30,
    0xd192e819d6ef5218,
    0xd69906245565a910,
    0xf40e35855771202a,
    0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8,
    0x1e376c085141ab53,
    0x2748774cdf8eeb99,
    0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63,
    0x4ed8aa4ae3418acb,
    0x5b9cca4f7763e373,
    0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc,
    0x78a5636f43172f60,
    0x84c87814a1f0ab72,
    0x8cc702081a6439ec,
    0x90befffa23631e28,
    0xa4506cebde82bde9,
    0xbef9a3f7b2c67915,
    0xc67178f2e372532b,
    0xca273eceea26619c,
    0xd186b8c721c0c207,
    0xeada7dd6cde0eb1e,
    0xf57d4f7fee6ed178,
    0x06f067aa72176fba,
    0x0a637dc5a2c898a6,
    0x113f9804bef90dae,
    0x1b710b35131c471b,
    0x28db77f523047d84,
    0x32caab7b40c72493,
    0x3c9ebe0a15c9bebc,
    0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6,
    0x597f299cfc657e2a,
    0x5fcb6fab3ad6faec,
    0x6c44198c4a475817,
];

/// Whether this CPU can run [`hash_many`].
pub fn supported() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// The SHA-512 of every message, in order.
///
/// # Panics
/// When the CPU lacks AVX-512F (see [`supported`]).
pub fn hash_many(messages: &[&[u8]]) -> Vec<[u8; 64]> {
    assert!(supported(), "hash_many needs AVX-512F");
    // SAFETY: the CPU has AVX-512F, checked above.
    unsafe { hash_many_avx512(messages) }
}

/// The message a lane is hashing, and which of its blocks comes next.
#[derive(Clone, Copy)]
struct Lane {
    message: usize,
    block: usize,
    blocks: usize,
}

#[target_feature(enable = "avx512f")]
fn hash_many_avx512(messages: &[&[u8]]) -> Vec<[u8; 64]> {
    let mut digests = vec![[0u8; 64]; messages.len()];
    let initial = IV.map(|word| _mm512_set1_epi64(word as i64));
    let mut state = initial;
    let mut lanes: [Option<Lane>; LANES] = [None; LANES];
    let mut waiting = messages.iter().enumerate();
    // Word-major, so each of the 16 message words loads as one vector.
    let mut schedule = [[0u64; LANES]; WORDS];
    loop {
        let mut starting = 0u8;
        for (lane_number, slot) in lanes.iter_mut().enumerate() {
            if slot.is_none() {
                if let Some((message, bytes)) = waiting.next() {
                    *slot = Some(Lane { message, block: 0, blocks: block_count(bytes.len()) });
                    starting |= 1 << lane_number;
                }
            }
            if let Some(lane) = slot {
                load_block(messages[lane.message], lane, lane_number, &mut schedule);
            }
        }
        if lanes.iter().all(Option::is_none) {
            return digests;
        }
        for (word, start) in state.iter_mut().zip(&initial) {
            *word = _mm512_mask_mov_epi64(*word, starting, *start);
        }
        // SAFETY: each row of `schedule` is 64 readable bytes.
        let words = schedule.map(|row| unsafe { _mm512_loadu_si512(row.as_ptr().cast()) });
        compress(&mut state, words);
        let mut results: Option<[[u64; LANES]; 8]> = None;
        for (lane_number, slot) in lanes.iter_mut().enumerate() {
            let Some(lane) = slot else { continue };
            lane.block += 1;
            if lane.block < lane.blocks {
                continue;
            }
            let results = results.get_or_insert_with(|| {
                let mut rows = [[0u64; LANES]; 8];
                for (row, word) in rows.iter_mut().zip(&state) {
                    // SAFETY: each row is 64 writable bytes.
                    unsafe { _mm512_storeu_si512(row.as_mut_ptr().cast(), *word) };
                }
                rows
            });
            for (bytes, row) in digests[lane.message].chunks_exact_mut(8).zip(results.iter()) {
                bytes.copy_from_slice(&row[lane_number].to_be_bytes());
            }
            *slot = None;
        }
    }
}

fn block_count(len: usize) -> usize {
    // At least one 0x80 byte and the 16-byte bit length follow the message.
    (len + 17).div_ceil(BLOCK)
}

/// Puts `lane`'s next block, as big-endian words, into column `lane_number` of `schedule`.
fn load_block(message: &[u8], lane: &Lane, lane_number: usize, schedule: &mut [[u64; LANES]; WORDS]) {
    let start = lane.block * BLOCK;
    let padded;
    let block = match message.get(start..start + BLOCK) {
        Some(whole) => whole,
        None => {
            padded = padded_block(message, lane);
            &padded[..]
        }
    };
    for (row, bytes) in schedule.iter_mut().zip(block.chunks_exact(8)) {
        row[lane_number] = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
    }
}

/// One of the last blocks of `message`, where SHA-512's padding goes: the
/// message's tail, a 0x80 byte, zeros, and the message's length in bits.
fn padded_block(message: &[u8], lane: &Lane) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    let start = lane.block * BLOCK;
    let tail = message.get(start..).unwrap_or_default();
    block[..tail.len()].copy_from_slice(tail);
    if (start..start + BLOCK).contains(&message.len()) {
        block[message.len() - start] = 0x80;
    }
    if lane.block + 1 == lane.blocks {
        block[BLOCK - 16..].copy_from_slice(&(message.len() as u128 * 8).to_be_bytes());
    }
    block
}

/// The three-way exclusive or, in one instruction.
#[target_feature(enable = "avx512f")]
fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
    _mm512_ternarylogic_epi64::<0x96>(a, b, c)
}

/// SHA-512's compression function over eight (state, block) pairs.
#[target_feature(enable = "avx512f")]
fn compress(state: &mut [__m512i; 8], mut w: [__m512i; WORDS]) {
    let add = |a, b| _mm512_add_epi64(a, b);
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
    for (t, k) in K.iter().enumerate() {
        if t >= WORDS {
            // w[t] = σ1(w[t-2]) + w[t-7] + σ0(w[t-15]) + w[t-16], in a ring of 16.
            let (w15, w2) = (w[(t + 1) % WORDS], w[(t + 14) % WORDS]);
            let small_s0 = xor3(_mm512_ror_epi64::<1>(w15), _mm512_ror_epi64::<8>(w15), _mm512_srli_epi64::<7>(w15));
            let small_s1 = xor3(_mm512_ror_epi64::<19>(w2), _mm512_ror_epi64::<61>(w2), _mm512_srli_epi64::<6>(w2));
            w[t % WORDS] = add(add(w[t % WORDS], small_s0), add(w[(t + 9) % WORDS], small_s1));
        }
        let big_s1 = xor3(_mm512_ror_epi64::<14>(e), _mm512_ror_epi64::<18>(e), _mm512_ror_epi64::<41>(e));
        let choose = _mm512_ternarylogic_epi64::<0xCA>(e, f, g);
        let t1 = add(add(h, big_s1), add(choose, add(_mm512_set1_epi64(*k as i64), w[t % WORDS])));
        let big_s0 = xor3(_mm512_ror_epi64::<28>(a), _mm512_ror_epi64::<34>(a), _mm512_ror_epi64::<39>(a));
        let majority = _mm512_ternarylogic_epi64::<0xE8>(a, b, c);
        h = g;
        g = f;
        f = e;
        e = add(d, t1);
        d = c;
        c = b;
        b = a;
        a = add(t1, add(big_s0, majority));
    }
    for (word, value) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
        *word = add(*word, value);
    }
}
