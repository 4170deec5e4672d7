//! Documents: what a file is (Markdown, HTML or plain text), whether it can
//! be indexed, and its text in one shape for the chunker.
//!
//! [`decode`] takes a name and bytes (no I/O) and either returns a
//! [`Document`] or a [`DocumentError`] naming the file: too large, binary,
//! not UTF-8, of an unsupported type, or empty. Every format comes out as
//! Markdown-like text: ATX headings (`# ...`) and blank-line separated
//! paragraphs. HTML goes through `html2text` (headings keep their `#`
//! prefixes); Markdown keeps its text with front matter removed and inline
//! links reduced to their text; plain text is taken as paragraphs without
//! headings.

use crate::error::DocumentError;
use crate::hash;
use serde::{Deserialize, Serialize};

/// Largest document accepted by default: 4 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 20;

/// How many leading bytes are inspected for binary content.
const SNIFF_BYTES: usize = 8192;

/// A document's source format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `.md`, `.markdown`.
    Markdown,
    /// `.html`, `.htm`.
    Html,
    /// `.txt`, `.text`.
    Text,
}

impl Format {
    /// The format a file name's extension stands for, if supported.
    pub fn from_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" | "mdown" => Some(Format::Markdown),
            "html" | "htm" | "xhtml" => Some(Format::Html),
            "txt" | "text" => Some(Format::Text),
            _ => None,
        }
    }
}

/// Limits on what is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocLimits {
    /// Largest document in bytes.
    pub max_bytes: u64,
}

impl Default for DocLimits {
    fn default() -> Self {
        DocLimits {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// A decoded document, ready to chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Its URL: a `url:` from Markdown front matter, else the name it was
    /// ingested under (for a file in a folder, its path relative to that
    /// folder, with `/` separators).
    pub url: String,
    /// The name it was ingested under (the key that a re-ingest replaces).
    pub name: String,
    /// Its title: front matter `title:`, HTML `<title>`, the first level-1
    /// heading, or else the file name made readable.
    pub title: String,
    /// The source format.
    pub format: Format,
    /// The text, Markdown-like (see the module docs).
    pub text: String,
    /// Fingerprint of the raw bytes (16 hex digits); an unchanged document
    /// has an unchanged fingerprint.
    pub fingerprint: String,
    /// Size of the raw bytes.
    pub bytes: u64,
}

/// Checks that `name` is usable as a document name: relative, no `..`, no
/// empty components. Backslashes count as separators.
pub fn clean_name(name: &str) -> Result<String, DocumentError> {
    let bad = || DocumentError::BadName {
        name: name.to_string(),
    };
    let norm = name.replace('\\', "/");
    let norm = norm.trim_start_matches("./");
    if norm.is_empty() || norm.starts_with('/') || norm.chars().any(char::is_control) {
        return Err(bad());
    }
    let parts: Vec<&str> = norm.split('/').filter(|p| *p != ".").collect();
    if parts.iter().any(|p| p.is_empty() || *p == "..") {
        return Err(bad());
    }
    Ok(parts.join("/"))
}

/// Decodes one document from its name and bytes. The format comes from the
/// name's extension; with none, content starting like HTML is HTML and other
/// text is plain text.
pub fn decode(name: &str, bytes: &[u8], limits: &DocLimits) -> Result<Document, DocumentError> {
    let name = clean_name(name)?;
    let err_name = || name.clone();
    if bytes.len() as u64 > limits.max_bytes {
        return Err(DocumentError::TooLarge {
            name: err_name(),
            size: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    let format = match Format::from_name(&name) {
        Some(f) => f,
        None if !file_name(&name).contains('.') => {
            if looks_like_html(bytes) {
                Format::Html
            } else {
                Format::Text
            }
        }
        None => return Err(DocumentError::Unsupported { name: err_name() }),
    };
    let text = decode_text(&name, bytes)?;
    let fingerprint = hash::hex(hash::fnv1a(&[bytes]));
    let (title, url, body) = match format {
        Format::Markdown => markdown(&text),
        Format::Html => html(&name, &text)?,
        Format::Text => {
            let body = normalize_text(&text);
            match text_title(&body) {
                Some((title, rest)) => (Some(title), None, rest),
                None => (None, None, body),
            }
        }
    };
    if body.trim().is_empty() {
        return Err(DocumentError::Empty { name: err_name() });
    }
    let title = title
        .or_else(|| first_h1(&body, format))
        .unwrap_or_else(|| title_from_name(&name));
    Ok(Document {
        url: url.unwrap_or_else(|| name.clone()),
        name,
        title,
        format,
        text: body,
        fingerprint,
        bytes: bytes.len() as u64,
    })
}

fn file_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn looks_like_html(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    let head = String::from_utf8_lossy(head)
        .trim_start()
        .to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html")
}

/// UTF-8 text from `bytes`: a BOM is dropped; UTF-16, NUL bytes, bad UTF-8
/// and mostly-control content are rejected.
fn decode_text(name: &str, bytes: &[u8]) -> Result<String, DocumentError> {
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return Err(DocumentError::BadEncoding {
            name: name.to_string(),
            detail: "UTF-16; save it as UTF-8".into(),
        });
    }
    let bytes = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes);
    let head = &bytes[..bytes.len().min(SNIFF_BYTES)];
    let control = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))
        .count();
    if head.contains(&0) || control * 10 > head.len() {
        return Err(DocumentError::Binary {
            name: name.to_string(),
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.replace("\r\n", "\n").replace('\r', "\n")),
        Err(e) => Err(DocumentError::BadEncoding {
            name: name.to_string(),
            detail: format!("invalid byte at offset {}", e.valid_up_to()),
        }),
    }
}

/// Plain text: trailing spaces trimmed, runs of blank lines collapsed, and
/// lines that look like Markdown headings escaped so that they stay text.
fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        if line.trim_start().starts_with('#') {
            out.push('\\');
        }
        out.push_str(line);
    }
    out
}

