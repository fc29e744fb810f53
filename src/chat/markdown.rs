//! LLM output is untrusted: Markdown is rendered to HTML on the server and sanitised with
//! ammonia before any page shows it (no scripts, handlers, images or non-web links).
//! Code blocks get a copy button, added on the parsed structure.

use std::sync::LazyLock;

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};

static CLEANER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    // No images: a picture URL is how injected instructions leak data out of a chat.
    builder
        .rm_tags(["img"])
        .url_schemes(["http", "https", "mailto"].into_iter().collect())
        .link_rel(Some("noopener noreferrer nofollow"))
        .url_relative(ammonia::UrlRelative::Deny)
        // A code block's placeholder is only ever swapped for its block in text: raw HTML
        // can leave an attribute open across a block, and a placeholder inside an attribute
        // value would put the block's text (quotes included) into the tag.
        .attribute_filter(|_, _, value| {
            Some(if value.contains(PLACEHOLDER_MARK) {
                value.replace(PLACEHOLDER_MARK, "\u{FFFD}").into()
            } else {
                value.into()
            })
        });
    builder
});

/// Brackets a code block's placeholder (a private-use character).
const PLACEHOLDER_MARK: char = '\u{E000}';

const COPY_OPEN: &str = r#"<div class="code-block" x-data="copycode"><button type="button" class="code-copy" @click="copy" x-text="label">Copy</button>"#;
const COPY_CLOSE: &str = "</div>";

/// Safe HTML for `markdown`: no scripts, no event handlers, no `javascript:` links.
///
/// Code blocks get a copy button, added on the parsed structure: each fenced or indented
/// code block is taken out of the event stream and replaced by a placeholder no input can
/// forge (it carries a random nonce), the rest is rendered and sanitised, and each
/// placeholder is then replaced by its block, sanitised on its own, inside our fixed
/// wrapper. HTML the input writes itself (a `<pre>` of its own) never gets a wrapper. A
/// block whose placeholder the input's own HTML swallowed (an attribute left open across
/// it) is shown after the rest, so no code is lost.
pub fn render(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let placeholder = |n: usize| format!("{PLACEHOLDER_MARK}{nonce}:{n}{PLACEHOLDER_MARK}");
    let mut blocks: Vec<Vec<Event<'_>>> = Vec::new();
    let mut current: Option<Vec<Event<'_>>> = None;
    let mut events = Vec::new();
    for event in Parser::new_ext(markdown, options) {
        match (&mut current, event) {
            (None, event @ Event::Start(Tag::CodeBlock(_))) => current = Some(vec![event]),
            (Some(block), event @ Event::End(TagEnd::CodeBlock)) => {
                block.push(event);
                blocks.push(std::mem::take(block));
                current = None;
                events.push(Event::Text(placeholder(blocks.len() - 1).into()));
            }
            (Some(block), event) => block.push(event),
            (None, event) => events.push(event),
        }
    }
    let mut raw = String::with_capacity(markdown.len() * 2);
    html::push_html(&mut raw, events.into_iter());
    let mut clean = CLEANER.clean(&raw).to_string();
    for (n, block) in blocks.into_iter().enumerate() {
        let mut code = String::new();
        html::push_html(&mut code, block.into_iter());
        let wrapped = format!("{COPY_OPEN}{}{COPY_CLOSE}", CLEANER.clean(code.trim_end()));
        let mark = placeholder(n);
        if clean.contains(&mark) {
            clean = clean.replacen(&mark, &wrapped, 1);
        } else {
            clean.push_str(&wrapped);
        }
    }
    clean
}

/// The first tag of `html` that could run something or reach out (a script, frame, form,
/// picture, style, an event handler, an Alpine directive other than our copy button's, a
/// `javascript:` URL), if any. What [`render`] promises never to return; checked by its
/// property test and by the fuzz target.
pub fn active_content(html: &str) -> Option<String> {
    const ACTIVE: &[&str] = &["script", "iframe", "svg", "style", "form", "img", "math", "object", "embed", "base"];
    let ours = tags(COPY_OPEN);
    tags(html).into_iter().filter(|tag| !tag.starts_with('/') && !ours.contains(tag)).find_map(|tag| {
        let (name, attributes) = tag_parts(tag);
        let active = ACTIVE.contains(&name.as_str())
            || attributes.iter().any(|(attribute, value)| {
                attribute.starts_with("on")
                    || attribute.starts_with(['@', ':'])
                    || attribute.starts_with("x-")
                    || (URL_ATTRIBUTES.contains(&attribute.as_str()) && !is_web_url(value))
            });
        active.then(|| tag.to_owned())
    })
}

/// Whether `url` is relative or an `http`, `https` or `mailto` URL (the schemes kept).
fn is_web_url(url: &str) -> bool {
    let url = url.trim().to_ascii_lowercase();
    match url.split_once(':') {
        Some((scheme, _)) if !scheme.contains(['/', '?', '#']) => ["http", "https", "mailto"].contains(&scheme),
        _ => true,
    }
}

/// Attributes a browser follows or loads as a URL.
pub const URL_ATTRIBUTES: &[&str] = &["href", "src", "action", "formaction", "xlink:href", "srcdoc", "data", "poster"];

