//! The widget's files, embedded at build time by `build.rs` from `widget/dist/`.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// File name; served at `/<name>`.
    pub name: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Strong ETag of the content, quoted.
    pub etag: &'static str,
    /// The bytes.
    pub raw: &'static [u8],
    /// The bytes, gzipped.
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The embedded file with this name.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}
