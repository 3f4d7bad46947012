//! The cache key: one pass over the body, one keyed SipHash-2-4-128 state per nesting level.

use serde::de::IgnoredAny;

use super::siphash::Sip128;
use super::{CacheScope, IGNORED_REQUEST_MEMBERS};

/// Requests nested deeper than this are not cached (serde_json refuses more than 128 too).
pub const MAX_DEPTH: usize = 128;

/// The secret key of the cache's digest: random for each cache ([`CacheHashKey::random`]), so
/// no one outside the process can make two requests collide. `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CacheHashKey(u64, u64);

impl std::fmt::Debug for CacheHashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheHashKey([redacted])")
    }
}

impl CacheHashKey {
    /// A random key, from the standard library's per-process randomness (the seed of
    /// `RandomState`, read from the operating system).
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let state = std::collections::hash_map::RandomState::new();
        let half = |n: u8| {
            let mut h = state.build_hasher();
            h.write_u8(n);
            h.finish()
        };
        CacheHashKey(half(0), half(1))
    }

    /// A fixed key (tests, or several processes that must agree on keys).
    pub const fn from_parts(k0: u64, k1: u64) -> Self {
        CacheHashKey(k0, k1)
    }
}

/// The key the cache tier stores the answer to a request `body` under when `scope` sent it: a
/// 128-bit keyed digest of the canonical request (see the [module docs](crate::cache)) and the
/// scope. `None` when the body is not a JSON object (such a request is neither stored nor served).
///
/// Its memory does not grow with the body: one hasher state per nesting level, at most
/// [`MAX_DEPTH`] levels (deeper requests are not cached).
///
/// ```
/// use tower_llm_fallback::cache::{request_key, CacheHashKey};
/// use tower_llm_fallback::CacheScope;
///
/// let key = CacheHashKey::random();
/// let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
/// let alice = CacheScope::new("alice");
/// let bob = CacheScope::new("bob");
/// assert_ne!(request_key(key, body, Some(&alice)), request_key(key, body, Some(&bob)));
/// assert_eq!(request_key(key, body, Some(&alice)), request_key(key, body, Some(&alice)));
/// assert_eq!(request_key(key, b"[]", None), None);
/// ```
pub fn request_key(key: CacheHashKey, body: &[u8], scope: Option<&CacheScope>) -> Option<u128> {
    let key = (key.0, key.1);
    let mut walk = Walk { b: body, i: 0, key };
    walk.ws();
    if walk.peek()? != b'{' {
        return None;
    }
    let digest = walk.object(1, true)?;
    walk.ws();
    if walk.i != body.len() {
        return None;
    }
    // The walk checks the structure; serde_json checks the rest (escapes, numbers) without
    // building anything, and after the walk the nesting is known to be shallow. It skips the
    // contents of strings it ignores, so UTF-8 is checked apart.
    std::str::from_utf8(body).ok()?;
    serde_json::from_slice::<IgnoredAny>(body).ok()?;
    let mut h = Sip128::new(key);
    h.write(b"tower-llm cache key v1");
    match scope {
        Some(scope) => {
            h.write_u8(1);
            h.write_u64(scope.as_str().len() as u64);
            h.write(scope.as_str().as_bytes());
        }
        None => h.write_u8(0),
    }
    h.write_u128(digest);
    Some(h.finish())
}

/// A cursor over the body.
struct Walk<'a> {
    b: &'a [u8],
    i: usize,
    key: (u64, u64),
}

impl<'a> Walk<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    fn tagged(&self, tag: u8, raw: &[u8]) -> u128 {
        let mut h = Sip128::new(self.key);
        h.write_u8(tag);
        h.write_u64(raw.len() as u64);
        h.write(raw);
        h.finish()
    }

    /// The raw bytes of a string (between its quotes, escapes as written).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => {
                    let raw = self.b.get(start..self.i)?;
                    self.i += 1;
                    return Some(raw);
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<u128> {
        self.ws();
        match self.peek()? {
            b'{' => self.object(depth + 1, false),
            b'[' => self.array(depth + 1),
            b'"' => {
                let raw = self.string()?;
                Some(self.tagged(b's', raw))
            }
            b't' => self.literal(b"true").map(|()| self.tagged(b't', b"")),
            b'f' => self.literal(b"false").map(|()| self.tagged(b'f', b"")),
            b'n' => self.literal(b"null").map(|()| self.tagged(b'z', b"")),
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.i += 1;
                }
                let raw = self.b.get(start..self.i)?;
                Some(self.tagged(b'n', raw))
            }
            _ => None,
        }
    }

    fn array(&mut self, depth: usize) -> Option<u128> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'[')?;
        let mut h = Sip128::new(self.key);
        h.write_u8(b'a');
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(h.finish());
        }
        loop {
            let element = self.value(depth)?;
            h.write_u128(element);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(h.finish());
                }
                _ => return None,
            }
        }
    }

    /// An object's digest; at the top level (`top`) without the ignored members.
    fn object(&mut self, depth: usize, top: bool) -> Option<u128> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'{')?;
        let mut sum: u128 = 0;
        let mut count: u64 = 0;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                self.ws();
                let name = self.string()?;
                self.ws();
                self.expect(b':')?;
                let value = self.value(depth)?;
                let ignored = top && IGNORED_REQUEST_MEMBERS.iter().any(|m| m.as_bytes() == name);
                if !ignored {
                    let mut h = Sip128::new(self.key);
                    h.write_u8(b'm');
                    h.write_u64(name.len() as u64);
                    h.write(name);
                    h.write_u128(value);
                    sum = sum.wrapping_add(h.finish());
                    count += 1;
                }
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let mut h = Sip128::new(self.key);
        h.write_u8(b'o');
        h.write_u64(count);
        h.write_u128(sum);
        Some(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: CacheHashKey = CacheHashKey::from_parts(1, 2);

    #[test]
    fn canonical_member_order_and_ignored_members() {
        let a = request_key(KEY, br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true,"temperature":0.2}"#, None);
        let b = request_key(KEY, br#" { "temperature" : 0.2, "messages":[{"content":"hi","role":"user"}],"model":"gpt","stream_options":{"include_usage":true}}"#, None);
        assert!(a.is_some());
        assert_eq!(a, b);
        // Arrays keep their order.
        let c = request_key(KEY, br#"{"model":"gpt","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#, None);
        let d = request_key(KEY, br#"{"model":"gpt","messages":[{"role":"user","content":"b"},{"role":"user","content":"a"}]}"#, None);
        assert_ne!(c, d);
        // Another key: another digest.
        assert_ne!(
            request_key(KEY, br#"{"model":"gpt"}"#, None),
            request_key(CacheHashKey::from_parts(3, 4), br#"{"model":"gpt"}"#, None)
        );
    }

    #[test]
    fn not_an_object_or_not_json_has_no_key() {
        for body in [
            &b"[1]"[..],
            b"nope",
            b"{\"a\":1",
            b"{\"a\":1} x",
            b"{\"a\":tru}",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":01}",
        ] {
            assert_eq!(
                request_key(KEY, body, None),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(request_key(KEY, deep.as_bytes(), None), None);
    }
}
