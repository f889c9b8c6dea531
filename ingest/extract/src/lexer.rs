//! A forgiving HTML tokenizer over bytes: start tags (with the few attributes extraction looks
//! at), end tags and text. Comments, doctypes, processing instructions and the contents of
//! raw-text elements (`script`, `style`, …) are skipped without being tokenized. Malformed
//! markup never fails: what cannot be a tag is text, as browsers treat it.

use memchr::{memchr, memmem};

use crate::tags::Tag;

/// The attributes extraction uses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attrs<'a> {
    /// `class` (empty when absent).
    pub class: &'a str,
    /// `id` (empty when absent).
    pub id: &'a str,
    /// `role` (empty when absent).
    pub role: &'a str,
    /// `itemprop` (empty when absent).
    pub itemprop: &'a str,
    /// `hidden`, `aria-hidden="true"` or an inline `display:none`.
    pub hidden: bool,
}

/// One token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A start tag.
    Start {
        /// The element.
        tag: Tag,
        /// Its name as written (any case).
        name: &'a str,
        /// Its attributes that extraction reads.
        attrs: Attrs<'a>,
        /// Written `<tag/>`.
        self_closing: bool,
    },
    /// An end tag.
    End {
        /// The element.
        tag: Tag,
        /// Its name as written (any case).
        name: &'a str,
    },
    /// Raw text (entities not yet decoded).
    Text(&'a str),
}

/// Tokenizer state: a position in the page.
#[derive(Debug)]
pub struct Lexer<'a> {
    html: &'a str,
    pos: usize,
    /// A raw-text element was opened: skip to its end tag next.
    raw: Option<Tag>,
}

impl<'a> Lexer<'a> {
    /// A tokenizer at the start of `html`.
    pub fn new(html: &'a str) -> Self {
        Lexer {
            html,
            pos: 0,
            raw: None,
        }
    }

    /// The byte offset in the page where the next token starts (just after the last one).
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn bytes(&self) -> &'a [u8] {
        self.html.as_bytes()
    }

    /// Skips past the end tag of raw-text element `tag` (case-insensitive `</name`); returns
    /// the content skipped.
    fn skip_raw(&mut self, tag: Tag) -> &'a str {
        let name = tag.name().as_bytes();
        let b = self.bytes();
        let from = self.pos;
        let mut at = self.pos;
        while let Some(i) = memmem::find(&b[at..], b"</") {
            let s = at + i + 2;
            let end = s + name.len();
            if end <= b.len() && b[s..end].eq_ignore_ascii_case(name) {
                // to the closing '>'
                self.pos = memchr(b'>', &b[end..]).map_or(b.len(), |j| end + j + 1);
                return &self.html[from..s - 2];
            }
            at = s;
        }
        self.pos = b.len();
        &self.html[from..]
    }

    /// After the start tag of a raw-text element: its content (e.g. a `title`'s text),
    /// consuming it and the end tag.
    pub fn raw_text(&mut self) -> Option<&'a str> {
        self.raw.take().map(|t| self.skip_raw(t))
    }
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b':' || c == b'_'
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if let Some(t) = self.raw.take() {
            let _ = self.skip_raw(t);
        }
        let b = self.bytes();
        loop {
            if self.pos >= b.len() {
                return None;
            }
            let start = self.pos;
            if b[start] != b'<' {
                let end = memchr(b'<', &b[start..]).map_or(b.len(), |i| start + i);
                self.pos = end;
                // `<` is ASCII, so both ends are char boundaries.
                return Some(Token::Text(&self.html[start..end]));
            }
            let rest = &b[start + 1..];
            match rest.first() {
                Some(b'!') => {
                    // comment, doctype or CDATA
                    self.pos = if rest.starts_with(b"!--") {
                        memmem::find(&rest[3..], b"-->").map_or(b.len(), |i| start + 4 + i + 3)
                    } else {
                        memchr(b'>', rest).map_or(b.len(), |i| start + 1 + i + 1)
                    };
                    continue;
                }
                Some(b'?') => {
                    self.pos = memchr(b'>', rest).map_or(b.len(), |i| start + 1 + i + 1);
                    continue;
                }
                Some(b'/') => {
                    let n = rest[1..].iter().take_while(|&&c| is_name_byte(c)).count();
                    let close = memchr(b'>', rest).map_or(b.len(), |i| start + 1 + i + 1);
                    self.pos = close;
                    if n == 0 {
                        continue; // `</>` or `</ x>`: ignored
                    }
                    let tag = Tag::from_name(&rest[1..1 + n]);
                    // name bytes are ASCII: the slice is on char boundaries
                    let name = &self.html[start + 2..start + 2 + n];
                    return Some(Token::End { tag, name });
                }
                Some(c) if c.is_ascii_alphabetic() => {
                    let n = rest.iter().take_while(|&&c| is_name_byte(c)).count();
                    let tag = Tag::from_name(&rest[..n]);
                    let (attrs, end, self_closing) = self.attributes(start + 1 + n, tag);
                    self.pos = end;
                    if tag.is_raw_text() && !self_closing {
                        self.raw = Some(tag);
                    }
                    return Some(Token::Start {
                        tag,
                        name: &self.html[start + 1..start + 1 + n],
                        attrs,
                        self_closing,
                    });
                }
                _ => {
                    // a lone '<': text
                    let end = memchr(b'<', &b[start + 1..]).map_or(b.len(), |i| start + 1 + i);
                    self.pos = end;
                    return Some(Token::Text(&self.html[start..end]));
                }
            }
        }
    }
}

