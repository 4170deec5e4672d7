//! Content negotiation on `Accept-Encoding` (RFC 9110, section 12.5.3): which
//! of the encodings the gateway holds a response in the client takes.
//!
//! A pure function over the header's value. Each listed coding carries a
//! weight (`q`, 0 to 1, default 1); `q=0` means "not acceptable"; `*` stands
//! for every coding not listed by name; `identity` is acceptable unless it is
//! refused by name or by `*;q=0`.

/// How a response body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// As is.
    Identity,
    /// gzip-compressed (`Content-Encoding: gzip`).
    Gzip,
}

/// The encoding to send when the gateway has the body both as is and
/// gzip-compressed. `header` is the request's `Accept-Encoding` (`None`
/// without one: the body goes as is, which every client takes).
///
/// gzip wins a tie with identity (it is smaller); identity is sent when the
/// client accepts neither, since refusing a static file helps no one.
pub fn negotiate(header: Option<&str>) -> Encoding {
    let Some(header) = header else {
        return Encoding::Identity;
    };
    let mut gzip = None;
    let mut identity = None;
    let mut star = None;
    for element in header.split(',') {
        let mut parts = element.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        if coding.is_empty() {
            continue;
        }
        let mut q = Some(1000);
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                q = qvalue(value.trim());
            }
        }
        // An element whose weight is malformed says nothing we can trust.
        let Some(q) = q else {
            continue;
        };
        let slot = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if coding.eq_ignore_ascii_case("identity") {
            &mut identity
        } else if coding == "*" {
            &mut star
        } else {
            continue;
        };
        // Listed twice: the higher weight is the generous reading.
        *slot = Some(slot.map_or(q, |prev: u16| prev.max(q)));
    }
    let gzip = gzip.or(star).unwrap_or(0);
    let identity = identity.or(star).unwrap_or(1);
    if gzip > 0 && gzip >= identity {
        Encoding::Gzip
    } else {
        Encoding::Identity
    }
}

/// A weight in thousandths: `0`, `0.5`, `1.000`; `None` when it is not one
/// (RFC 9110, section 12.4.2: at most three decimals, at most 1).
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    let q = whole + thousandths;
    (q <= 1000).then_some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(h: &str) -> Encoding {
        negotiate(Some(h))
    }

    #[test]
    fn weights_below_one_still_accept() {
        // The defect: `contains("q=0")` refused these.
        assert_eq!(n("gzip;q=0.5"), Encoding::Gzip);
        assert_eq!(n("gzip; q=0.01, identity;q=0.005"), Encoding::Gzip);
        assert_eq!(n("br;q=1.0, gzip;q=0.8, *;q=0.1"), Encoding::Gzip);
    }

    #[test]
    fn zero_refuses() {
        assert_eq!(n("gzip;q=0"), Encoding::Identity);
        assert_eq!(n("gzip;q=0.000"), Encoding::Identity);
        assert_eq!(n("gzip; Q=0.0"), Encoding::Identity);
        assert_eq!(n("*;q=0, identity"), Encoding::Identity);
    }

    #[test]
    fn plain_and_browser_headers() {
        assert_eq!(n("gzip"), Encoding::Gzip);
        assert_eq!(n("GZIP"), Encoding::Gzip);
        assert_eq!(n("x-gzip"), Encoding::Gzip);
        assert_eq!(n("gzip, deflate, br, zstd"), Encoding::Gzip);
        assert_eq!(n("deflate, br"), Encoding::Identity);
        assert_eq!(n(""), Encoding::Identity);
        assert_eq!(negotiate(None), Encoding::Identity);
    }

    #[test]
    fn star_covers_what_is_not_named() {
        assert_eq!(n("*"), Encoding::Gzip);
        assert_eq!(n("*;q=0.5"), Encoding::Gzip, "a tie: gzip is smaller");
        assert_eq!(n("gzip;q=0, *"), Encoding::Identity);
        assert_eq!(n("identity;q=1, *;q=0.5"), Encoding::Identity);
    }

    #[test]
    fn identity_preferred_or_refused() {
        assert_eq!(n("gzip;q=0.5, identity"), Encoding::Identity);
        assert_eq!(n("identity;q=0, gzip;q=0.1"), Encoding::Gzip);
        // Neither acceptable: the body goes as is rather than not at all.
        assert_eq!(n("identity;q=0"), Encoding::Identity);
    }

    #[test]
    fn malformed_weights_are_ignored() {
        assert_eq!(n("gzip;q=2"), Encoding::Identity);
        assert_eq!(n("gzip;q=0.5555"), Encoding::Identity);
        assert_eq!(n("gzip;q=abc"), Encoding::Identity);
        assert_eq!(n("gzip;q=1.001"), Encoding::Identity);
        assert_eq!(n("gzip;q=bad, gzip;q=0.3"), Encoding::Gzip);
        assert_eq!(n(",,gzip ;q=1,"), Encoding::Gzip);
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0."), Some(0));
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.125"), Some(125));
        assert_eq!(qvalue("1"), Some(1000));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("1.5"), None);
        assert_eq!(qvalue(".5"), None);
        assert_eq!(qvalue(""), None);
    }
}
