//! Client keys: `Authorization: Bearer <key>`, compared in constant time.

use http::HeaderMap;

/// The keys clients may present. Empty = client authentication is off.
#[derive(Clone, Default)]
pub struct ClientKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key.
        f.debug_struct("ClientKeys")
            .field("count", &self.keys.len())
            .finish()
    }
}

impl ClientKeys {
    /// Keys from a comma-separated list (blank entries ignored).
    pub fn parse(list: &str) -> Self {
        ClientKeys {
            keys: list
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| k.as_bytes().to_vec())
                .collect(),
        }
    }

    /// Whether client authentication is on.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The first key (the demo traffic uses it).
    pub fn first(&self) -> Option<&[u8]> {
        self.keys.first().map(Vec::as_slice)
    }

    /// Whether the request's `Authorization: Bearer <key>` names one of the keys. Every key is
    /// compared, each in constant time, so the time taken says nothing about which key (or how
    /// much of one) matched.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if !self.enabled() {
            return true;
        }
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        let mut ok = false;
        for key in &self.keys {
            ok |= constant_time_eq(presented, key);
        }
        ok
    }
}

/// Compare two byte strings in time that depends only on their lengths, never on where they
/// differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    // Walk the longer input whole; missing bytes compare as 0 against the other side.
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    // `black_box` keeps the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_strings() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
