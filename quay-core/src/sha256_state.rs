//! A SHA-256 whose state can be saved between requests: the hash of a chunked upload is
//! carried from one `PATCH` to the next (which another instance may take) in the upload's
//! database row, so the closing `PUT` never reads the blob back to verify it.

use std::fmt;
use std::str::FromStr;

use sha2::digest::generic_array::GenericArray;

use crate::error::{Error, ErrorKind, Result};

const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 in progress, saved and restored as text (`Display` / `FromStr`).
#[derive(Clone, PartialEq, Eq)]
pub struct Sha256State {
    h: [u32; 8],
    /// Bytes hashed so far.
    len: u64,
    /// The bytes of the block not full yet (fewer than 64).
    pending: Vec<u8>,
}

impl fmt::Debug for Sha256State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256State")
            .field("len", &self.len)
            .finish()
    }
}

impl Default for Sha256State {
    fn default() -> Self {
        Sha256State {
            h: INITIAL,
            len: 0,
            pending: Vec::with_capacity(64),
        }
    }
}

impl Sha256State {
    /// A hash of nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            sha2::compress256(&mut self.h, &[*GenericArray::from_slice(&block)]);
        }
        let whole = data.len() / 64 * 64;
        let blocks: Vec<GenericArray<u8, _>> = data[..whole]
            .chunks_exact(64)
            .map(|c| *GenericArray::from_slice(c))
            .collect();
        if !blocks.is_empty() {
            sha2::compress256(&mut self.h, &blocks);
        }
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// The digest of everything hashed (the state itself is left as it was).
    pub fn finish(&self) -> [u8; 32] {
        let mut h = self.h;
        let mut tail = self.pending.clone();
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        let blocks: Vec<GenericArray<u8, _>> = tail
            .chunks_exact(64)
            .map(|c| *GenericArray::from_slice(c))
            .collect();
        sha2::compress256(&mut h, &blocks);
        let mut out = [0u8; 32];
        for (i, word) in h.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// Saved as hex: the eight state words, the length, then the pending bytes.
impl fmt::Display for Sha256State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(40 + self.pending.len());
        for word in self.h {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        bytes.extend_from_slice(&self.len.to_be_bytes());
        bytes.extend_from_slice(&self.pending);
        f.write_str(&hex::encode(bytes))
    }
}

impl FromStr for Sha256State {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::new(ErrorKind::Internal, "a saved SHA-256 state is malformed");
        let bytes = hex::decode(s).map_err(|_| bad())?;
        if bytes.len() < 40 || bytes.len() >= 40 + 64 {
            return Err(bad());
        }
        let mut h = [0u32; 8];
        for (i, word) in h.iter_mut().enumerate() {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
            *word = u32::from_be_bytes(b);
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[32..40]);
        let len = u64::from_be_bytes(len);
        let pending = bytes[40..].to_vec();
        if len % 64 != pending.len() as u64 {
            return Err(bad());
        }
        Ok(Sha256State { h, len, pending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    #[test]
    fn matches_sha2_across_saves() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for cuts in [vec![], vec![1], vec![63, 64, 65], vec![100, 5000, 9999]] {
            let mut state = Sha256State::new();
            let mut at = 0;
            for cut in cuts.iter().copied().chain([data.len()]) {
                state.update(&data[at..cut]);
                at = cut;
                state = state.to_string().parse().unwrap();
            }
            assert_eq!(
                state.finish().as_slice(),
                sha2::Sha256::digest(&data).as_slice()
            );
        }
        assert_eq!(
            Sha256State::new().finish().as_slice(),
            sha2::Sha256::digest(b"").as_slice()
        );
    }

    #[test]
    fn malformed_state_is_refused() {
        assert!("zz".parse::<Sha256State>().is_err());
        assert!("00".parse::<Sha256State>().is_err());
    }
}
