//! Replacing e-mail addresses and IP addresses with placeholders (FineWeb's last step before
//! writing, datatrove's `PIIFormatter`).
//!
//! * E-mail addresses: `local@domain.tld` with an ASCII local part of letters, digits and
//!   `._%+-`, a dotted domain of ASCII labels and an alphabetic top-level domain of 2–63
//!   letters.
//! * IP addresses: a run of hex digits, `.` and `:` that is not part of a word and parses as
//!   an IPv4 address (dotted quad, no leading zeros) or an IPv6 address (any form Rust's
//!   parser takes, `::ffff:1.2.3.4` included); `1.2.3.4:80` is an IPv4 address with a port
//!   (the port stays). Version numbers like `1.2.3.4.5` and times like `12:30:45` are not
//!   addresses.
//!
//! By default only public addresses are replaced (as datatrove's `only_remove_public_ips`):
//! private, loopback, link-local, shared (100.64/10), documentation, benchmarking, multicast,
//! reserved and unspecified IPv4 addresses stay, and of IPv6 only global unicast (2000::/3,
//! less the documentation prefix 2001:db8::/32) is replaced. The default placeholders are
//! themselves an example address and documentation addresses, so formatting twice changes
//! nothing.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use crate::filter::{Doc, Filter, Kind};
use crate::verdict::Drop;

/// What to replace, and with what.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiiFormatter {
    /// When false, [`PiiFormatter::apply`] returns every text unchanged.
    pub enabled: bool,
    /// Replace e-mail addresses.
    pub emails: bool,
    /// Replace IP addresses.
    pub ips: bool,
    /// Replace only public IP addresses (see the module documentation).
    pub only_public_ips: bool,
    /// The text that replaces an e-mail address.
    pub email_replacement: String,
    /// The text that replaces an IPv4 address.
    pub ipv4_replacement: String,
    /// The text that replaces an IPv6 address.
    pub ipv6_replacement: String,
}

impl Default for PiiFormatter {
    fn default() -> Self {
        Self {
            enabled: true,
            emails: true,
            ips: true,
            only_public_ips: true,
            email_replacement: "email@example.com".into(),
            ipv4_replacement: "192.0.2.1".into(),
            ipv6_replacement: "2001:db8::1".into(),
        }
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)[a-z0-9._%+\-]+@(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}(?-u:\b)",
    )
    .expect("the e-mail pattern is valid")
});

/// Whether an IPv4 address is public: not in a special-purpose range.
pub fn is_public_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_documentation()
        || a >= 240 // reserved, broadcast
        || (a == 100 && (b & 0xC0) == 64) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b & 0xFE) == 18); // benchmarking 198.18/15
    !special
}

/// Whether an IPv6 address is public: global unicast (2000::/3) outside the documentation
/// prefix, or an IPv4-mapped public IPv4 address.
pub fn is_public_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_ipv4(v4);
    }
    let s = ip.segments();
    (s[0] & 0xE000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
}

fn is_ip_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b'.' || b == b':'
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// An address found in a candidate run: its length from the run's start and whether it is v6.
fn parse_ip(run: &str) -> Option<(usize, IpKind)> {
    let trimmed = run.trim_end_matches(['.', ':']);
    for candidate in [run, trimmed] {
        if candidate.contains(':') {
            if let Ok(ip) = candidate.parse::<Ipv6Addr>() {
                return Some((candidate.len(), IpKind::V6(ip)));
            }
            // `1.2.3.4:8080`: an IPv4 address and a port.
            if let Some((host, port)) = candidate.rsplit_once(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && let Ok(ip) = host.parse::<Ipv4Addr>()
            {
                return Some((host.len(), IpKind::V4(ip)));
            }
        } else if let Ok(ip) = candidate.parse::<Ipv4Addr>() {
            return Some((candidate.len(), IpKind::V4(ip)));
        }
    }
    None
}

enum IpKind {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl PiiFormatter {
    const NAME: &'static str = "pii";

    /// The text with e-mail and IP addresses replaced; borrowed when nothing was replaced.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.enabled {
            return Cow::Borrowed(text);
        }
        let text = if self.emails && text.contains('@') {
            EMAIL.replace_all(text, regex::NoExpand(&self.email_replacement))
        } else {
            Cow::Borrowed(text)
        };
        if !self.ips {
            return text;
        }
        match self.replace_ips(&text) {
            Some(replaced) => Cow::Owned(replaced),
            None => text,
        }
    }

    /// The text with IP addresses replaced, or `None` when there was none to replace.
    fn replace_ips(&self, text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut i = 0;
        while i < bytes.len() {
            if !is_ip_byte(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_ip_byte(bytes[i]) {
                i += 1;
            }
            let run = &text[start..i];
            // Shortest forms: `1.2.3.4` (7 bytes), `::1` (3 bytes).
            if run.len() < 3 || !(run.contains('.') || run.contains(':')) {
                continue;
            }
            if is_word(text[..start].chars().next_back()) || is_word(text[i..].chars().next()) {
                continue;
            }
            let Some((len, ip)) = parse_ip(run) else {
                continue;
            };
            let replacement = match ip {
                IpKind::V4(ip) if !self.only_public_ips || is_public_ipv4(ip) => {
                    &self.ipv4_replacement
                }
                IpKind::V6(ip) if !self.only_public_ips || is_public_ipv6(ip) => {
                    &self.ipv6_replacement
                }
                _ => continue,
            };
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..start]);
            out.push_str(replacement);
            copied = start + len;
        }
        let mut out = out?;
        out.push_str(&text[copied..]);
        Some(out)
    }
}

