//! A URL blocklist: blocked domains (with their subdomains), banned words and banned
//! substrings, read from text files.
//!
//! A blocklist file has one entry per line; blank lines and lines starting with `#` are
//! ignored, and so is the rest of a line after ` #`:
//!
//! ```text
//! # domains: the domain and every subdomain of it
//! example.com
//! domain:ads.example.org
//! # words: a whole word of the lowercased URL (split at characters that are not letters or digits)
//! word:casino
//! # substrings: anywhere in the lowercased URL
//! substring:xxx
//! ```
//!
//! This is the shape of datatrove's `URLFilter` (blocked domains, banned words, banned
//! subwords) without its bundled lists and without public-suffix handling: a domain entry
//! blocks exactly the hosts equal to it or ending with `.` + it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::filter::{Doc, Filter, Kind};
use crate::verdict::Drop;

/// Where the blocklists are; [`UrlFilterConfig::build`] reads them.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlFilterConfig {
    /// When false, the built filter keeps every URL.
    pub enabled: bool,
    /// Blocklist files, all applied.
    pub blocklists: Vec<PathBuf>,
}

impl Default for UrlFilterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            blocklists: Vec::new(),
        }
    }
}

impl UrlFilterConfig {
    /// Reads the blocklists; an unreadable file or a bad line is an error naming the file and
    /// line.
    pub fn build(&self) -> Result<UrlFilter> {
        let mut filter = UrlFilter::from_files(&self.blocklists)?;
        filter.enabled = self.enabled;
        Ok(filter)
    }
}

/// Blocks URLs by domain, word or substring (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct UrlFilter {
    enabled: bool,
    domains: HashSet<String>,
    words: HashSet<String>,
    substrings: Vec<String>,
    matcher: Option<AhoCorasick>,
}

/// The entries of blocklists being read.
#[derive(Default)]
struct Entries {
    domains: HashSet<String>,
    words: HashSet<String>,
    substrings: Vec<String>,
}

