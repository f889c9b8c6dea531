//! Scoring rules of the two extraction benchmarks, shared by `tokenmill bench extract`, the
//! examples and the tests, so every extractor (ours and its peers) is scored by the same code.
//!
//! * **Snippets** (trafilatura's multilingual evaluation, `../shared/data/extraction-multilingual`):
//!   each page has snippets that must be in the main text (`with`) and snippets that must not
//!   (`without`). A snippet is found when its whitespace-normalised text is a substring of the
//!   whitespace-normalised output. A found `with` snippet is a true positive, a missing one a
//!   false negative; a found `without` snippet is a false positive, a missing one a true
//!   negative. Precision, recall and F1 over the counts summed across pages.
//! * **Words** (the article-extraction benchmark, `../shared/data/extraction`): bags of
//!   lower-case alphanumeric words of the output against the ground-truth article text.
//! * **Blocks** (pages that are all main text, such as the UDHR in 532 languages,
//!   `../shared/data/multilingual/udhr-532-languages.tar.gz`): every text block of the page is
//!   wanted. Recall: blocks whose normalised text is a substring of the normalised output;
//!   precision: output lines that are (part of) some block of the page (after a leading `- `
//!   list marker, which trafilatura writes before list items).

use std::collections::HashMap;

use crate::ExtractorConfig;
use crate::select::Fate;

/// Collapses every run of whitespace to one space and trims the ends.
pub fn normalize_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Snippet counts of one page or summed over pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnippetCounts {
    /// `with` snippets found.
    pub tp: u64,
    /// `with` snippets missing.
    pub fn_: u64,
    /// `without` snippets found.
    pub fp: u64,
    /// `without` snippets missing.
    pub tn: u64,
}

impl SnippetCounts {
    /// Adds `o`'s counts.
    pub fn add(&mut self, o: SnippetCounts) {
        self.tp += o.tp;
        self.fn_ += o.fn_;
        self.fp += o.fp;
        self.tn += o.tn;
    }

    /// Precision, recall and F1 of the counts (precision 1 when nothing was found).
    pub fn prf(&self) -> Prf {
        let p = ratio(self.tp, self.tp + self.fp, 1.0);
        let r = ratio(self.tp, self.tp + self.fn_, 1.0);
        Prf::new(p, r)
    }
}

/// The snippets of one page: which `with` snippets the output misses and which `without`
/// snippets it contains, with the counts.
#[derive(Debug, Clone, Default)]
pub struct SnippetResult {
    /// The counts.
    pub counts: SnippetCounts,
    /// `with` snippets not found.
    pub missing: Vec<String>,
    /// `without` snippets found.
    pub unwanted: Vec<String>,
}

/// Scores `text` against a page's `with` and `without` snippets.
pub fn score_snippets<S: AsRef<str>>(text: &str, with: &[S], without: &[S]) -> SnippetResult {
    let hay = normalize_ws(text);
    let mut r = SnippetResult::default();
    for s in with {
        if hay.contains(&normalize_ws(s.as_ref())) {
            r.counts.tp += 1;
        } else {
            r.counts.fn_ += 1;
            r.missing.push(s.as_ref().to_string());
        }
    }
    for s in without {
        if hay.contains(&normalize_ws(s.as_ref())) {
            r.counts.fp += 1;
            r.unwanted.push(s.as_ref().to_string());
        } else {
            r.counts.tn += 1;
        }
    }
    r
}

/// A text block of a page that is all main text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBlock {
    /// Its text, whitespace-normalised.
    pub text: String,
    /// A heading (`h1`–`h6`), not a paragraph or a list item.
    pub heading: bool,
}

/// The blocks of one page: the counts over all blocks (`tp` found, `fn_` missing, `fp` output
/// lines in no block of the page), the same over paragraphs and list items only (headings
/// left out of `tp`/`fn_`: extractors differ by design on whether a title is text), and the
/// blocks missing.
#[derive(Debug, Clone, Default)]
pub struct BlockResult {
    /// Over all blocks.
    pub counts: SnippetCounts,
    /// Over the blocks that are not headings.
    pub body: SnippetCounts,
    /// Blocks not found in the output.
    pub missing: Vec<String>,
}

