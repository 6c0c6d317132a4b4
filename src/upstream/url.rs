//! `http://host[:port][/base]` URLs of model servers (plain HTTP only).

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` for the Host header.
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub base_path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported (no TLS)")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, rest) = v6.split_once(']').ok_or("unclosed `[` in the host")?;
            match rest.strip_prefix(':') {
                Some(p) => (h, p),
                None if rest.is_empty() => (h, "80"),
                None => return Err(format!("junk after `]`: `{rest}`")),
            }
        } else {
            authority.rsplit_once(':').unwrap_or((authority, "80"))
        };
        let port = port.parse().map_err(|_| format!("bad port `{port}`"))?;
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(HttpUrl {
            authority: authority.to_string(),
            host: host.to_string(),
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("127.0.0.1", 8000, "")
        );
        let u = HttpUrl::parse("http://[::1]:9000/kserve/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.base_path.as_str()),
            ("::1", 9000, "/kserve")
        );
        assert_eq!(u.authority, "[::1]:9000");
        let u = HttpUrl::parse("http://localhost").unwrap();
        assert_eq!(u.port, 80);
        let u = HttpUrl::parse("http://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        assert!(HttpUrl::parse("http://[::1:80").is_err());
        assert!(HttpUrl::parse("http://[::1]x").is_err());
        assert!(HttpUrl::parse("https://x:1").is_err());
        assert!(HttpUrl::parse("http://x:notaport").is_err());
        assert!(HttpUrl::parse("http://:80").is_err());
    }
}
