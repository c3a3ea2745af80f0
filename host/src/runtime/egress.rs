//! Egress checks for the `crm` import: which paths, query parameters and
//! headers a plugin may send, and the safe join of a path onto a CRM's base URL.
//!
//! A request is checked here BEFORE anything leaves the host. This module must
//! never loosen a rule to make a request work: a plugin reaches only the API
//! root of its tenant's own CRMs, without credentials of its own.

use url::Url;

/// Why a request was refused before it left the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressDenied {
    /// The path is empty or does not start with `/`.
    #[error("path must start with `/`: {0:?}")]
    NotRooted(String),
    /// The path names a scheme or a host (`http://x`, `//host`).
    #[error("path names a host or scheme: {0:?}")]
    Authority(String),
    /// The path has a `.` or `..` segment, or an empty one (`//`).
    #[error("path has a `.`, `..` or empty segment: {0:?}")]
    DotSegment(String),
    /// The path has a character that is not allowed (`%`, `\`, `?`, `#`,
    /// whitespace, control characters, non-ASCII).
    #[error("path has a forbidden character {ch:?}: {path:?}")]
    Character {
        /// The path.
        path: String,
        /// The first forbidden character.
        ch: char,
    },
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// A header the host sets itself, or a hop-by-hop header.
    #[error("header `{0}` is set by the host and may not be sent by a plugin")]
    ForbiddenHeader(String),
    /// A header name that is not a valid token.
    #[error("header name {0:?} is not a valid HTTP token")]
    BadHeaderName(String),
    /// A header value with CR, LF, NUL or another control character.
    #[error("header `{0}` has a control character in its value")]
    BadHeaderValue(String),
    /// A query parameter with a control character.
    #[error("query parameter {0:?} has a control character")]
    BadQuery(String),
    /// The tenant has not connected this CRM.
    #[error("the tenant has not connected {0}")]
    NotConnected(&'static str),
    /// A request that could write, during a dry run (which writes nothing).
    #[error("a dry run sends no {0} request: plugins may only read while a dry run plans")]
    WriteInDryRun(&'static str),
    /// The joined URL left the base URL (never expected; defence in depth).
    #[error("the request would leave the API root of the CRM")]
    Escaped,
}

/// The longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 2048;

/// Headers a plugin may never set: credentials, routing, framing and
/// hop-by-hop headers. Compared case-insensitively.
pub const FORBIDDEN_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Checks a plugin's path: rooted, no authority, no `.`/`..`/empty segment,
/// and only these characters: ASCII letters and digits, and `-._~!$&'()*+,;=:@/`.
///
/// `%` is refused outright, so no percent-encoded variant of `..`, `/` or `\`
/// can reach a server that would decode it; the query list is where encoded
/// values belong (the host encodes those itself).
pub fn check_path(path: &str) -> Result<(), EgressDenied> {
    if path.len() > MAX_PATH_LEN {
        return Err(EgressDenied::TooLong);
    }
    if !path.starts_with('/') {
        let scheme = path.split_once(':').map(|(s, _)| s).unwrap_or("");
        let has_scheme = !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
        if has_scheme || path.contains("://") {
            return Err(EgressDenied::Authority(path.to_string()));
        }
        return Err(EgressDenied::NotRooted(path.to_string()));
    }
    if path.starts_with("//") {
        return Err(EgressDenied::Authority(path.to_string()));
    }
    if let Some(ch) = path.chars().find(|&c| !allowed_path_char(c)) {
        return Err(EgressDenied::Character {
            path: path.to_string(),
            ch,
        });
    }
    // Segments after the leading `/`. A trailing `/` is allowed (an empty
    // last segment), an empty segment in between is not.
    let rest = &path[1..];
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if *seg == "." || *seg == ".." || (seg.is_empty() && !last) {
            return Err(EgressDenied::DotSegment(path.to_string()));
        }
    }
    Ok(())
}

fn allowed_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c)
}

