//! From tokens to a light element tree and the text blocks under it: every run of text
//! between block-level boundaries becomes a [`Block`] owned by its innermost block element,
//! with its length and how much of it is link text. Unbalanced markup is repaired the way it
//! matters here: an end tag closes up to its matching open element (or is ignored), and a new
//! `p`/`li`/`td`… closes an open one.

use crate::lexer::{Attrs, Lexer, Token};
use crate::patterns::{Hint, hint, weak_words};
use crate::tags::Tag;
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

// Flags of an element ([`El::flags`]).
/// The element is page furniture by its tag (`nav`, `aside`, `footer`, `form`…).
pub const FURNITURE: u8 = 1;
/// Its attributes say boilerplate ([`Hint::Boiler`]), and it is not `article`/`main`.
pub const BOILER: u8 = 2;
/// `article`, `main`, or attributes that suggest content.
pub const CONTENT: u8 = 4;
/// Hidden (`hidden`, `aria-hidden="true"`, inline `display:none`).
pub const HIDDEN: u8 = 8;
/// Attributes that mark the article body ([`Hint::StrongContent`]).
pub const STRONG_CONTENT: u8 = 16;
/// The readers' comments ([`Hint::Comments`]), and not `article`/`main`.
pub const COMMENTS: u8 = 32;
/// Attributes that may mean furniture ([`Hint::WeakBoiler`]): selection decides by the
/// element's text whether it becomes [`BOILER`].
pub const WEAK: u8 = 64;

/// An element of the tree.
#[derive(Debug, Clone)]
pub struct El {
    /// The element.
    pub tag: Tag,
    /// Index of its parent in [`Page::els`] (the root, 0, is its own parent).
    pub parent: u32,
    /// Depth below the root.
    pub depth: u16,
    /// Its own flags.
    pub flags: u8,
    /// Score for holding the article (filled by selection).
    pub score: f32,
    /// Characters of text in blocks below it (filled by selection).
    pub chars: u32,
    /// Byte offset in the page just after its start tag (for diagnostics).
    pub at: u32,
    /// The weak furniture words its attributes use ([`weak_words`]).
    pub weak: u16,
    /// Of those, characters inside links (filled by selection).
    pub link_chars: u32,
    /// For an element extraction does not distinguish ([`Tag::Other`]: MathML, custom
    /// elements), a hash of its lower-case name, so that its end tag closes it; else 0.
    pub other: u32,
}

