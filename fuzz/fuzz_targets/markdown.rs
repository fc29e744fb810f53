//! An LLM's answer rendered for the page. Invariant: whatever the model writes, the HTML is
//! balanced (it cannot close the page's containers) and carries no active content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptops::chat::markdown::{active_content, is_balanced, render};

fuzz_target!(|data: &[u8]| {
    let markdown = String::from_utf8_lossy(data);
    let html = render(&markdown);
    assert!(is_balanced(&html), "unbalanced HTML for {markdown:?}: {html}");
    let active = active_content(&html);
    assert!(active.is_none(), "active content {active:?} for {markdown:?}: {html}");
});