impl Filter for PiiFormatter {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn kind(&self) -> Kind {
        Kind::Formatter
    }

    /// Replaces the text only when an address was replaced; never drops.
    fn apply(&self, doc: &mut Doc<'_>) -> Result<(), Drop> {
        let replaced = match PiiFormatter::apply(self, &doc.text) {
            Cow::Owned(text) => Some(text),
            Cow::Borrowed(_) => None,
        };
        if let Some(text) = replaced {
            doc.text = Cow::Owned(text);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str) -> String {
        PiiFormatter::default().apply(text).into_owned()
    }

    #[test]
    fn replaces_emails() {
        assert_eq!(
            apply("Write to John.Doe+news@Mail.Example.co.uk today."),
            "Write to email@example.com today."
        );
        assert_eq!(
            apply("<a href=\"mailto:x_y@host.org\">"),
            "<a href=\"mailto:email@example.com\">"
        );
        assert_eq!(
            apply("'a@b.io', c@d.net"),
            "'email@example.com', email@example.com"
        );
        for kept in ["user@localhost", "@handle", "a@b.c", "price@5.00"] {
            assert_eq!(apply(kept), kept);
        }
    }

    #[test]
    fn replaces_public_ipv4_only() {
        assert_eq!(
            apply("Server 8.8.8.8 answered."),
            "Server 192.0.2.1 answered."
        );
        assert_eq!(apply("at 93.184.216.34:8080/x"), "at 192.0.2.1:8080/x");
        for kept in [
            "10.0.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "172.16.5.4",
            "100.64.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "0.0.0.0",
        ] {
            assert_eq!(apply(kept), kept);
        }
        let all = PiiFormatter {
            only_public_ips: false,
            ..Default::default()
        };
        assert_eq!(all.apply("10.0.0.1"), "192.0.2.1");
    }

    #[test]
    fn leaves_things_that_are_not_addresses() {
        for kept in [
            "version 1.2.3.4.5",
            "v8.8.8.8",
            "at 12:30:45",
            "256.1.1.1",
            "08.08.08.08",
            "mac 00:1a:2b:3c:4d:5e",
        ] {
            assert_eq!(apply(kept), kept);
        }
        assert!(matches!(
            PiiFormatter::default().apply("no pii here"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn replaces_public_ipv6() {
        assert_eq!(apply("dns 2606:4700:4700::1111."), "dns 2001:db8::1.");
        assert_eq!(apply("[2a00:1450:4001:82b::200e]:443"), "[2001:db8::1]:443");
        assert_eq!(
            apply("mapped ::ffff:8.8.8.8 here"),
            "mapped 2001:db8::1 here"
        );
        for kept in [
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::5",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert_eq!(apply(kept), kept);
        }
    }

    #[test]
    fn idempotent_and_switchable() {
        let once = apply("a@b.com 8.8.8.8 2606:4700::1");
        assert_eq!(apply(&once), once);
        let off = PiiFormatter {
            enabled: false,
            ..Default::default()
        };
        assert_eq!(off.apply("a@b.com"), "a@b.com");
        let ips_only = PiiFormatter {
            emails: false,
            ..Default::default()
        };
        assert_eq!(ips_only.apply("a@b.com 8.8.8.8"), "a@b.com 192.0.2.1");
        let custom: PiiFormatter = toml::from_str("email_replacement = \"<EMAIL>\"").unwrap();
        assert_eq!(custom.apply("x@y.org"), "<EMAIL>");
    }
}
