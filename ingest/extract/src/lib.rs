//! Main-content extraction: the text of a web page's article, without its navigation, menus,
//! footers, cookie banners, share bars, related links and comment sections.
//!
//! Hand-written for speed (the product's core: every crawled page goes through it): a byte-level
//! tokenizer ([`lexer`]) that skips scripts and styles without tokenizing them, a light element
//! tree whose text is cut into blocks ([`tree`]), attribute hints ([`patterns`]) and a
//! paragraph-density score that picks the element holding the article ([`select`]).
//!
//! ```
//! let html = "<html><body><nav><a href=/>Home</a> <a href=/news>News</a></nav>\
//!   <article><h1>Title</h1><p>The first paragraph of the story, long enough to count.</p>\
//!   <p>A second paragraph, with more words, commas, and a full stop.</p></article>\
//!   <footer>© 2024 Example Corp. All rights reserved.</footer></body></html>";
//! let doc = tokenmill_extract::extract(html, &Default::default());
//! assert!(doc.text.contains("The first paragraph"));
//! assert!(!doc.text.contains("rights reserved") && !doc.text.contains("Home"));
//! ```

#![warn(missing_docs)]

pub mod eval;
pub mod lexer;
pub mod patterns;
pub mod script;
pub mod select;
pub mod tags;
pub mod tree;

use serde::{Deserialize, Serialize};

/// Extraction settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractorConfig {
    /// Drop very short blocks (under four words, headings excepted) from the article.
    pub favor_precision: bool,
    /// Keep the readers' comments, after the article's text (as trafilatura does by default;
    /// datatrove's FineWeb settings leave them out).
    pub include_comments: bool,
    /// Pages longer than this many bytes are cut here before extraction (memory and time stay
    /// bounded on pathological pages); the cut is reported.
    pub max_bytes: usize,
}

impl Default for ExtractorConfig {
    fn default() -> Self {
        ExtractorConfig {
            favor_precision: false,
            include_comments: false,
            max_bytes: 8 << 20,
        }
    }
}

/// What extraction found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    /// The article text: one block per line.
    pub text: String,
    /// The page's `<title>`.
    pub title: Option<String>,
    /// The page was longer than `max_bytes` and was cut.
    pub truncated: bool,
}

/// Extracts the article text of `html`.
pub fn extract(html: &str, opts: &ExtractorConfig) -> Extracted {
    let (html, truncated) = if html.len() > opts.max_bytes {
        let mut cut = opts.max_bytes;
        while !html.is_char_boundary(cut) {
            cut -= 1;
        }
        (&html[..cut], true)
    } else {
        (html, false)
    };
    let mut page = tree::build(html);
    let text = select::article(&mut page, opts);
    Extracted {
        text,
        title: page.title.take(),
        truncated,
    }
}
