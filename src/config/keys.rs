//! Where a key is in the TOML source: dotted key paths (`routes[0].targets[1].provider`) to
//! lines, and the spans of parse errors back to key paths.
//!
//! The public configuration types hold plain values; the source text is kept beside them and
//! parsed again (with spans) only when an error needs a line.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ConfigFileError;

/// The 1-based line of byte `offset` in `source`.
pub(crate) fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source
        .as_bytes()
        .get(..end)
        .unwrap_or_default()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of the key at a dotted path (`breaker.window`, `routes[0].match`), if it is in the
/// source: the line of its key, or, for an element of an array, of its first key.
pub(crate) fn line_of_key(source: &str, dotted: &str) -> Option<usize> {
    let root = DeTable::parse(source).ok()?;
    let segments = segments(dotted)?;
    let span = locate(root.get_ref(), &segments)?;
    Some(line_of(source, span.start))
}

/// A parse or type error of the `toml` crate, with the key path its span falls in.
pub(crate) fn toml_error(source: &str, e: &toml::de::Error) -> ConfigFileError {
    let message = e.message().trim().to_owned();
    let key = e
        .span()
        .and_then(|span| path_at(source, span))
        .unwrap_or_default();
    let line = e.span().map(|span| line_of(source, span.start));
    ConfigFileError::new(key, line, message)
}

/// One step of a dotted path: a key, then indices into arrays.
struct Segment<'a> {
    name: &'a str,
    indices: Vec<usize>,
}

fn segments(dotted: &str) -> Option<Vec<Segment<'_>>> {
    dotted.split('.').map(split_indices).collect()
}

fn split_indices(segment: &str) -> Option<Segment<'_>> {
    let (name, mut rest) = match segment.find('[') {
        Some(at) => (segment.get(..at)?, segment.get(at..)?),
        None => {
            return Some(Segment {
                name: segment,
                indices: Vec::new(),
            })
        }
    };
    let mut indices = Vec::new();
    while let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        indices.push(inner.get(..close)?.parse().ok()?);
        rest = inner.get(close + 1..)?;
    }
    Some(Segment { name, indices })
}

/// The span to report for the key at `segments`: the key itself when the path ends at a key,
/// else the first key of the table an index leads to (an `[[array]]` element's own span may not
/// cover its contents).
fn locate(root: &DeTable<'_>, segments: &[Segment<'_>]) -> Option<Range<usize>> {
    let mut table = root;
    let mut span = None;
    for (n, segment) in segments.iter().enumerate() {
        let (key, value) = table
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == segment.name)?;
        let mut value: &Spanned<DeValue<'_>> = value;
        span = Some(key.span());
        for &i in &segment.indices {
            let DeValue::Array(items) = value.get_ref() else {
                return None;
            };
            value = items.get(i)?;
            span = Some(first_key(value).unwrap_or_else(|| value.span()));
        }
        if n + 1 < segments.len() {
            let DeValue::Table(inner) = value.get_ref() else {
                return None;
            };
            table = inner;
        }
    }
    span
}

/// The span of the first key (in source order) of a table value.
fn first_key(value: &Spanned<DeValue<'_>>) -> Option<Range<usize>> {
    match value.get_ref() {
        DeValue::Table(table) => table.keys().map(|k| k.span()).min_by_key(|s| s.start),
        _ => None,
    }
}

/// The dotted path (`routes[0].targets[1].attempt_timeout_ms`) of the innermost key or value
/// whose span contains `span`.
pub(crate) fn path_at(source: &str, span: Range<usize>) -> Option<String> {
    let root = DeTable::parse(source).ok()?;
    let mut path = String::new();
    if descend_table(root.get_ref(), &span, &mut path) {
        Some(path)
    } else {
        None
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn descend_table(table: &DeTable<'_>, span: &Range<usize>, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        if contains(&key.span(), span) {
            push_key(path, key.get_ref());
            return true;
        }
        let len = path.len();
        push_key(path, key.get_ref());
        // Children first: `[section]` tables and arrays of tables may not span their contents.
        if descend_value(value.get_ref(), span, path) || contains(&value.span(), span) {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn descend_value(value: &DeValue<'_>, span: &Range<usize>, path: &mut String) -> bool {
    match value {
        DeValue::Table(table) => descend_table(table, span, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if descend_value(item.get_ref(), span, path) || contains(&item.span(), span) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "[breaker]\nwindow = 20\n\n[[providers]]\nname = \"a\"\n\n[[providers]]\n\nname = \"b\"\nbase_url = \"http://x/v1\"\n[[routes]]\nmatch = \"*\"\ntargets = [\n  { provider = \"a\" },\n  { provider = \"b\", model = \"m\" },\n]\n";

    #[test]
    fn lines_of_keys_sections_and_array_elements() {
        assert_eq!(line_of_key(SRC, "breaker"), Some(1));
        assert_eq!(line_of_key(SRC, "breaker.window"), Some(2));
        assert_eq!(line_of_key(SRC, "providers[0]"), Some(5));
        assert_eq!(line_of_key(SRC, "providers[1]"), Some(9));
        assert_eq!(line_of_key(SRC, "providers[1].base_url"), Some(10));
        assert_eq!(line_of_key(SRC, "routes[0].targets"), Some(13));
        assert_eq!(line_of_key(SRC, "routes[0].targets[1]"), Some(15));
        assert_eq!(line_of_key(SRC, "routes[0].targets[1].model"), Some(15));
        assert_eq!(line_of_key(SRC, "providers[2]"), None);
        assert_eq!(line_of_key(SRC, "breaker.open_ms"), None);
        assert_eq!(line_of_key(SRC, "breaker[0"), None);
    }
}