/// The lower-cased name and the attributes (lower-cased name, value without its quotes)
/// of the inside of one start tag, as a browser splits it.
pub fn tag_parts(tag: &str) -> (String, Vec<(String, String)>) {
    let mut chars = tag.chars().peekable();
    let name: String = chars.by_ref().take_while(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    let mut attributes = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == '/') {
            chars.next();
        }
        let attribute: String = std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace() && *c != '='))
            .collect::<String>()
            .to_ascii_lowercase();
        if attribute.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'=').is_some() {
            match chars.next_if(|c| *c == '"' || *c == '\'') {
                Some(quote) => {
                    value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != quote)));
                    chars.next();
                }
                None => value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace()))),
            }
        }
        attributes.push((attribute, value));
    }
    (name, attributes)
}

/// Whether every element `html` opens is closed, in order (void elements aside): the
/// other promise of [`render`], so an answer can never close the page's own containers.
pub fn is_balanced(html: &str) -> bool {
    const VOID: &[&str] = &["br", "hr", "input", "img", "wbr", "col"];
    let mut stack = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let Some(end) = rest[start..].find('>') else { return false };
        let tag = &rest[start + 1..start + end];
        rest = &rest[start + end + 1..];
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if tag.starts_with('/') {
            if stack.pop() != Some(name) {
                return false;
            }
        } else if !VOID.contains(&name.as_str()) && !tag.ends_with('/') {
            stack.push(name);
        }
    }
    stack.is_empty()
}

/// The insides of the tags of `html` (text between them is inert).
fn tags(html: &str) -> Vec<&str> {
    html.split('<').skip(1).filter_map(|part| part.split_once('>').map(|(tag, _)| tag)).collect()
}

#[cfg(test)]
mod tests {
    use super::{active_content, is_balanced, render};

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
        assert_eq!(html.matches("code-block").count(), 1);
    }

    /// Found by an outside sweep: the wrapper was closed after every `</pre>` but opened
    /// only for a bare `<pre>`, so an answer could close the page's containers.
    #[test]
    fn pre_written_by_the_answer_gets_no_wrapper_and_closes_nothing() {
        for input in
            ["<pre title=\"t\">x</pre>", "<pre>x</pre>", "</pre></div></div>", "a\n\n<pre>\n\n```\ncode\n```\n"]
        {
            let html = render(input);
            assert!(is_balanced(&html), "{input:?} gave {html}");
            assert!(html.matches(r#"<div class="code-block""#).count() <= 1, "{html}");
        }
    }

    /// Kept from the `markdown` fuzz target, whose first oracle took the title text for a
    /// link: `javascript:` inside a title is text; inside a link it is dropped.
    #[test]
    fn a_title_that_mentions_javascript_is_text_and_a_link_to_it_is_dropped() {
        let html = render("<pre title=](javascript:alert(5de6\u{b}459d)>1</pre>");
        assert!(html.contains("javascript:alert"), "{html}");
        assert_eq!(active_content(&html), None, "{html}");
        assert_eq!(
            active_content(r#"<a href=" JavaScript:alert(1)">x</a>"#).as_deref(),
            Some(r#"a href=" JavaScript:alert(1)""#)
        );
        assert_eq!(active_content(r#"<a href="https://e.example/a:b">x</a>"#), None);
        assert!(active_content(&render("[x](javascript:alert(1)) <a href=\"data:text/html,x\">y</a>")).is_none());
    }

    /// Found by the `markdown` fuzz target: raw HTML left an attribute open across a code
    /// block, so the block's placeholder sat in an attribute value and the block's text,
    /// quotes and all, was put into the tag (an `onmouseover` of the answer's choosing).
    #[test]
    fn a_code_block_inside_an_open_attribute_stays_text_and_is_kept() {
        let input = "<p title=\"t\n\n```js\n\" onmouseover=\"alert(1)\" x-init=\"alert(2)\n```\nre title=\"t\">x</p>";
        let html = render(input);
        assert!(is_balanced(&html), "{html}");
        assert_eq!(active_content(&html), None, "{html}");
        assert!(html.contains("x-init=\"alert(2)"), "the code is still shown, as text: {html}");
        assert_eq!(html.matches(r#"<div class="code-block""#).count(), 1, "{html}");
    }

    /// A property: for any input built from hostile pieces, the HTML is balanced and has
    /// no active content. Random inputs, seeded per run and printed when one fails.
    #[test]
    fn any_input_renders_balanced_and_inert() {
        use rand::{RngExt as _, SeedableRng as _};
        const PIECES: &[&str] = &[
            "<pre>",
            "</pre>",
            "<pre title=\"t\">",
            "</div>",
            "<div>",
            "```",
            "```js\n",
            "\n",
            "\n\n",
            "    ",
            "- ",
            "> ",
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "[x](javascript:alert(1))",
            "<a href=\"javascript:x\">",
            "<svg onload=alert(1)>",
            "<iframe src=//e>",
            "<style>*{}</style>",
            "**b**",
            "`c`",
            "| a | b |\n|---|---|\n",
            "<details open ontoggle=alert(1)>",
            "</code>",
            "<code>",
            "\u{E000}",
            "<!--",
            "-->",
            "&lt;",
            "<form action=//e>",
            "<button formaction=javascript:x>",
            "<math><mi xlink:href=javascript:x>",
            "text ",
            "<p>",
            "</p>",
            "<table>",
            "<p title=\"t\n",
            "\" onmouseover=\"alert(1)\" x-init=\"alert(2)",
        ];
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..3000 {
            let n = rng.random_range(1..24);
            let input: String = (0..n).map(|_| PIECES[rng.random_range(0..PIECES.len())]).collect();
            let html = render(&input);
            assert!(is_balanced(&html), "seed {seed}: {input:?} gave unbalanced {html}");
            let active = active_content(&html);
            assert!(active.is_none(), "seed {seed}: {input:?} gave active content {active:?}: {html}");
        }
    }
}
