//! Document filters of web-scale pretraining pipelines, as FineWeb applies them
//! (datatrove 0.10.1 definitions and thresholds):
//!
//! | filter | type | what it does |
//! |---|---|---|
//! | URL blocklist | [`UrlFilter`] (from [`UrlFilterConfig`]) | blocked domains and their subdomains, banned URL words and substrings |
//! | language | [`LanguageFilter`], [`detect`] | whatlang language id, accepted languages and a minimum confidence |
//! | Gopher repetition | [`GopherRepetition`] | duplicate lines, paragraphs and n-grams |
//! | Gopher quality | [`GopherQuality`] | word count and length, symbols, bullets, ellipses, alphabetic words, stop words |
//! | C4 | [`C4Quality`] | removes boilerplate lines; drops `lorem ipsum`, code, too few sentences; rewrites the text |
//! | FineWeb | [`FineWebQuality`] | lines ending in punctuation, short lines, duplicated line characters, newlines per word |
//! | PII | [`PiiFormatter`] | replaces e-mail and public IP addresses |
//!
//! A filter never fails on a document: it keeps it (`Ok`) or says why it drops it ([`Drop`]:
//! filter, rule, measured value, threshold). The measuring filters also report every measured
//! value (`scores`) for score columns. Settings are serde structs with FineWeb's defaults, one
//! table each in [`FiltersConfig`]; `docs/filters.md` documents the rules and the measurements
//! on real corpora.
//!
//! Every filter implements one trait, [`Filter`]: a name, whether it is enabled, its [`Kind`]
//! (URL, language, quality or formatter) and `apply` on a [`Doc`]. [`FiltersConfig::filters`]
//! lists them all in FineWeb's order and [`FiltersConfig::chain`] keeps the enabled ones as a
//! [`Chain`], which is what a pipeline iterates.
//!
//! ```
//! use tokenmill_filters::{FiltersConfig, GopherQuality, detect};
//!
//! let text = "A text far too short to train on.";
//! let drop = GopherQuality::default().check(text).unwrap_err();
//! assert_eq!((drop.filter, drop.rule, drop.value, drop.threshold), ("gopher_quality", "words", 8.0, 50.0));
//! assert_eq!(drop.to_string(), "dropped by gopher_quality/words: 8 (threshold 50)");
//!
//! // All quality filters in FineWeb's order; C4 may rewrite the text that is kept.
//! assert!(FiltersConfig::default().quality(text).is_err());
//!
//! // The enabled filters, in order, behind one trait.
//! let chain = FiltersConfig::default().chain()?;
//! let names: Vec<&str> = chain.iter().map(|f| f.name()).collect();
//! assert_eq!(names, ["url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "pii"]);
//! assert_eq!(chain.drop_reason(text).as_deref(), Some("gopher_repetition/top_3_gram"));
//! assert_eq!(detect("Der schnelle braune Fuchs springt über den faulen Hund.").map(|g| g.code), Some("deu"));
//! # Ok::<(), tokenmill_filters::Error>(())
//! ```

#![warn(missing_docs)]

mod c4;
mod chain;
mod config;
mod error;
mod filter;
mod fineweb;
mod gopher;
mod hash;
mod lang;
mod pii;
pub mod punct;
mod url;
mod verdict;
pub mod words;

#[cfg(test)]
mod testutil;

pub use c4::{C4LineCounts, C4Quality, POLICY_SUBSTRINGS};
pub use chain::Chain;
pub use config::FiltersConfig;
pub use error::{Error, Result};
pub use filter::{Doc, Filter, Kind};
pub use fineweb::FineWebQuality;
pub use gopher::{GOPHER_STOP_WORDS, GopherQuality, GopherRepetition};
pub use lang::{LangGuess, LanguageFilter, detect, supported_languages};
pub use pii::{PiiFormatter, is_public_ipv4, is_public_ipv6};
pub use url::{UrlFilter, UrlFilterConfig};
pub use verdict::Drop;
