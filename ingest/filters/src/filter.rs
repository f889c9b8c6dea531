//! The one interface every filter offers: [`Filter`], over a document in flight ([`Doc`]).
//!
//! A pipeline does not need to know which filters exist. It asks each one its name (its stage
//! in the funnel and its `[filters.NAME]` table), whether it is enabled, what it looks at
//! ([`Kind`]), and then applies it to the document. [`crate::FiltersConfig::filters`] lists
//! them in FineWeb's order and [`crate::Chain`] keeps the enabled ones.

use std::borrow::Cow;
use std::fmt::Debug;

use crate::verdict::Drop;

/// A document as the filters see it: its URL, its current text (rewritten by the filters that
/// edit text, such as C4 and PII) and, once language identification has run, its language.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc<'a> {
    /// The document's URL, when the input has one.
    pub url: Option<&'a str>,
    /// The text the next filter judges; borrowed until a filter rewrites it.
    pub text: Cow<'a, str>,
    /// The language code (ISO 639-1 where the language has one, else ISO 639-3) and the
    /// identifier's confidence, recorded by the [`Kind::Language`] filter.
    pub lang: Option<(String, f64)>,
}

impl<'a> Doc<'a> {
    /// A document with `url` and `text`, its language not yet identified.
    pub fn new(url: Option<&'a str>, text: impl Into<Cow<'a, str>>) -> Self {
        Doc {
            url,
            text: text.into(),
            lang: None,
        }
    }
}

/// What a filter looks at, and what it may do to a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Judges the URL alone, so it runs before HTML extraction.
    Url,
    /// Identifies the text's language, records it in [`Doc::lang`] and judges it.
    Language,
    /// Measures the text and judges it; it may also rewrite it (C4 removes lines).
    Quality {
        /// The name of its pass/fail SQL function (`gopher_quality(text)`, `c4_quality(text)`).
        sql: &'static str,
    },
    /// Rewrites the text and never drops a document (PII).
    Formatter,
}

impl Kind {
    /// Whether a filter of this kind runs before extraction (it needs no text).
    pub fn before_extraction(self) -> bool {
        self == Kind::Url
    }

    /// The name of the pass/fail SQL function of a [`Kind::Quality`] filter.
    pub fn sql(self) -> Option<&'static str> {
        match self {
            Kind::Quality { sql } => Some(sql),
            _ => None,
        }
    }
}

/// A document filter: one stage of the recipe.
///
/// A disabled filter passes every document and changes nothing; a pipeline leaves it out
/// (see [`crate::Chain`]) so that it has no row in the funnel.
pub trait Filter: Debug + Send + Sync {
    /// The stage's name in the funnel and in drop keys, and its `[filters.NAME]` table:
    /// `url`, `language`, `gopher_repetition`, `gopher_quality`, `c4`, `fineweb`, `pii`.
    fn name(&self) -> &'static str;

    /// Whether the recipe runs it.
    fn enabled(&self) -> bool;

    /// What it looks at, and what it may do.
    fn kind(&self) -> Kind;

    /// Keeps `doc`, perhaps rewriting its text or recording its language, or says why it drops
    /// it. On `Err` the document is unchanged, so the caller still holds the text that was
    /// judged.
    fn apply(&self, doc: &mut Doc<'_>) -> Result<(), Drop>;

    /// Every value it measures on `text`, by rule name (the names of [`Drop::rule`]), for score
    /// columns; empty for a filter that only matches or rewrites.
    fn scores(&self, text: &str) -> Vec<(&'static str, f64)> {
        let _ = text;
        Vec::new()
    }
}

/// The [`Filter`] impl of a filter that measures the text and judges it: `apply` is its
/// `check(text)`, `scores` its `scores(text)`, its kind [`Kind::Quality`] with SQL function
/// `$sql`, its name and switch its `NAME` and `enabled`.
macro_rules! measuring_filter {
    ($ty:ty, $sql:literal) => {
        impl $crate::filter::Filter for $ty {
            fn name(&self) -> &'static str {
                Self::NAME
            }

            fn enabled(&self) -> bool {
                self.enabled
            }

            fn kind(&self) -> $crate::filter::Kind {
                $crate::filter::Kind::Quality { sql: $sql }
            }

            fn apply(
                &self,
                doc: &mut $crate::filter::Doc<'_>,
            ) -> std::result::Result<(), $crate::verdict::Drop> {
                self.check(&doc.text)
            }

            fn scores(&self, text: &str) -> Vec<(&'static str, f64)> {
                <$ty>::scores(self, text)
            }
        }
    };
}
pub(crate) use measuring_filter;