/// FNV-1a of an element name, lower-cased; never 0 (0 means "a known element").
fn name_hash(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &c in name.as_bytes() {
        h ^= c.to_ascii_lowercase() as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// A run of text inside one block element.
#[derive(Debug, Clone)]
pub struct Block {
    /// The innermost open block element when the text was read.
    pub owner: u32,
    /// The text, entities decoded and whitespace collapsed (outside `pre`).
    pub text: String,
    /// Its length in characters.
    pub chars: u32,
    /// Characters of it inside links.
    pub link_chars: u32,
    /// Inside a `pre`: whitespace kept.
    pub pre: bool,
}

/// The page as elements and blocks.
#[derive(Debug, Default)]
pub struct Page {
    /// Elements in document order; index 0 is the root.
    pub els: Vec<El>,
    /// Text blocks in document order.
    pub blocks: Vec<Block>,
    /// The first `<title>`'s text.
    pub title: Option<String>,
}

struct Builder {
    page: Page,
    stack: Vec<u32>,
    text: String,
    link_chars: u32,
    links_open: u32,
    pre_open: u32,
    /// Open hidden inline elements: their text is not the page's (a formula's MathML kept
    /// for screen readers beside its image, a collapsed label inside a sentence).
    hidden_inline: u32,
    pending_space: bool,
    /// Offset just after the token being handled.
    at: u32,
}

/// Decodes character references in `raw` and drops soft hyphens (U+00AD, `&shy;`: invisible
/// break hints inside words, which would split every hyphenated word of the text).
fn decode(raw: &str) -> std::borrow::Cow<'_, str> {
    let t = if raw.contains('&') {
        html_escape::decode_html_entities(raw)
    } else {
        std::borrow::Cow::Borrowed(raw)
    };
    if t.contains('\u{ad}') {
        std::borrow::Cow::Owned(t.replace('\u{ad}', ""))
    } else {
        t
    }
}

impl Builder {
    fn top(&self) -> u32 {
        *self.stack.last().expect("the root stays open")
    }

    fn owner(&self) -> u32 {
        self.stack
            .iter()
            .rev()
            .copied()
            .find(|&e| self.page.els[e as usize].tag.breaks())
            .unwrap_or(0)
    }

    /// Ends the current block.
    fn flush(&mut self) {
        let t = self.text.trim_end();
        if !t.is_empty() {
            // NFC: pages written on some systems spell `ü` as `u` + a combining diaeresis;
            // the text means the same and must read (and tokenize) the same
            let text = if t.is_ascii() || is_nfc_quick(t.chars()) == IsNormalized::Yes {
                t.to_string()
            } else {
                t.nfc().collect()
            };
            let chars = text.chars().count() as u32;
            self.page.blocks.push(Block {
                owner: self.owner(),
                chars,
                link_chars: self.link_chars.min(chars),
                text,
                pre: self.pre_open > 0,
            });
        }
        self.text.clear();
        self.link_chars = 0;
        self.pending_space = false;
    }

    fn push(&mut self, tag: Tag, name: &str, attrs: &Attrs<'_>) {
        let parent = self.top();
        let mut flags = 0;
        if tag.is_furniture() {
            flags |= FURNITURE;
        }
        if attrs.hidden {
            flags |= HIDDEN;
        }
        match tag {
            Tag::Article | Tag::Main => flags |= CONTENT,
            _ => {}
        }
        // a heading's id is an anchor for a table of contents (`nav_part_2`, `toc-…`), not a
        // description of the heading
        let attrs = &if tag.is_heading() {
            Attrs { id: "", ..*attrs }
        } else {
            *attrs
        };
        match hint(attrs) {
            Hint::StrongContent => flags |= CONTENT | STRONG_CONTENT,
            Hint::Content => flags |= CONTENT,
            // `article`/`main` keep their meaning whatever their class says
            Hint::Boiler if flags & CONTENT == 0 => flags |= BOILER,
            Hint::Comments if flags & CONTENT == 0 => flags |= COMMENTS,
            Hint::WeakBoiler if flags & CONTENT == 0 => flags |= WEAK,
            Hint::Boiler | Hint::Comments | Hint::WeakBoiler | Hint::None => {}
        }
        let depth = self.page.els[parent as usize].depth.saturating_add(1);
        self.page.els.push(El {
            tag,
            parent,
            depth,
            flags,
            score: 0.0,
            chars: 0,
            at: self.at,
            weak: weak_words(attrs),
            link_chars: 0,
            other: if tag == Tag::Other {
                name_hash(name)
            } else {
                0
            },
        });
        self.stack.push(self.page.els.len() as u32 - 1);
        if tag == Tag::A {
            self.links_open += 1;
        }
        if tag == Tag::Pre {
            self.pre_open += 1;
        }
        if flags & HIDDEN != 0 && !tag.breaks() {
            self.hidden_inline += 1;
        }
    }

    /// Pops elements down to (and including) the one at stack index `k`.
    fn pop_to(&mut self, k: usize) {
        let block = self.stack[k..]
            .iter()
            .any(|&e| self.page.els[e as usize].tag.breaks());
        if block {
            self.flush();
        }
        for &e in &self.stack[k..] {
            let el = &self.page.els[e as usize];
            match el.tag {
                Tag::A => self.links_open = self.links_open.saturating_sub(1),
                Tag::Pre => self.pre_open = self.pre_open.saturating_sub(1),
                _ => {}
            }
            if el.flags & HIDDEN != 0 && !el.tag.breaks() {
                self.hidden_inline = self.hidden_inline.saturating_sub(1);
            }
        }
        self.stack.truncate(k.max(1));
    }

    /// Stack index of the nearest open `tag`, not looking past any of `stop`.
    fn find_open(&self, tag: Tag, stop: &[Tag]) -> Option<usize> {
        for (k, &e) in self.stack.iter().enumerate().rev().take(64) {
            let t = self.page.els[e as usize].tag;
            if t == tag {
                return (k > 0).then_some(k);
            }
            if stop.contains(&t) {
                return None;
            }
        }
        None
    }

    fn start(&mut self, tag: Tag, name: &str, attrs: &Attrs<'_>, self_closing: bool) {
        if tag.is_void() {
            match tag {
                Tag::Br => {
                    self.text.push('\n');
                    self.pending_space = false;
                }
                Tag::Hr => self.flush(),
                _ => {}
            }
            return;
        }
        // Implied end tags.
        let implied = match tag {
            Tag::P => self.find_open(
                Tag::P,
                &[Tag::Div, Tag::Td, Tag::Li, Tag::Article, Tag::Section],
            ),
            Tag::Li => self.find_open(Tag::Li, &[Tag::Ul, Tag::Ol, Tag::Menu]),
            Tag::Dt | Tag::Dd => self
                .find_open(Tag::Dd, &[Tag::Dl])
                .or_else(|| self.find_open(Tag::Dt, &[Tag::Dl])),
            Tag::Td | Tag::Th => self
                .find_open(Tag::Td, &[Tag::Tr, Tag::Table])
                .or_else(|| self.find_open(Tag::Th, &[Tag::Tr, Tag::Table])),
            Tag::Tr => self.find_open(Tag::Tr, &[Tag::Table]),
            Tag::A => self.find_open(Tag::A, &[Tag::Div, Tag::P, Tag::Li, Tag::Td]),
            _ => None,
        };
        if let Some(k) = implied {
            self.pop_to(k);
        }
        if tag.breaks() {
            self.flush();
        } else if tag.is_cell() {
            self.pending_space = true;
        }
        if self_closing || tag.is_raw_text() {
            // a raw-text element's content and end tag are consumed by the lexer
            return;
        }
        self.push(tag, name, attrs);
    }

    fn end(&mut self, tag: Tag, name: &str) {
        if tag.is_void() {
            if tag == Tag::Br {
                self.text.push('\n');
            }
            return;
        }
        if tag == Tag::Other {
            // An unknown element (MathML's `mi`, a custom element) closes up to its own start
            // tag, not past an open block element: left open, each would stay on the stack,
            // and a formula's hundreds of them would hide the element a later end tag closes.
            let h = name_hash(name);
            for (k, &e) in self.stack.iter().enumerate().rev().take(64) {
                let el = &self.page.els[e as usize];
                if el.other == h {
                    if k > 0 {
                        self.pop_to(k);
                    }
                    return;
                }
                if el.tag.breaks() {
                    return;
                }
            }
            return;
        }
        if let Some(k) = self.find_open(tag, &[]) {
            self.pop_to(k);
        } else if tag.breaks() {
            self.flush();
        }
    }

    fn text(&mut self, raw: &str) {
        if self.hidden_inline > 0 {
            return;
        }
        let t = decode(raw);
        if self.pre_open > 0 {
            self.text.push_str(&t);
            if self.links_open > 0 {
                self.link_chars += t.chars().count() as u32;
            }
            return;
        }
        let mut added = 0u32;
        let starts_space = t.starts_with(char::is_whitespace);
        for (i, w) in t.split_whitespace().enumerate() {
            let space = if i == 0 {
                self.pending_space || starts_space
            } else {
                true
            };
            if space && !self.text.is_empty() && !self.text.ends_with('\n') {
                self.text.push(' ');
                added += 1;
            }
            self.text.push_str(w);
            added += w.chars().count() as u32;
        }
        self.pending_space =
            t.ends_with(char::is_whitespace) || (self.pending_space && t.trim().is_empty());
        if self.links_open > 0 {
            self.link_chars += added;
        }
    }
}

/// Builds the page of `html`.
pub fn build(html: &str) -> Page {
    let mut b = Builder {
        page: Page::default(),
        stack: vec![0],
        text: String::new(),
        link_chars: 0,
        links_open: 0,
        pre_open: 0,
        hidden_inline: 0,
        pending_space: false,
        at: 0,
    };
    b.page.els.push(El {
        tag: Tag::Html,
        parent: 0,
        depth: 0,
        flags: 0,
        score: 0.0,
        chars: 0,
        at: 0,
        weak: 0,
        link_chars: 0,
        other: 0,
    });
    let mut lex = Lexer::new(html);
    while let Some(tok) = lex.next() {
        b.at = lex.offset().min(u32::MAX as usize) as u32;
        match tok {
            Token::Start {
                tag: Tag::Title, ..
            } => {
                // the lexer skips the title's text as raw text; read it here
                if b.page.title.is_none() {
                    b.page.title = lex.raw_text().map(|t| decode(t.trim()).into_owned());
                }
            }
            Token::Start {
                tag,
                name,
                attrs,
                self_closing,
            } => b.start(tag, name, &attrs, self_closing),
            Token::End { tag, name } => b.end(tag, name),
            Token::Text(t) => b.text(t),
        }
    }
    b.flush();
    b.page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(p: &Page) -> Vec<&str> {
        p.blocks.iter().map(|b| b.text.as_str()).collect()
    }

    #[test]
    fn unknown_elements_close_at_their_own_end_tags() {
        // a formula of many MathML elements: each closes, so the `</span>` and `</dd>` after it
        // still find their elements and the next paragraph is not inside the formula's span
        let mi = "<mi>x</mi>".repeat(100);
        let h = format!(
            "<dl><dd><span class=f><math>{mi}</math></span></dd></dl><p>After the formula.</p>"
        );
        let p = build(&h);
        let last = p.blocks.last().expect("blocks");
        assert_eq!(last.text, "After the formula.");
        assert_eq!(p.els[last.owner as usize].tag, Tag::P);
        assert_eq!(
            p.els[p.els[last.owner as usize].parent as usize].tag,
            Tag::Html
        );
        // a custom element's end tag does not close the block elements it holds
        let p = build("<my-card><div><p>One</p>tail</div></my-card><p>Two</p>");
        assert_eq!(texts(&p), ["One", "tail", "Two"]);
    }

    #[test]
    fn text_of_hidden_inline_elements_is_not_the_pages() {
        let p = build(
            "<p>Given a set of <span style=\"display: none\"><math><mi>N</mi></math></span>\
             <img alt=N> objects, <span hidden>secret</span>it computes.</p>",
        );
        assert_eq!(texts(&p), ["Given a set of objects, it computes."]);
        // a hidden block element keeps its block (selection drops it, and says so)
        let p = build("<div hidden><p>Menu text</p></div><p>Body</p>");
        assert_eq!(texts(&p), ["Menu text", "Body"]);
    }

    #[test]
    fn a_headings_id_is_an_anchor_not_a_hint() {
        let p = build("<h3 class=subheading id=nav_part_two>Part two</h3><div id=nav>Menu</div>");
        let flags = |t: Tag| p.els.iter().find(|e| e.tag == t).map(|e| e.flags);
        assert_eq!(flags(Tag::H3), Some(0));
        assert_eq!(flags(Tag::Div), Some(BOILER));
    }

    #[test]
    fn text_is_nfc() {
        let p = build("<p>Besonders bei Babyschalen sollte gepru\u{308}ft werden.</p>");
        assert_eq!(
            texts(&p),
            ["Besonders bei Babyschalen sollte geprüft werden."]
        );
        assert_eq!(p.blocks[0].chars, 48);
    }
}
