//! Small text helpers shared by parts that show or forward text they did not write.
//! Character-based, so a cut never splits a UTF-8 sequence.

/// The first `limit` characters of `text`, and whether anything was cut.
pub fn prefix(text: &str, limit: usize) -> (&str, bool) {
    match text.char_indices().nth(limit) {
        Some((end, _)) => (&text[..end], true),
        None => (text, false),
    }
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
