//! The hosts `/fetch` may reach. switchboard is no open proxy: a URL is
//! fetched only if its scheme is http or https, it carries no userinfo, and
//! its parsed host (and port) is listed exactly. Names are compared as
//! written, never resolved: a host that is not listed is refused even if it
//! resolves to a listed address. Every redirect target is checked again.

use reqwest::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: String,
    /// `None`: the scheme's default port only.
    port: Option<u16>,
}

impl Entry {
    fn parse(entry: &str) -> Self {
        if let Some((host, port)) = entry.rsplit_once(':') {
            let bare_or_bracketed =
                !host.contains(':') || (host.starts_with('[') && host.ends_with(']'));
            if let (true, Ok(port)) = (bare_or_bracketed, port.parse()) {
                return Self {
                    host: host.to_owned(),
                    port: Some(port),
                };
            }
        }
        Self {
            host: entry.to_owned(),
            port: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// From settings entries, `host` or `host:port` (already lower-cased;
    /// an IPv6 host in brackets).
    pub fn new(hosts: &[String]) -> Self {
        Self {
            entries: hosts.iter().map(|entry| Entry::parse(entry)).collect(),
        }
    }

    /// The URL, parsed, if it may be fetched; else why not.
    pub fn check(&self, raw: &str) -> Result<Url, &'static str> {
        let url = Url::parse(raw).map_err(|_| "invalid url")?;
        self.check_url(url)
    }

    pub fn check_url(&self, url: Url) -> Result<Url, &'static str> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err("scheme not allowed");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("userinfo not allowed");
        }
        let host = url.host_str().ok_or("invalid url")?.to_ascii_lowercase();
        let port = url.port();
        let listed = self.entries.iter().any(|entry| {
            entry.host == host
                && match (entry.port, port) {
                    (Some(listed), _) => url.port_or_known_default() == Some(listed),
                    (None, explicit) => explicit.is_none(),
                }
        });
        if listed {
            Ok(url)
        } else {
            Err("host not allowed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> AllowList {
        AllowList::new(&["api.example.com".into(), "127.0.0.1:8081".into()])
    }

    #[test]
    fn listed_hosts_pass_exactly() {
        assert!(list().check("https://api.example.com/x?y=1").is_ok());
        assert!(list().check("http://API.example.com/").is_ok());
        assert!(list().check("http://127.0.0.1:8081/a").is_ok());
    }

    #[test]
    fn everything_else_is_refused() {
        let refused = [
            ("http://127.0.0.1:8082/", "host not allowed"),
            ("http://127.0.0.1/", "host not allowed"),
            ("http://localhost:8081/", "host not allowed"),
            ("https://api.example.com:8443/", "host not allowed"),
            ("http://api.example.com.evil.test/", "host not allowed"),
            ("http://api.example.com@evil.test/", "userinfo not allowed"),
            ("http://user:pw@api.example.com/", "userinfo not allowed"),
            ("file:///etc/passwd", "scheme not allowed"),
            ("ftp://api.example.com/", "scheme not allowed"),
            ("not a url", "invalid url"),
        ];
        for (url, why) in refused {
            assert_eq!(list().check(url).unwrap_err(), why, "{url}");
        }
    }
}
