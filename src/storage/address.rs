//! Chunk addresses: the first 20 bytes of a chunk's SHA-512 (`go/store/hash/hash.go`).
//!
//! Dolt prints them as 32 characters of RFC 4648 base32 with the alphabet
//! `0-9a-v` (`go/store/hash/base32.go`); 160 bits fill exactly 32 symbols, so
//! there is never padding. The same text names table files and commits in
//! `dolt log`, which is what lets tests compare against the CLI.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use data_encoding::Encoding;

use super::StorageError;

pub const ADDRESS_LEN: usize = 20;

#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; ADDRESS_LEN]);

static BASE32: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("0123456789abcdefghijklmnopqrstuv");
    spec.encoding().expect("a valid base32 alphabet")
});

/// SHA-512 over bytes fed in pieces, finished as the address they name (its
/// first 20 bytes). Every pushed byte passes through it at least once, so it
/// uses OpenSSL's SHA-512: on CPUs where ring keeps to its scalar code (its
/// vector path is for Intel only) OpenSSL's AVX2 code is about 1.4x faster.
pub struct Hasher(openssl::sha::Sha512);

impl Hasher {
    pub fn new() -> Hasher {
        Hasher(openssl::sha::Sha512::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> Address {
        Address(self.0.finish()[..ADDRESS_LEN].try_into().expect("SHA-512 is longer than 20 bytes"))
    }
}

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher::new()
    }
}

impl Address {
    /// The all-zero address, which Dolt uses for "none" (an empty root, a
    /// parentless commit's closure).
    pub const EMPTY: Address = Address([0; ADDRESS_LEN]);

    pub fn of(bytes: &[u8]) -> Address {
        let mut hasher = Hasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The address of each message, in order. Many independent messages hash
    /// eight at a time where the CPU allows ([`super::sha512_lanes`]), which
    /// is how a pushed file's chunks are checked.
    pub fn of_each(messages: &[&[u8]]) -> Vec<Address> {
        #[cfg(target_arch = "x86_64")]
        if super::sha512_lanes::supported() {
            let digests = super::sha512_lanes::hash_many(messages);
            return digests
                .iter()
                .map(|digest| Address::from_slice(&digest[..ADDRESS_LEN]).expect("20 bytes"))
                .collect();
        }
        messages.iter().map(|message| Address::of(message)).collect()
    }

    /// `None` unless `bytes` is exactly 20 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Address> {
        bytes.try_into().ok().map(Address)
    }

    pub fn is_empty(&self) -> bool {
        *self == Address::EMPTY
    }

    pub fn as_bytes(&self) -> &[u8; ADDRESS_LEN] {
        &self.0
    }

    /// The big-endian first 8 bytes, which table and archive indexes sort by.
    pub fn prefix(&self) -> u64 {
        u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"))
    }

    /// The last 12 bytes, which indexes store beside the prefix.
    pub fn suffix(&self) -> &[u8] {
        &self.0[8..]
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32.encode(&self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = StorageError;

    fn from_str(text: &str) -> Result<Address, StorageError> {
        let bad = || StorageError::BadAddressText(text.to_owned());
        if text.len() != 32 {
            return Err(bad());
        }
        let bytes = BASE32.decode(text.as_bytes()).map_err(|_| bad())?;
        Address::from_slice(&bytes).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_like_dolt() {
        // The vector from go/store/hash/hash_test.go.
        assert_eq!(Address::of(b"abc").to_string(), "rmnjb8cjc5tblj21ed4qs821649eduie");
    }

    #[test]
    fn pieces_hash_like_the_whole() {
        // Pieces that straddle SHA-512's 128-byte blocks, against an independent implementation.
        use sha2::Digest;
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut hasher = Hasher::new();
        let mut rest = &bytes[..];
        for size in [1, 127, 128, 129, 4096, 65_536].into_iter().cycle() {
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            hasher.update(piece);
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
        let expected = Address::from_slice(&sha2::Sha512::digest(&bytes)[..ADDRESS_LEN]).unwrap();
        assert_eq!(hasher.finish(), expected);
        assert_eq!(Address::of(&bytes), expected);
    }

    #[test]
    fn many_at_once_hash_like_one_at_a_time() {
        #[cfg(target_arch = "x86_64")]
        eprintln!("eight lanes at a time: {}", super::super::sha512_lanes::supported());
        let data: Vec<u8> = (0..40_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        // Every length up to three 128-byte blocks (the padding spills into a
        // second block from 112 bytes on), then long and odd ones, at offsets
        // that vary so lanes read unaligned slices.
        let lengths = (0..3 * 128 + 20).chain([1000, 4095, 4096, 4097, 16_384, 33_333]);
        let messages: Vec<&[u8]> = lengths.enumerate().map(|(i, len)| &data[i % 61..i % 61 + len]).collect();
        // Fewer messages than lanes, exactly as many, one more, and none.
        for batch in [&messages[..], &messages[..1], &messages[..7], &messages[..8], &messages[..9], &[][..]] {
            let expected: Vec<Address> = batch.iter().map(|message| Address::of(message)).collect();
            assert_eq!(Address::of_each(batch), expected);
        }
    }

    #[test]
    fn text_round_trips() {
        let address = Address::of(b"round trip");
        assert_eq!(address.to_string().parse::<Address>().unwrap(), address);
        assert_eq!(Address([0xff; 20]).to_string(), "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
        assert_eq!(Address::EMPTY.to_string(), "0".repeat(32));
    }

    #[test]
    fn refuses_bad_text() {
        for text in ["", "rmnjb8cjc5tblj21ed4qs821649eduiw", "RMNJB8CJC5TBLJ21ED4QS821649EDUIE", "rmnjb8cjc5tbl"] {
            assert!(matches!(text.parse::<Address>(), Err(StorageError::BadAddressText(_))), "{text}");
        }
    }

    #[test]
    fn empty_is_all_zero() {
        assert!(Address::EMPTY.is_empty());
        assert!(!Address::of(b"").is_empty());
    }

    #[test]
    fn prefix_and_suffix_split_the_bytes() {
        let address = Address(std::array::from_fn(|i| i as u8));
        assert_eq!(address.prefix(), 0x0001020304050607);
        assert_eq!(address.suffix(), &[8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    }
}