impl Entries {
    fn add_text(&mut self, source: &str, text: &[u8]) -> Result<()> {
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let bad = |message: String| Error::Blocklist {
                source_name: source.to_owned(),
                line: i + 1,
                message,
            };
            let line = std::str::from_utf8(raw).map_err(|e| bad(format!("not UTF-8 ({e})")))?;
            let line = line.split(" #").next().unwrap_or_default().trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kind, value) = match line.split_once(':') {
                // A URL where a domain was meant: let the domain check explain.
                _ if line.contains("://") => ("domain", line),
                Some((kind, value)) => (kind.trim(), value.trim()),
                None => ("domain", line),
            };
            if value.is_empty() {
                return Err(bad(format!("`{kind}:` without a value")));
            }
            let value = value.to_lowercase();
            match kind {
                "domain" => {
                    let domain = normalize_domain(&value)
                        .map_err(|why| bad(format!("{value:?} is not a domain: {why}")))?;
                    self.domains.insert(domain);
                }
                "word" => {
                    if let Some(c) = value.chars().find(|c| !c.is_alphanumeric()) {
                        return Err(bad(format!(
                            "word {value:?} contains {c:?}; URL words are split at non-alphanumeric characters, so it could never match (use `substring:`)"
                        )));
                    }
                    self.words.insert(value);
                }
                "substring" => self.substrings.push(value),
                other => {
                    return Err(bad(format!(
                        "unknown entry kind `{other}:` (expected `domain:`, `word:` or `substring:`)"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Lowercased domain without a leading `*.` or a trailing `.`, or why it is not one.
fn normalize_domain(value: &str) -> std::result::Result<String, &'static str> {
    let domain = value
        .strip_prefix("*.")
        .unwrap_or(value)
        .trim_end_matches('.');
    if domain.is_empty() {
        return Err("empty");
    }
    if domain.contains("://") || domain.contains('/') {
        return Err("give the host without a scheme or path");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if !label
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        {
            return Err("a label has a character other than letters, digits, '-' and '_'");
        }
    }
    Ok(domain.to_owned())
}

/// The host of a URL: after the scheme and user info, before the port and path; lowercased,
/// without a trailing dot. `None` when there is none.
fn host(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = match url.find("://") {
        Some(i)
            if url[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            &url[i + 3..]
        }
        _ => url.strip_prefix("//").unwrap_or(url),
    };
    let authority = &rest[..rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())];
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(inner) = authority.strip_prefix('[') {
        &inner[..inner.find(']').unwrap_or(inner.len())]
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    let host = host.trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_lowercase())
}

impl UrlFilter {
    const NAME: &'static str = "url";

    /// Reads and merges blocklist files.
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let mut entries = Entries::default();
        for path in paths {
            let path = path.as_ref();
            let bytes = std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?;
            entries.add_text(&path.display().to_string(), &bytes)?;
        }
        Self::from_entries(entries)
    }

    /// Parses blocklist text; `source` names it in errors (a file name, `"inline"`).
    pub fn parse(source: &str, text: &str) -> Result<Self> {
        let mut entries = Entries::default();
        entries.add_text(source, text.as_bytes())?;
        Self::from_entries(entries)
    }

    fn from_entries(entries: Entries) -> Result<Self> {
        let matcher = if entries.substrings.is_empty() {
            None
        } else {
            let built = AhoCorasick::new(&entries.substrings).map_err(|e| Error::Config {
                filter: Self::NAME,
                field: "blocklists",
                message: format!("substrings: {e}"),
            })?;
            Some(built)
        };
        Ok(Self {
            enabled: true,
            domains: entries.domains,
            words: entries.words,
            substrings: entries.substrings,
            matcher,
        })
    }

    /// Number of domain, word and substring entries.
    pub fn len(&self) -> (usize, usize, usize) {
        (self.domains.len(), self.words.len(), self.substrings.len())
    }

    /// Whether there is no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }

    /// Keeps the URL, or says which kind of entry blocks it (`domain`, `word` or `substring`).
    pub fn check(&self, url: &str) -> std::result::Result<(), Drop> {
        if !self.enabled || self.is_empty() {
            return Ok(());
        }
        if !self.domains.is_empty()
            && let Some(host) = host(url)
        {
            let mut suffix = host.as_str();
            loop {
                if self.domains.contains(suffix) {
                    return Err(Drop::matched(Self::NAME, "domain"));
                }
                match suffix.split_once('.') {
                    Some((_, parent)) => suffix = parent,
                    None => break,
                }
            }
        }
        let lower = url.to_lowercase();
        if !self.words.is_empty()
            && lower
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| self.words.contains(w))
        {
            return Err(Drop::matched(Self::NAME, "word"));
        }
        if let Some(matcher) = &self.matcher
            && matcher.is_match(&lower)
        {
            return Err(Drop::matched(Self::NAME, "substring"));
        }
        Ok(())
    }
}

impl Filter for UrlFilter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn kind(&self) -> Kind {
        Kind::Url
    }

    /// A document without a URL has nothing to block.
    fn apply(&self, doc: &mut Doc<'_>) -> std::result::Result<(), Drop> {
        doc.url.map_or(Ok(()), |url| self.check(url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "# test list\nexample.com\n\ndomain:*.Ads.Example.ORG.  # trailing comment\nword:casino\nsubstring:xxx\n";

    fn rule(f: &UrlFilter, url: &str) -> Option<&'static str> {
        f.check(url).err().map(|d| d.rule)
    }

    #[test]
    fn domains_block_themselves_and_subdomains() {
        let f = UrlFilter::parse("inline", LIST).unwrap();
        assert_eq!(f.len(), (2, 1, 1));
        assert_eq!(rule(&f, "https://example.com/"), Some("domain"));
        assert_eq!(
            rule(&f, "http://user:pw@WWW.Example.com.:8080/path?q=1"),
            Some("domain")
        );
        assert_eq!(rule(&f, "example.com/page"), Some("domain"));
        assert_eq!(
            rule(&f, "https://tracker.ads.example.org/x"),
            Some("domain")
        );
        assert_eq!(rule(&f, "https://example.org/"), None);
        assert_eq!(rule(&f, "https://notexample.com/"), None);
        assert_eq!(rule(&f, "https://example.com.evil.net/"), None);
        assert_eq!(rule(&f, "https://[2001:db8::1]:443/"), None);
    }

    #[test]
    fn words_match_whole_url_words() {
        let f = UrlFilter::parse("inline", LIST).unwrap();
        assert_eq!(rule(&f, "https://news.net/best-CASINO-games"), Some("word"));
        assert_eq!(rule(&f, "https://news.net/casinos"), None);
    }

    #[test]
    fn substrings_match_anywhere() {
        let f = UrlFilter::parse("inline", LIST).unwrap();
        assert_eq!(rule(&f, "https://fooXXXbar.net/"), Some("substring"));
        assert_eq!(rule(&f, "https://foo.net/xx"), None);
    }

    #[test]
    fn disabled_or_empty_keeps_everything() {
        let f = UrlFilter::parse("inline", "# nothing\n").unwrap();
        assert!(f.is_empty() && f.check("https://example.com/").is_ok());
        let config = UrlFilterConfig {
            enabled: false,
            blocklists: vec![],
        };
        assert!(
            config
                .build()
                .unwrap()
                .check("https://example.com/")
                .is_ok()
        );
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let err = UrlFilter::parse("list.txt", "ok.com\nhttps://bad.com/path\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "list.txt:2: \"https://bad.com/path\" is not a domain: give the host without a scheme or path"
        );
        let err = UrlFilter::parse("list.txt", "regex:.*\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("list.txt:1: unknown entry kind `regex:`"),
            "{err}"
        );
        let err = UrlFilter::parse("l", "a..b\n").unwrap_err().to_string();
        assert!(err.contains("empty label"), "{err}");
        let err = UrlFilter::parse("l", "\n\nword:two words\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("l:3: word"), "{err}");
        let err = UrlFilter::parse("l", "substring:\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("without a value"), "{err}");
    }

    #[test]
    fn files_are_read_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("block.txt");
        std::fs::write(&path, b"example.com\n\xff\xfe\n").unwrap();
        let err = UrlFilter::from_files(&[&path]).unwrap_err().to_string();
        assert!(err.contains("block.txt:2: not UTF-8"), "{err}");
        std::fs::write(&path, "example.com\n").unwrap();
        let config: UrlFilterConfig =
            toml::from_str(&format!("blocklists = [{:?}]", path)).unwrap();
        assert_eq!(
            rule(&config.build().unwrap(), "https://a.example.com/"),
            Some("domain")
        );
        let missing = UrlFilterConfig {
            blocklists: vec![dir.path().join("missing.txt")],
            ..Default::default()
        };
        let err = missing.build().unwrap_err().to_string();
        assert!(
            err.starts_with("reading blocklist ") && err.contains("missing.txt"),
            "{err}"
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(host("HTTPS://A.b.C/x").as_deref(), Some("a.b.c"));
        assert_eq!(host("//cdn.x.org/a").as_deref(), Some("cdn.x.org"));
        assert_eq!(host("mailto:someone"), Some("mailto:someone".into()));
        assert_eq!(host(""), None);
    }
}