/// Markdown: (front matter title, front matter url, body).
fn markdown(text: &str) -> (Option<String>, Option<String>, String) {
    let mut title = None;
    let mut url = None;
    let mut body = text;
    if let Some(rest) = text.strip_prefix("---\n") {
        if let Some(end) = rest
            .find("\n---\n")
            .or_else(|| rest.strip_suffix("\n---").map(str::len))
        {
            for line in rest[..end].lines() {
                if let Some((k, v)) = line.split_once(':') {
                    let v = v.trim().trim_matches(|c| c == '"' || c == '\'').trim();
                    match k.trim() {
                        "title" if !v.is_empty() => title = Some(v.to_string()),
                        "url" if !v.is_empty() => url = Some(v.to_string()),
                        _ => {}
                    }
                }
            }
            body = rest.get(end + 5..).unwrap_or("");
        }
    }
    (title, url, strip_links(body))
}

/// `[text](target)` becomes `text`; `![alt](src)` becomes `alt`. Text in
/// code spans or fences is left alone only roughly (links in code are rare
/// in help pages).
fn strip_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        let before = before.strip_suffix('!').unwrap_or(before);
        let Some(close) = after.find("](") else {
            break;
        };
        let label = &after[1..close];
        let target = &after[close + 2..];
        match target.find(')') {
            Some(end) if !label.contains('\n') && !target[..end].contains(char::is_whitespace) => {
                out.push_str(before);
                out.push_str(label);
                rest = &target[end + 1..];
            }
            _ => {
                out.push_str(&rest[..open + 1]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// HTML: (`<title>`, none, body rendered by html2text with `#` headings).
fn html(name: &str, text: &str) -> Result<(Option<String>, Option<String>, String), DocumentError> {
    let render = |s: &str| {
        html2text::config::plain_no_decorate()
            .link_footnotes(false)
            .no_table_borders()
            .string_from_read(s.as_bytes(), 10_000)
    };
    let lower = text.to_ascii_lowercase();
    let title = lower.find("<title").and_then(|start| {
        let open_end = start + lower[start..].find('>')? + 1;
        let close = open_end + lower[open_end..].find("</title")?;
        let t = render(&format!("<p>{}</p>", &text[open_end..close])).ok()?;
        let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
        (!t.is_empty()).then_some(t)
    });
    let body = render(text).map_err(|e| DocumentError::BadEncoding {
        name: name.to_string(),
        detail: format!("cannot parse HTML: {e}"),
    })?;
    let body: Vec<&str> = body.lines().map(str::trim_end).collect();
    Ok((title, None, normalize_blank(&body.join("\n"))))
}

fn normalize_blank(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            blank = true;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank { "\n\n" } else { "\n" });
        }
        blank = false;
        out.push_str(line);
    }
    out
}