/// Scores `text` against a page all of whose `blocks` are main text (both sides NFC and
/// whitespace-normalised).
pub fn score_blocks(text: &str, blocks: &[TextBlock]) -> BlockResult {
    use unicode_normalization::UnicodeNormalization;
    let nfc = |s: &str| normalize_ws(&s.nfc().collect::<String>());
    let hay = nfc(text);
    let mut r = BlockResult::default();
    let mut joined = String::new();
    for b in blocks {
        let t = nfc(&b.text);
        let found = hay.contains(t.as_str());
        for (c, counted) in [(&mut r.counts, true), (&mut r.body, !b.heading)] {
            if counted {
                if found {
                    c.tp += 1;
                } else {
                    c.fn_ += 1;
                }
            }
        }
        joined.push_str(&t);
        joined.push('\n');
        if !found {
            r.missing.push(t);
        }
    }
    for line in text.lines().map(nfc).filter(|l| !l.is_empty()) {
        // the list marker trafilatura writes before a list item is not the page's text
        let line = line.strip_prefix("- ").unwrap_or(&line);
        if !joined.contains(line) {
            r.counts.fp += 1;
            r.body.fp += 1;
        }
    }
    r
}

/// The text blocks of a UDHR page of the `udhr` package: the content of every `p`, `h1`, `h2`
/// and `li` element that holds text and no other element (its generator writes each on one
/// line, without inline markup), entities decoded, in page order. The `title` (in `head`) is
/// not a block. Independent of the extractor's own lexer and tree, so it can be the ground
/// truth.
pub fn udhr_blocks(html: &str) -> Vec<TextBlock> {
    // (offset, block) so the blocks come back in page order
    let mut found: Vec<(usize, TextBlock)> = Vec::new();
    for tag in ["p", "h1", "h2", "li"] {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        let mut at = 0;
        while let Some(i) = html[at..].find(&open) {
            let start = at + i + open.len();
            at = start;
            let Some(lt) = html[start..].find('<') else {
                break;
            };
            if html[start + lt..].starts_with(&close) {
                let text =
                    normalize_ws(&html_escape::decode_html_entities(&html[start..start + lt]));
                if !text.is_empty() {
                    let heading = tag.starts_with('h');
                    found.push((start, TextBlock { text, heading }));
                }
            }
        }
    }
    found.sort_by_key(|(o, _)| *o);
    found.into_iter().map(|(_, b)| b).collect()
}

/// Precision, recall, F1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prf {
    /// Precision.
    pub p: f64,
    /// Recall.
    pub r: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub f1: f64,
}

impl Prf {
    /// From precision and recall.
    pub fn new(p: f64, r: f64) -> Prf {
        let f1 = if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        };
        Prf { p, r, f1 }
    }
}

fn ratio(a: u64, b: u64, empty: f64) -> f64 {
    if b == 0 { empty } else { a as f64 / b as f64 }
}

/// Word counts of the words benchmark: overlap, predicted and true words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordCounts {
    /// Words in both (multiset intersection).
    pub overlap: u64,
    /// Words of the output.
    pub predicted: u64,
    /// Words of the ground truth.
    pub truth: u64,
}

impl WordCounts {
    /// Adds `o`'s counts.
    pub fn add(&mut self, o: WordCounts) {
        self.overlap += o.overlap;
        self.predicted += o.predicted;
        self.truth += o.truth;
    }

    /// Precision, recall and F1 (an empty output has precision 1 only against an empty truth;
    /// an empty truth has recall 1).
    pub fn prf(&self) -> Prf {
        let p = if self.predicted == 0 {
            if self.truth == 0 { 1.0 } else { 0.0 }
        } else {
            self.overlap as f64 / self.predicted as f64
        };
        Prf::new(p, ratio(self.overlap, self.truth, 1.0))
    }
}

fn words(t: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for w in t
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
    {
        *m.entry(w.to_string()).or_insert(0) += 1;
    }
    m
}

