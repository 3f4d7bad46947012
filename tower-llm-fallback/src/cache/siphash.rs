//! The cache key's keyed digest: SipHash-2-4 with a 128-bit output, from the `siphasher` crate.
//! Keyed with a random key, an outsider cannot make two requests collide, which a fixed-key hash
//! (`DefaultHasher::new()`) would allow across tenants.

use std::hash::Hasher as _;

use siphasher::sip128::{Hasher128 as _, SipHasher24};

/// A streaming SipHash-2-4-128 state. Integers are written little-endian, so a digest does not
/// depend on the platform.
#[derive(Clone)]
pub(super) struct Sip128(SipHasher24);

impl Sip128 {
    /// A state keyed with `key`.
    pub(super) fn new(key: (u64, u64)) -> Self {
        Sip128(SipHasher24::new_with_keys(key.0, key.1))
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    pub(super) fn write_u8(&mut self, b: u8) {
        self.0.write(&[b]);
    }

    pub(super) fn write_u64(&mut self, n: u64) {
        self.0.write(&n.to_le_bytes());
    }

    pub(super) fn write_u128(&mut self, n: u128) {
        self.0.write(&n.to_le_bytes());
    }

    /// The 128-bit digest.
    pub(super) fn finish(self) -> u128 {
        self.0.finish128().as_u128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference implementation's `vectors_sip128`: key `00..0f`, message `00..len-1`.
    const VECTORS: [(usize, [u8; 16]); 7] = [
        (
            0,
            [
                0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55,
                0x02, 0x93,
            ],
        ),
        (
            1,
            [
                0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22,
                0xfc, 0x45,
            ],
        ),
        (
            7,
            [
                0xa1, 0xf1, 0xeb, 0xbe, 0xd8, 0xdb, 0xc1, 0x53, 0xc0, 0xb8, 0x4a, 0xa6, 0x1f, 0xf0,
                0x82, 0x39,
            ],
        ),
        (
            8,
            [
                0x3b, 0x62, 0xa9, 0xba, 0x62, 0x58, 0xf5, 0x61, 0x0f, 0x83, 0xe2, 0x64, 0xf3, 0x14,
                0x97, 0xb4,
            ],
        ),
        (
            15,
            [
                0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf,
                0xc3, 0xd9,
            ],
        ),
        (
            16,
            [
                0x6e, 0xe2, 0xa4, 0xca, 0x67, 0xb0, 0x54, 0xbb, 0xfd, 0x33, 0x15, 0xbf, 0x85, 0x23,
                0x05, 0x77,
            ],
        ),
        (
            63,
            [
                0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a, 0x50, 0x3e, 0x06, 0x9a, 0x97, 0x3f,
                0xbd, 0x7c,
            ],
        ),
    ];

    const KEY: (u64, u64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);

    #[test]
    fn reference_vectors_in_one_write_and_byte_by_byte() {
        let input: Vec<u8> = (0..64).collect();
        for (len, expected) in VECTORS {
            let mut whole = Sip128::new(KEY);
            whole.write(&input[..len]);
            assert_eq!(whole.finish().to_le_bytes(), expected, "len {len}");
            let mut bytes = Sip128::new(KEY);
            for b in &input[..len] {
                bytes.write_u8(*b);
            }
            assert_eq!(
                bytes.finish().to_le_bytes(),
                expected,
                "len {len}, byte by byte"
            );
            if len > 3 {
                let mut split = Sip128::new(KEY);
                split.write(&input[..3]);
                split.write(&input[3..len]);
                assert_eq!(split.finish().to_le_bytes(), expected, "len {len}, split");
            }
        }
    }
}