/// Longest first line of a text file taken as its title.
const TEXT_TITLE_CHARS: usize = 80;

/// A plain-text document's title line and the rest: its first paragraph
/// when that is one short line with no sentence-ending punctuation, followed
/// by more text (as in "Contacting customer care\n\nOur team answers...").
/// The title line leaves the body, as a Markdown `#` heading does, so that
/// it is matched as the title and never quoted glued to the first sentence.
fn text_title(body: &str) -> Option<(String, String)> {
    let (first, rest) = body.split_once("\n\n")?;
    let first = first.trim();
    let is_title = !first.contains('\n')
        && !first.is_empty()
        && first.chars().count() <= TEXT_TITLE_CHARS
        && !first.ends_with(['.', '!', '?', ':', ';', ','])
        && !rest.trim().is_empty();
    is_title.then(|| (first.to_string(), rest.trim_start().to_string()))
}

fn first_h1(body: &str, format: Format) -> Option<String> {
    if format == Format::Text {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix("# "))
        .map(|t| t.trim().trim_end_matches('#').trim().to_string())
        .filter(|t| !t.is_empty())
}

/// `help/shipping_rates.md` becomes `Shipping rates`.
fn title_from_name(name: &str) -> String {
    let file = file_name(name);
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let words = stem.replace(['-', '_'], " ");
    let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = words.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => file.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(name: &str, bytes: &[u8]) -> Result<Document, DocumentError> {
        decode(name, bytes, &DocLimits::default())
    }

    #[test]
    fn formats_from_names() {
        assert_eq!(Format::from_name("a/B.MD"), Some(Format::Markdown));
        assert_eq!(Format::from_name("x.htm"), Some(Format::Html));
        assert_eq!(Format::from_name("x.txt"), Some(Format::Text));
        assert_eq!(Format::from_name("x.pdf"), None);
        assert_eq!(Format::from_name("README"), None);
    }

    #[test]
    fn markdown_title_front_matter_and_links() {
        let d = dec(
            "help/shipping.md",
            b"---\ntitle: \"Shipping\"\nurl: https://shop.example/help/shipping\n---\n# Delivery\n\nSee [our rates](https://x.example/rates) and ![map](m.png).\n",
        )
        .unwrap();
        assert_eq!(d.title, "Shipping");
        assert_eq!(d.url, "https://shop.example/help/shipping");
        assert_eq!(d.name, "help/shipping.md");
        assert!(d.text.starts_with("# Delivery"), "{}", d.text);
        assert!(d.text.contains("See our rates and map."), "{}", d.text);
        let d = dec("faq.md", b"Intro\n\n# The FAQ #\n\ntext").unwrap();
        assert_eq!(d.title, "The FAQ");
        assert_eq!(d.url, "faq.md");
    }

    #[test]
    fn html_to_text_with_headings() {
        let d = dec(
            "pages/returns.html",
            b"<!doctype html><html><head><title>Returns &amp; refunds</title><style>p{color:red}</style>\
              <script>var x = 1;</script></head><body><h1>Returns</h1><p>Send it back within <b>30 days</b>.</p>\
              <h2>Refunds</h2><p>We refund in 5 days.</p><ul><li>one</li><li>two</li></ul></body></html>",
        )
        .unwrap();
        assert_eq!(d.title, "Returns & refunds");
        assert!(d.text.contains("# Returns"), "{}", d.text);
        assert!(d.text.contains("## Refunds"), "{}", d.text);
        assert!(
            d.text.contains("Send it back within 30 days."),
            "{}",
            d.text
        );
        assert!(!d.text.contains("color"), "{}", d.text);
        assert!(!d.text.contains("var x"), "{}", d.text);
        assert_eq!(d.format, Format::Html);
        // No extension: sniffed.
        assert_eq!(
            dec("page", b"<html><p>hi</p></html>").unwrap().format,
            Format::Html
        );
        assert_eq!(dec("notes", b"just text").unwrap().format, Format::Text);
    }

    #[test]
    fn text_title_and_no_headings() {
        let d = dec(
            "gift_cards.txt",
            b"# not a heading\r\nline two\r\n\r\n\r\nsecond para  \n",
        )
        .unwrap();
        assert_eq!(d.title, "Gift cards");
        assert_eq!(d.text, "\\# not a heading\nline two\n\nsecond para");
        // A short first line on its own is the title, and leaves the body.
        let d = dec(
            "contact.txt",
            b"Contacting customer care\n\nPhone: 1-800-555-0148.\n\nEmail us.",
        )
        .unwrap();
        assert_eq!(d.title, "Contacting customer care");
        assert_eq!(d.text, "Phone: 1-800-555-0148.\n\nEmail us.");
        // Not a title: a sentence, a label, or the only paragraph.
        for body in [
            "We answer within a day.\n\nMore.",
            "Phone:\n\n1-800.",
            "Only a line",
        ] {
            let d = dec("c.txt", body.as_bytes()).unwrap();
            assert_eq!(d.title, "C", "{body:?}");
            assert_eq!(d.text, body);
        }
    }

    #[test]
    fn rejections_name_the_file() {
        let e = dec("img.md", b"\x89PNG\r\n\x1a\n\0\0\0IHDR").unwrap_err();
        assert_eq!(
            e,
            DocumentError::Binary {
                name: "img.md".into()
            }
        );
        assert!(e.to_string().starts_with("img.md: "));
        let e = dec("latin1.txt", b"caf\xe9 au lait").unwrap_err();
        assert_eq!(e.code(), "bad_encoding");
        assert!(e.to_string().contains("offset 3"), "{e}");
        let e = dec("u16.txt", b"\xff\xfeh\0i\0").unwrap_err();
        assert_eq!(e.code(), "bad_encoding");
        let e = decode("big.md", &[b'a'; 100], &DocLimits { max_bytes: 10 }).unwrap_err();
        assert_eq!(
            e,
            DocumentError::TooLarge {
                name: "big.md".into(),
                size: 100,
                limit: 10
            }
        );
        assert_eq!(dec("a.pdf", b"%PDF").unwrap_err().code(), "unsupported");
        assert_eq!(dec("empty.md", b"  \n\n ").unwrap_err().code(), "empty");
        assert_eq!(
            dec("../etc/passwd.txt", b"x").unwrap_err().code(),
            "bad_name"
        );
        assert_eq!(dec("/abs.txt", b"x").unwrap_err().code(), "bad_name");
        assert_eq!(dec("bom.txt", b"\xef\xbb\xbfhello").unwrap().text, "hello");
    }

    #[test]
    fn fingerprint_follows_content() {
        let a = dec("a.txt", b"one").unwrap();
        let b = dec("b.txt", b"one").unwrap();
        let c = dec("a.txt", b"two").unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(clean_name(".\\docs\\a.md").unwrap(), "docs/a.md");
    }
}
