//! SipHash-2-4 with a 128-bit output (Aumasson and Bernstein's reference algorithm), streaming:
//! the cache key's keyed digest. Keyed with a random key, an outsider cannot make two requests
//! collide, which a fixed-key hash (`DefaultHasher::new()`) would allow across tenants.

/// A streaming SipHash-2-4-128 state.
#[derive(Clone)]
pub(super) struct Sip128 {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    len: u64,
}

#[inline]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

impl Sip128 {
    /// A state keyed with `(k0, k1)` (the key's two little-endian halves).
    pub(super) fn new(key: (u64, u64)) -> Self {
        let (k0, k1) = key;
        Sip128 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d ^ 0xee,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        round(&mut self.v);
        round(&mut self.v);
        self.v[0] ^= m;
    }

    pub(super) fn write(&mut self, bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u64);
        let mut rest = bytes;
        // Fill a partial word first.
        while self.ntail > 0 && !rest.is_empty() {
            self.tail |= u64::from(rest[0]) << (8 * self.ntail);
            self.ntail += 1;
            rest = &rest[1..];
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                self.tail = 0;
                self.ntail = 0;
            }
        }
        if self.ntail > 0 {
            // `bytes` did not complete the partial word.
            return;
        }
        let mut words = rest.chunks_exact(8);
        for word in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            self.compress(u64::from_le_bytes(b));
        }
        for (i, byte) in words.remainder().iter().enumerate() {
            self.tail |= u64::from(*byte) << (8 * i);
        }
        self.ntail = words.remainder().len();
    }

    pub(super) fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    pub(super) fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    pub(super) fn write_u128(&mut self, n: u128) {
        self.write(&n.to_le_bytes());
    }

    /// The 128-bit digest (the reference's 16 output bytes, read little-endian).
    pub(super) fn finish(mut self) -> u128 {
        let b = self.tail | ((self.len & 0xff) << 56);
        self.compress(b);
        self.v[2] ^= 0xee;
        for _ in 0..4 {
            round(&mut self.v);
        }
        let lo = self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3];
        self.v[1] ^= 0xdd;
        for _ in 0..4 {
            round(&mut self.v);
        }
        let hi = self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3];
        u128::from(lo) | (u128::from(hi) << 64)
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
