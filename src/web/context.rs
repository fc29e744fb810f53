//! What the web adapter knows about how it is reached: public origin, whether cookies
//! must be `Secure`, where client addresses come from.

use axum::http::{HeaderMap, HeaderName, header};
use url::Url;

#[derive(Debug, Clone)]
pub struct WebContext {
    /// `scheme://host[:port]` of the public URL.
    pub public_origin: String,
    /// The public URL is https: `Secure` cookies (with the `__Host-` prefix) and HSTS.
    pub secure: bool,
    pub client_ip_header: Option<HeaderName>,
}

impl WebContext {
    pub fn new(public_url: &Url, client_ip_header: Option<HeaderName>) -> Self {
        Self {
            public_origin: public_url.origin().ascii_serialization(),
            secure: public_url.scheme() == "https",
            client_ip_header,
        }
    }

    /// The public URL of a path of this site.
    pub fn url(&self, path: &str) -> Url {
        // The origin is a serialised URL origin and `path` one of our literal paths.
        #[allow(clippy::expect_used)]
        Url::parse(&self.public_origin).and_then(|base| base.join(path)).expect("the public origin is a URL")
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.secure { "__Host-promptops_session" } else { "promptops_session" }
    }

    /// A state-changing request may come from the public origin or from the origin the
    /// browser itself addressed (`Host`); requests without `Origin` come from non-browser
    /// clients, which carry no ambient cookie risk beyond the CSRF token check.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        if headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site") {
            return false;
        }
        // Browsers send Origin on every cross-origin write; without it, the Referer's origin
        // stands in (OWASP's fallback); with neither, the request is not from a browser page.
        let origin = match headers.get(header::ORIGIN) {
            Some(origin) => origin.to_str().unwrap_or("null").to_owned(),
            None => match headers.get(header::REFERER) {
                Some(referer) => referer
                    .to_str()
                    .ok()
                    .and_then(|r| Url::parse(r).ok())
                    .map_or_else(|| "null".to_owned(), |url| url.origin().ascii_serialization()),
                None => return true,
            },
        };
        let origin = origin.as_str();
        if origin == self.public_origin {
            return true;
        }
        let scheme = if self.secure { "https" } else { "http" };
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|host| origin == format!("{scheme}://{host}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn allows_the_public_or_addressed_origin_only() {
        let web = WebContext::new(&"https://po.example.com".parse().unwrap(), None);
        assert!(web.secure);
        assert_eq!(web.cookie_name(), "__Host-promptops_session");
        assert!(web.origin_allowed(&headers(&[])));
        assert!(web.origin_allowed(&headers(&[("origin", "https://po.example.com")])));
        assert!(web.origin_allowed(&headers(&[("origin", "https://alias:8443"), ("host", "alias:8443")])));
        assert!(!web.origin_allowed(&headers(&[("origin", "https://evil.example"), ("host", "po.example.com")])));
        assert!(!web.origin_allowed(&headers(&[("origin", "null")])));
        assert!(!web.origin_allowed(&headers(&[("sec-fetch-site", "cross-site")])));
        // Without Origin, the Referer's origin is checked.
        assert!(web.origin_allowed(&headers(&[("referer", "https://po.example.com/c/1")])));
        assert!(!web.origin_allowed(&headers(&[("referer", "https://evil.example/po.example.com")])));
        assert!(!web.origin_allowed(&headers(&[("referer", "not a url")])));
    }
}
