//! LLM output is untrusted: Markdown is rendered to HTML on the server and sanitised with
//! ammonia before any page shows it (no scripts, handlers, images or non-web links).
//! Code blocks get a copy button added after cleaning.

use std::sync::LazyLock;

use pulldown_cmark::{Options, Parser, html};

static CLEANER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    // No images: a picture URL is how injected instructions leak data out of a chat.
    builder
        .rm_tags(["img"])
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer nofollow"))
        .url_relative(ammonia::UrlRelative::Deny);
    builder
});

const COPY_OPEN: &str = r#"<div class="code-block" x-data="copycode"><button type="button" class="code-copy" @click="copy" x-text="label">Copy</button><pre>"#;

/// Safe HTML for `markdown`: no scripts, no event handlers, no `javascript:` links.
pub fn render(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut raw = String::with_capacity(markdown.len() * 2);
    html::push_html(&mut raw, Parser::new_ext(markdown, options));
    let clean = CLEANER.clean(&raw).to_string();
    // Only our own fixed markup is added, around elements ammonia already vetted.
    clean.replace("<pre>", COPY_OPEN).replace("</pre>", "</pre></div>")
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn renders_markdown_and_strips_active_content() {
        let html = render(
            "**bold** [ok](https://example.com) [bad](javascript:alert(1)) <script>alert(1)</script>\n\n\
             <img src=x onerror=alert(1)> <a href=\"/relative\">r</a>",
        );
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains(r#"<a href="https://example.com" rel="noopener noreferrer nofollow">ok</a>"#), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("onerror") && !html.contains("<img"), "{html}");
        assert!(!html.contains("href=\"/relative\""), "{html}");
    }

    #[test]
    fn code_blocks_get_a_copy_button() {
        let html = render("```rust\nfn main() {}\n```");
        assert!(html.starts_with(r#"<div class="code-block" x-data="copycode">"#), "{html}");
        assert!(html.contains("fn main() {}"), "{html}");
        assert!(html.trim_end().ends_with("</pre></div>"), "{html}");
    }
}
