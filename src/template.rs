//! The `{{name}}` placeholder syntax shared by prompt templates and payload templates.
//! Owns parsing only; filling a prompt or a request body belongs to its caller.

/// One `{{…}}` occurrence in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'a> {
    /// The trimmed name between the braces.
    pub name: &'a str,
    /// Byte range of the whole `{{…}}` in the text.
    pub span: std::ops::Range<usize>,
}

/// Why a text's placeholders could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` at byte {0} has no closing `}}}}`")]
    Unclosed(usize),
    #[error("placeholder {{{{{0}}}}} is not a valid name (letters, digits and _, starting with a letter)")]
    InvalidName(String),
}

/// Lists the placeholders of `text` in order of appearance.
pub fn placeholders(text: &str) -> Result<Vec<Placeholder<'_>>, TemplateError> {
    let mut found = Vec::new();
    let mut offset = 0;
    while let Some(start) = text[offset..].find("{{").map(|i| i + offset) {
        let inner_start = start + 2;
        let end = text[inner_start..].find("}}").map(|i| i + inner_start).ok_or(TemplateError::Unclosed(start))?;
        let name = text[inner_start..end].trim();
        if !is_valid_name(name) {
            return Err(TemplateError::InvalidName(name.to_owned()));
        }
        found.push(Placeholder { name, span: start..end + 2 });
        offset = end + 2;
    }
    Ok(found)
}

/// The placeholder name when `text` is exactly one placeholder, such as `"{{messages}}"`.
pub fn whole_placeholder(text: &str) -> Option<&str> {
    let found = placeholders(text).ok()?;
    match found.as_slice() {
        [only] if only.span == (0..text.len()) => Some(only.name),
        _ => None,
    }
}

pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic()) && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders_with_spaces_and_positions() {
        let found = placeholders("Blockers of {{ project }} since {{since}}.").unwrap();
        let names: Vec<_> = found.iter().map(|p| p.name).collect();
        assert_eq!(names, ["project", "since"]);
        assert_eq!(found[0].span, 12..25);
    }

    #[test]
    fn rejects_unclosed_and_invalid_names() {
        assert_eq!(placeholders("a {{b"), Err(TemplateError::Unclosed(2)));
        assert_eq!(placeholders("{{1x}}"), Err(TemplateError::InvalidName("1x".into())));
        assert_eq!(placeholders("{{}}"), Err(TemplateError::InvalidName(String::new())));
    }

    #[test]
    fn whole_placeholder_only_matches_a_lone_placeholder() {
        assert_eq!(whole_placeholder("{{messages}}"), Some("messages"));
        assert_eq!(whole_placeholder("{{ stream }}"), Some("stream"));
        assert_eq!(whole_placeholder("x{{stream}}"), None);
        assert_eq!(whole_placeholder("plain"), None);
    }
}