impl<'a> Lexer<'a> {
    /// Parses attributes from `at` to the tag's `>`; returns them, the position after `>` and
    /// whether the tag ends in `/>`.
    fn attributes(&self, mut at: usize, tag: Tag) -> (Attrs<'a>, usize, bool) {
        let b = self.bytes();
        let mut attrs = Attrs::default();
        let want = tag.wants_attributes();
        loop {
            while at < b.len() && (b[at].is_ascii_whitespace() || b[at] == b'/') {
                if b[at] == b'/' && b.get(at + 1) == Some(&b'>') {
                    return (attrs, at + 2, true);
                }
                at += 1;
            }
            if at >= b.len() {
                return (attrs, b.len(), false);
            }
            if b[at] == b'>' {
                return (attrs, at + 1, false);
            }
            let name_start = at;
            while at < b.len()
                && !b[at].is_ascii_whitespace()
                && !matches!(b[at], b'=' | b'>' | b'/')
            {
                at += 1;
            }
            let name = &b[name_start..at];
            while at < b.len() && b[at].is_ascii_whitespace() {
                at += 1;
            }
            let mut value = "";
            if at < b.len() && b[at] == b'=' {
                at += 1;
                while at < b.len() && b[at].is_ascii_whitespace() {
                    at += 1;
                }
                if at < b.len() && (b[at] == b'"' || b[at] == b'\'') {
                    let q = b[at];
                    let vs = at + 1;
                    let ve = memchr(q, &b[vs..]).map_or(b.len(), |i| vs + i);
                    value = &self.html[vs..ve];
                    at = (ve + 1).min(b.len());
                } else {
                    let vs = at;
                    while at < b.len() && !b[at].is_ascii_whitespace() && b[at] != b'>' {
                        at += 1;
                    }
                    value = self.html.get(vs..at).unwrap_or("");
                }
            }
            if want {
                if name.eq_ignore_ascii_case(b"class") {
                    attrs.class = value;
                } else if name.eq_ignore_ascii_case(b"id") {
                    attrs.id = value;
                } else if name.eq_ignore_ascii_case(b"role") {
                    attrs.role = value;
                } else if name.eq_ignore_ascii_case(b"itemprop") {
                    attrs.itemprop = value;
                } else if name.eq_ignore_ascii_case(b"hidden") {
                    attrs.hidden = true;
                } else if name.eq_ignore_ascii_case(b"aria-hidden") {
                    attrs.hidden |= value.eq_ignore_ascii_case("true");
                } else if name.eq_ignore_ascii_case(b"style") {
                    let v = value.as_bytes();
                    attrs.hidden |= memmem::find(v, b"display:none").is_some()
                        || memmem::find(v, b"display: none").is_some();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(h: &str) -> Vec<Token<'_>> {
        Lexer::new(h).collect()
    }

    #[test]
    fn tags_text_and_attributes() {
        let t = tokens("<DIV class='a b' id=main><p>x &amp; y</p><br/><!-- c --></div>");
        assert_eq!(
            t[0],
            Token::Start {
                tag: Tag::Div,
                name: "DIV",
                attrs: Attrs {
                    class: "a b",
                    id: "main",
                    ..Default::default()
                },
                self_closing: false
            }
        );
        assert_eq!(t[2], Token::Text("x &amp; y"));
        assert!(matches!(
            t[4],
            Token::Start {
                tag: Tag::Br,
                self_closing: true,
                ..
            }
        ));
        assert_eq!(
            t.last(),
            Some(&Token::End {
                tag: Tag::Div,
                name: "div"
            })
        );
        assert_eq!(t.len(), 6, "{t:?}");
    }

    #[test]
    fn raw_text_is_skipped_and_broken_markup_is_text() {
        let t = tokens("<script>if (a<b) { x = '</p>'; }</SCRIPT>ok < 3 <style>p{}</style>");
        assert!(matches!(
            t[0],
            Token::Start {
                tag: Tag::Script,
                ..
            }
        ));
        assert_eq!(t[1], Token::Text("ok "));
        assert_eq!(t[2], Token::Text("< 3 "));
        assert_eq!(t.len(), 4, "{t:?}");
        // unterminated everything: no panic, the rest is consumed
        for h in [
            "<div class=\"x",
            "<!-- never closed",
            "<script>var a",
            "</",
            "<a href=x",
        ] {
            let _ = tokens(h);
        }
    }

    #[test]
    fn hidden_elements_are_flagged() {
        for h in [
            "<div hidden>",
            "<div aria-hidden=\"true\">",
            "<div style=\"color:red; display:none\">",
        ] {
            match tokens(h)[0] {
                Token::Start { attrs, .. } => assert!(attrs.hidden, "{h}"),
                _ => panic!(),
            }
        }
    }
}