/// Scores `text` against the ground-truth article text `truth` by words.
pub fn score_words(text: &str, truth: &str) -> WordCounts {
    let (p, t) = (words(text), words(truth));
    WordCounts {
        overlap: p
            .iter()
            .map(|(w, c)| (*c).min(*t.get(w).unwrap_or(&0)))
            .sum(),
        predicted: p.values().sum(),
        truth: t.values().sum(),
    }
}

/// Whether a page of the multilingual set is in the held-aside part (about a third of the
/// pages, chosen by a hash of the file name, not by content): extractor work is developed on
/// the other pages and the held-aside ones are reported separately.
pub fn held_aside(file: &str) -> bool {
    // FNV-1a, 64 bit: stable across platforms and versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in file.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.is_multiple_of(3)
}

/// Why a snippet is not in the output: what selection decided about the block(s) holding it.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Its text is in no block: inside an element skipped whole (script, template, hidden by
    /// the lexer), or its words are split differently.
    NotInBlocks,
    /// The blocks holding it were kept: `tag/flags` from the first one's owner up to the root.
    Kept(String),
    /// A block holding it was dropped: the fate, the block's owner element and the chain of
    /// `tag/flags` from it up to the root.
    Dropped {
        /// The decision.
        fate: Fate,
        /// The element that decided (the furniture element for [`Fate::Furniture`], else the
        /// block's owner).
        element: u32,
        /// `tag/flags` from that element up to the root.
        chain: String,
    },
}

