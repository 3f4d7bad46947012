//! A route's `match` pattern compiled once: [`ModelPattern`].
//!
//! ```
//! use tower_llm::config::ModelPattern;
//!
//! let claude = ModelPattern::new("claude-*")?;
//! assert!(claude.matches("claude-3-5-sonnet"));
//! assert!(!claude.matches("gpt-4o"));
//! assert!(ModelPattern::new("*")?.matches("anything"));
//! assert!(ModelPattern::new("gpt-4o")?.matches("gpt-4o"));
//! assert!(ModelPattern::new("gpt-[").is_err());
//! # Ok::<(), tower_llm::config::PatternError>(())
//! ```

use std::fmt;

/// A route's `match` pattern, compiled once: glob syntax as the `glob` crate reads it (`*`, `?`,
/// `[...]`, `[!...]`, case-sensitive, `*` crossing `/`), so the same models match as with
/// [`glob::Pattern`]. `*` alone and a pattern without glob characters (a model name or an alias)
/// are compared without the glob matcher: they are nearly every route, and every request
/// looks its route up.
#[derive(Clone, Debug)]
pub struct ModelPattern {
    pattern: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// `*`: every model.
    Any,
    /// No glob characters: this model only.
    Exact,
    Glob(glob::Pattern),
}

impl ModelPattern {
    /// `pattern` compiled; an error for a glob that does not parse (an unclosed `[`, `**` next
    /// to other characters).
    pub fn new(pattern: &str) -> Result<ModelPattern, PatternError> {
        let glob = glob::Pattern::new(pattern).map_err(|e| PatternError {
            pattern: pattern.to_owned(),
            message: e.msg,
            position: e.pos,
        })?;
        // On Windows the glob matcher takes `/` and `\` for one another: left to it there.
        let separators = cfg!(windows) && pattern.contains(['/', '\\']);
        let literal = !separators && !pattern.contains(['*', '?', '[']);
        let kind = if pattern == "*" {
            Kind::Any
        } else if literal {
            Kind::Exact
        } else {
            Kind::Glob(glob)
        };
        Ok(ModelPattern {
            pattern: pattern.to_owned(),
            kind,
        })
    }

    /// Whether `model` matches.
    pub fn matches(&self, model: &str) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact => self.pattern == model,
            Kind::Glob(glob) => glob.matches(model),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// A `match` pattern that is not a valid glob: the pattern, why, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pattern: String,
    message: &'static str,
    position: usize,
}

impl PatternError {
    /// Why the pattern is not a valid glob.
    pub fn message(&self) -> &str {
        self.message
    }

    /// The byte position in the pattern where it stopped parsing.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad glob `{}` at position {}: {}",
            self.pattern, self.position, self.message
        )
    }
}

impl std::error::Error for PatternError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds() {
        assert!(matches!(ModelPattern::new("*").unwrap().kind, Kind::Any));
        assert!(matches!(
            ModelPattern::new("gpt-4o").unwrap().kind,
            Kind::Exact
        ));
        assert!(matches!(
            ModelPattern::new("gpt-?o").unwrap().kind,
            Kind::Glob(_)
        ));
        let err = ModelPattern::new("gpt-[").unwrap_err();
        assert_eq!(err.position(), 4);
        assert!(err.to_string().contains("bad glob `gpt-[`"), "{err}");
    }

    /// Patterns and models over a small alphabet that holds every glob character.
    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            proptest::sample::select(vec![
                'a', 'b', '-', '.', '/', '*', '?', '[', ']', '!', '^', '\\', 'A', 'é',
            ]),
            0..8,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The same verdict as the glob matcher, for every pattern it accepts, and the same
        /// patterns refused.
        #[test]
        fn matches_as_the_glob_matcher_does(pattern in text(), model in text()) {
            match (ModelPattern::new(&pattern), glob::Pattern::new(&pattern)) {
                (Ok(ours), Ok(glob)) => {
                    prop_assert_eq!(ours.matches(&model), glob.matches(&model));
                    prop_assert_eq!(ours.matches(&pattern), glob.matches(&pattern));
                }
                (Err(ours), Err(glob)) => prop_assert_eq!(ours.position(), glob.pos),
                (ours, glob) => prop_assert!(false, "{:?} against {:?}", ours.err(), glob.err()),
            }
        }
    }
}