/// Checks one header a plugin wants to send.
pub fn check_header(name: &str, value: &str) -> Result<(), EgressDenied> {
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(EgressDenied::BadHeaderName(name.to_string()));
    }
    let lower = name.to_ascii_lowercase();
    if FORBIDDEN_HEADERS.contains(&lower.as_str())
        || lower.starts_with("proxy-")
        || lower.starts_with("sec-")
    {
        return Err(EgressDenied::ForbiddenHeader(lower));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(EgressDenied::BadHeaderValue(lower));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks a query parameter (the host percent-encodes it; control
/// characters are refused all the same).
pub fn check_query(name: &str, value: &str) -> Result<(), EgressDenied> {
    if name.is_empty() || name.chars().chain(value.chars()).any(|c| c.is_control()) {
        return Err(EgressDenied::BadQuery(name.to_string()));
    }
    Ok(())
}

/// Checks everything a plugin controls in a request.
pub fn check_request<'a>(
    path: &str,
    query: impl IntoIterator<Item = (&'a str, &'a str)>,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), EgressDenied> {
    check_path(path)?;
    for (k, v) in query {
        check_query(k, v)?;
    }
    for (k, v) in headers {
        check_header(k, v)?;
    }
    Ok(())
}

/// Joins a checked path and query onto a CRM base URL (which may have a path
/// prefix, e.g. `http://127.0.0.1:8080/hubspot`). The result keeps the base's
/// scheme, host and port, and its path starts with the base's path.
pub fn join(base: &Url, path: &str, query: &[(String, String)]) -> Result<Url, EgressDenied> {
    check_path(path)?;
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(None);
    url.set_fragment(None);
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            check_query(k, v)?;
            pairs.append_pair(k, v);
        }
    }
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.path().starts_with(&prefix);
    if !same_origin {
        return Err(EgressDenied::Escaped);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_api_paths_pass() {
        for p in [
            "/crm/v3/owners",
            "/crm/v3/owners/",
            "/services/data/v62.0/query",
            "/services/data/v62.0/sobjects/User/005000000000001AAA",
            "/crm/v3/objects/contacts/ada@example.com",
        ] {
            assert_eq!(check_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn traversal_is_refused() {
        for p in ["/..", "/crm/../admin", "/crm/./x", "/a/..", "/crm//owners"] {
            assert!(
                matches!(check_path(p), Err(EgressDenied::DotSegment(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn encoded_tricks_are_refused() {
        for p in [
            "/%2e%2e/admin",
            "/crm%2fv3",
            "/%2E%2E",
            "/a%5c..",
            "/%252e%252e/x",
            "/a%00",
        ] {
            assert!(
                matches!(check_path(p), Err(EgressDenied::Character { ch: '%', .. })),
                "{p}"
            );
        }
    }

    #[test]
    fn authorities_and_schemes_are_refused() {
        for p in [
            "//evil.example/x",
            "http://evil.example/x",
            "https://x",
            "evil.example/x",
            "mailto:x",
        ] {
            let err = check_path(p).unwrap_err();
            assert!(
                matches!(err, EgressDenied::Authority(_) | EgressDenied::NotRooted(_)),
                "{p}: {err:?}"
            );
        }
        assert!(matches!(
            check_path("//evil"),
            Err(EgressDenied::Authority(_))
        ));
        assert!(matches!(
            check_path("http://x"),
            Err(EgressDenied::Authority(_))
        ));
        assert!(matches!(check_path(""), Err(EgressDenied::NotRooted(_))));
    }

    #[test]
    fn forbidden_characters_are_refused() {
        for (p, ch) in [
            ("/a\\..\\b", '\\'),
            ("/a\r\nHost: evil", '\r'),
            ("/a\nb", '\n'),
            ("/a\0b", '\0'),
            ("/a?x=1", '?'),
            ("/a#frag", '#'),
            ("/a b", ' '),
            ("/caf\u{e9}", '\u{e9}'),
            ("/a\u{2215}b", '\u{2215}'),
        ] {
            assert_eq!(
                check_path(p),
                Err(EgressDenied::Character {
                    path: p.to_string(),
                    ch
                }),
                "{p:?}"
            );
        }
    }

    #[test]
    fn overlong_paths_are_refused() {
        let p = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(check_path(&p), Err(EgressDenied::TooLong));
    }

    #[test]
    fn credential_and_framing_headers_are_refused() {
        for h in [
            "Authorization",
            "host",
            "Cookie",
            "Transfer-Encoding",
            "Content-Length",
            "Connection",
            "Proxy-Authorization",
            "X-Forwarded-Host",
        ] {
            assert!(
                matches!(check_header(h, "x"), Err(EgressDenied::ForbiddenHeader(_))),
                "{h}"
            );
        }
        assert_eq!(check_header("Accept", "application/json"), Ok(()));
        assert_eq!(check_header("X-Request-Id", "abc\tdef"), Ok(()));
    }

    #[test]
    fn header_injection_is_refused() {
        assert!(matches!(
            check_header("X-A", "1\r\nAuthorization: Bearer x"),
            Err(EgressDenied::BadHeaderValue(_))
        ));
        assert!(matches!(
            check_header("X-A", "1\nx"),
            Err(EgressDenied::BadHeaderValue(_))
        ));
        assert!(matches!(
            check_header("X-A", "1\0"),
            Err(EgressDenied::BadHeaderValue(_))
        ));
        assert!(matches!(
            check_header("X-A: b", "1"),
            Err(EgressDenied::BadHeaderName(_))
        ));
        assert!(matches!(
            check_header("X-A\r\nHost", "1"),
            Err(EgressDenied::BadHeaderName(_))
        ));
        assert!(matches!(
            check_header("", "1"),
            Err(EgressDenied::BadHeaderName(_))
        ));
    }

    #[test]
    fn query_is_encoded_by_the_host() {
        let base = Url::parse("https://api.hubapi.com").unwrap();
        let url = join(
            &base,
            "/crm/v3/owners",
            &[("email".into(), "a&b=c@x.com".into())],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.hubapi.com/crm/v3/owners?email=a%26b%3Dc%40x.com"
        );
        assert!(check_query("q", "a\r\nb").is_err());
    }

    #[test]
    fn join_keeps_the_base_prefix_and_origin() {
        let base = Url::parse("http://127.0.0.1:8080/hubspot/").unwrap();
        let url = join(&base, "/crm/v3/owners", &[]).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/hubspot/crm/v3/owners");
        let base = Url::parse("https://acme.my.salesforce.com").unwrap();
        let url = join(
            &base,
            "/services/data/v62.0/query",
            &[("q".into(), "SELECT Id FROM User".into())],
        )
        .unwrap();
        assert_eq!(url.host_str(), Some("acme.my.salesforce.com"));
        assert_eq!(url.path(), "/services/data/v62.0/query");
        assert!(join(&base, "//evil.example/x", &[]).is_err());
        assert!(join(&base, "/../x", &[]).is_err());
    }
}