/// Explains, for each of `snippets`, why extraction of `html` with `opts` does or does not
/// keep it.
pub fn explain(html: &str, opts: &ExtractorConfig, snippets: &[&str]) -> Vec<Why> {
    let mut page = crate::tree::build(html);
    let sel = crate::select::select(&mut page, opts);
    let fates = &sel.fates;
    // The blocks' normalised text joined by spaces, and where each block starts in it.
    let mut all = String::new();
    let mut starts = Vec::with_capacity(page.blocks.len());
    for b in &page.blocks {
        if !all.is_empty() {
            all.push(' ');
        }
        starts.push(all.len());
        all.push_str(&normalize_ws(&b.text));
    }
    snippets
        .iter()
        .map(|s| {
            let s = normalize_ws(s);
            let Some(at) = all.find(&s) else {
                return Why::NotInBlocks;
            };
            let first = starts.partition_point(|&o| o <= at).saturating_sub(1);
            let last = starts.partition_point(|&o| o < at + s.len()).saturating_sub(1);
            for (i, f) in fates.iter().enumerate().take(last + 1).skip(first) {
                if !matches!(*f, Fate::Kept | Fate::Added | Fate::Comment) {
                    let element = match *f {
                        Fate::Furniture(e) => e,
                        _ => page.blocks[i].owner,
                    };
                    let mut chain = String::new();
                    if *f == Fate::Outside {
                        // the chosen root, and how far up the two meet
                        let r = sel.roots[0];
                        let up = |mut x: u32| {
                            let mut v = vec![x];
                            while x != 0 {
                                x = page.els[x as usize].parent;
                                v.push(x);
                            }
                            v
                        };
                        let (a, b) = (up(element), up(r));
                        let meet = a.iter().position(|x| b.contains(x)).unwrap_or(0);
                        let rb = b.iter().position(|x| *x == a[meet]).unwrap_or(0);
                        chain.push_str(&format!(
                            "[root {r} {}/{} meets {meet} up from the block, {rb} up from the root] ",
                            page.els[r as usize].tag.name(),
                            page.els[r as usize].flags
                        ));
                    }
                    // the deciding element's start tag as written
                    let at = page.els[element as usize].at as usize;
                    if at > 0 && at <= html.len() {
                        let from = html[..at].rfind('<').unwrap_or(0);
                        let tag: String = html[from..at].chars().take(160).collect();
                        chain.push_str(&format!("{tag} "));
                    }
                    let mut e = element;
                    loop {
                        let el = &page.els[e as usize];
                        chain.push_str(&format!("{}/{} ", el.tag.name(), el.flags));
                        if e == 0 {
                            break;
                        }
                        e = el.parent;
                    }
                    return Why::Dropped {
                        fate: *f,
                        element,
                        chain: chain.trim_end().to_string(),
                    };
                }
            }
            let mut chain = String::new();
            let at = page.els[page.blocks[first].owner as usize].at as usize;
            if at > 0 && at <= html.len() {
                let from = html[..at].rfind('<').unwrap_or(0);
                chain.push_str(&html[from..at].chars().take(120).collect::<String>());
            }
            let mut e = page.blocks[first].owner;
            loop {
                let el = &page.els[e as usize];
                chain.push_str(&format!(" {}/{}", el.tag.name(), el.flags));
                if sel.roots.contains(&e) {
                    chain.push_str("[root]");
                }
                if e == 0 {
                    break;
                }
                e = el.parent;
            }
            Why::Kept(format!("{:?} {chain}", fates[first]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_match_after_whitespace_normalisation() {
        let text = "Title\n\nThe  first   line\nof text.\nFooter © 2024";
        let r = score_snippets(
            text,
            &["The first line of text.", "absent"],
            &["© 2024", "Menu"],
        );
        assert_eq!(
            r.counts,
            SnippetCounts {
                tp: 1,
                fn_: 1,
                fp: 1,
                tn: 1
            }
        );
        assert_eq!(r.missing, ["absent"]);
        assert_eq!(r.unwanted, ["© 2024"]);
        let prf = r.counts.prf();
        assert_eq!((prf.p, prf.r, prf.f1), (0.5, 0.5, 0.5));
    }

    #[test]
    fn blocks_count_missing_blocks_and_lines_from_nowhere() {
        let html = "<html><head><title>Not a block</title></head><body>\n<h1>Universal &amp; Declaration</h1>\n<header><p>Whereas  recognition</p></header>\n<ol>\n<li>\n<p>Everyone has the right.</p>\n</li>\n<li>Short item</li>\n</ol>\n</body></html>";
        let blocks = udhr_blocks(html);
        let texts: Vec<(&str, bool)> = blocks.iter().map(|b| (&*b.text, b.heading)).collect();
        assert_eq!(
            texts,
            [
                ("Universal & Declaration", true),
                ("Whereas recognition", false),
                ("Everyone has the right.", false),
                ("Short item", false)
            ]
        );
        // `u` + combining diaeresis in the output matches a precomposed `ü` in a block
        let out = "Universal & Declaration\nWhereas recognition\n- Everyone has the right.\nMenu\nShort ite\u{6d}";
        let r = score_blocks(out, &blocks);
        assert_eq!((r.counts.tp, r.counts.fn_, r.counts.fp), (4, 0, 1));
        // the title missing: a heading, so not in the body's counts
        let r = score_blocks(&out[24..], &blocks);
        assert_eq!((r.counts.tp, r.counts.fn_, r.counts.fp), (3, 1, 1));
        assert_eq!((r.body.tp, r.body.fn_, r.body.fp), (3, 0, 1));
        let block = |t: &str| TextBlock {
            text: t.into(),
            heading: false,
        };
        let r = score_blocks("Gru\u{308}\u{df}e", &[block("Grüße"), block("absent")]);
        assert_eq!((r.counts.tp, r.counts.fn_, r.counts.fp), (1, 1, 0));
        assert_eq!(r.missing, ["absent"]);
    }

    #[test]
    fn words_are_multisets() {
        let c = score_words("the cat the dog", "The cat sat; the end");
        assert_eq!(
            c,
            WordCounts {
                overlap: 3,
                predicted: 4,
                truth: 5
            }
        );
        assert_eq!(score_words("", "").prf().f1, 1.0);
        assert_eq!(score_words("", "x").prf().p, 0.0);
    }

    #[test]
    fn the_held_aside_part_is_about_a_third_and_stable() {
        let n = (0..300)
            .filter(|i| held_aside(&format!("page{i}.html")))
            .count();
        assert!((70..130).contains(&n), "{n}");
        assert_eq!(held_aside("a.html"), held_aside("a.html"));
    }
}
