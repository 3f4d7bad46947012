//! The byte cursor shared by the crate's hand-written JSON scans ([`super::scan_plain_chunk`]
//! and the whole-answer scan): each scan wraps it and adds the readings of its own shape.

/// A position in a JSON document.
pub(crate) struct JsonCursor<'a> {
    /// The document as a `str` when it was checked whole (the same bytes as `data`); empty for
    /// a cursor over bytes not checked.
    text: &'a str,
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> JsonCursor<'a> {
    /// A cursor at the start of `text`, a document checked whole as UTF-8.
    pub(crate) fn new(text: &'a str) -> Self {
        JsonCursor {
            text,
            data: text.as_bytes(),
            pos: 0,
        }
    }

    /// A cursor at the start of `data`, a document not checked as UTF-8 (what `serde_json` does
    /// for a body it reads into a struct: it checks only the strings it reads as `str`). A scan
    /// over it makes its own `str`s; [`str_at`](Self::str_at) has none to give.
    pub(crate) fn from_bytes(data: &'a [u8]) -> Self {
        JsonCursor {
            text: "",
            data,
            pos: 0,
        }
    }

    /// The bytes `start..end` of a document checked whole, as a `str` (`None` off its character
    /// boundaries).
    #[inline]
    pub(crate) fn str_at(&self, start: usize, end: usize) -> Option<&'a str> {
        debug_assert!(
            self.text.len() == self.data.len(),
            "str_at on a cursor over bytes not checked as UTF-8"
        );
        self.text.get(start..end)
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    /// Skip JSON whitespace.
    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skip whitespace, then consume `byte` (a structural byte, never whitespace) if it is next.
    #[inline]
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        debug_assert!(!matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
        // Providers send compact JSON: the byte is usually next, with no whitespace to skip.
        if self.peek() != Some(byte) {
            self.ws();
            if self.peek() != Some(byte) {
                return false;
            }
        }
        self.pos += 1;
        true
    }

    /// After a member or an element, what comes next: `Some(true)` past a `,` (another one
    /// follows), `Some(false)` past `close` (the object or array ends), `None` for anything
    /// else. The `,` is the usual next byte, so it is looked for first.
    #[inline]
    pub(crate) fn comma_or(&mut self, close: u8) -> Option<bool> {
        if self.eat(b',') {
            return Some(true);
        }
        self.eat(close).then_some(false)
    }

    /// Consume `word` if it is next (no whitespace skipped).
    pub(crate) fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(word.len())?;
        if self.data.get(self.pos..end)? == word {
            self.pos = end;
            Some(())
        } else {
            None
        }
    }

    /// Skip ASCII digits.
    #[inline]
    pub(crate) fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

/// A scan wrapping a [`JsonCursor`]: its own readings in its own `impl`, the cursor's through
/// `Deref`.
macro_rules! json_scanner {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        struct $name<'a>($crate::sse::cursor::JsonCursor<'a>);

        impl<'a> ::std::ops::Deref for $name<'a> {
            type Target = $crate::sse::cursor::JsonCursor<'a>;

            #[inline]
            fn deref(&self) -> &Self::Target {
                &self.0
            }
        }

        impl ::std::ops::DerefMut for $name<'_> {
            #[inline]
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.0
            }
        }
    };
}
pub(crate) use json_scanner;
