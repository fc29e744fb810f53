//! Small text helpers shared by parts that show or forward text they did not write
//! (character-based, so a cut never splits a UTF-8 sequence), and the naming rules shared
//! by config files and prompts.

/// The first `limit` characters of `text`, and whether anything was cut.
pub fn prefix(text: &str, limit: usize) -> (&str, bool) {
    match text.char_indices().nth(limit) {
        Some((end, _)) => (&text[..end], true),
        None => (text, false),
    }
}

/// A name of config.json, prompts.json or a personal prompt: lower-case letters, digits,
/// `-` or `_`, at most 63, starting with a letter or digit.
pub fn is_slug(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 63
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// What [`is_slug`] asks of `what`.
pub fn slug_message(what: &str) -> String {
    format!("{what} must be lower-case letters, digits, '-' or '_' (at most 63, starting with a letter or digit)")
}

/// A tool name, optionally with `*` wildcards: letters, digits, `_`, `-`, `.`, `*`.
pub fn is_tool_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 128
        && pattern.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '*'))
}

/// What [`is_tool_pattern`] asks of `pattern`.
pub fn tool_pattern_message(pattern: &str) -> String {
    format!("{pattern:?} is not a tool name or pattern (letters, digits, '_', '-', '.', and '*' as a wildcard)")
}

/// `names` joined by commas, or `none`.
pub fn list<'a, T: AsRef<str> + ?Sized + 'a>(names: impl Iterator<Item = &'a T>) -> String {
    let list: Vec<&str> = names.map(AsRef::as_ref).collect();
    if list.is_empty() { "none".into() } else { list.join(", ") }
}

/// An error with its causes, `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::prefix;

    #[test]
    fn cuts_at_characters_not_bytes() {
        assert_eq!(prefix("héllo", 2), ("hé", true));
        assert_eq!(prefix("hé", 2), ("hé", false));
        assert_eq!(prefix("", 3), ("", false));
    }
}
