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

impl Address {
    /// The all-zero address, which Dolt uses for "none" (an empty root, a
    /// parentless commit's closure).
    pub const EMPTY: Address = Address([0; ADDRESS_LEN]);

    pub fn of(bytes: &[u8]) -> Address {
        Address::from_digest(ring::digest::digest(&ring::digest::SHA512, bytes))
    }

    /// The address a finished SHA-512 names: its first 20 bytes. (ring's
    /// SHA-512 is the fastest at hand; every pushed byte passes through it.)
    pub fn from_digest(digest: ring::digest::Digest) -> Address {
        Address(digest.as_ref()[..ADDRESS_LEN].try_into().expect("SHA-512 is longer than 20 bytes"))
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
