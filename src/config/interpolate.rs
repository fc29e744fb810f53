//! `${env:NAME}` and `${env:NAME:-default}` references in config string values.
//! Owns the reference grammar only; it never logs or returns the values it substitutes.

use std::collections::HashMap;

/// Where interpolation looks variables up. The process environment in production,
/// a map in tests (changing the real environment is unsafe in a threaded program).
pub trait Env: Send + Sync + std::fmt::Debug {
    fn var(&self, name: &str) -> Option<String>;
}

/// The environment of this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Why a string could not be interpolated. Messages name variables, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    #[error("environment variable {0} is not set and the reference gives no default (use ${{env:{0}:-default}})")]
    Missing(String),
    #[error("unterminated reference: `${{` without a closing `}}`")]
    Unterminated,
    #[error(
        "unsupported reference `${{{0}}}`: only ${{env:NAME}} and ${{env:NAME:-default}} are understood (write $${{ for a literal ${{)"
    )]
    Unsupported(String),
    #[error("invalid environment variable name {0:?}")]
    InvalidName(String),
}

/// Replaces every reference in `input`. `$${` stands for a literal `${`.
/// An unset or empty variable takes the default when one is given, as in a shell.
pub fn interpolate(input: &str, env: &dyn Env) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or(InterpolationError::Unterminated)?;
            out.push_str(&resolve(&after[..end], env)?);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// True when `input` holds at least one `${env:…}` reference.
pub fn references_env(input: &str) -> bool {
    input.replace("$${", "").contains("${env:")
}

fn resolve(reference: &str, env: &dyn Env) -> Result<String, InterpolationError> {
    let body = reference.strip_prefix("env:").ok_or_else(|| InterpolationError::Unsupported(reference.to_owned()))?;
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    if !is_valid_name(name) {
        return Err(InterpolationError::InvalidName(name.to_owned()));
    }
    match (env.var(name).filter(|v| !v.is_empty()), default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(InterpolationError::Missing(name.to_owned())),
    }
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let env = env(&[("HOST", "llm.internal"), ("EMPTY", "")]);
        assert_eq!(interpolate("https://${env:HOST}/v1", &env).as_deref(), Ok("https://llm.internal/v1"));
        assert_eq!(interpolate("${env:PORT:-8080}", &env).as_deref(), Ok("8080"));
        assert_eq!(interpolate("${env:EMPTY:-x}", &env).as_deref(), Ok("x"));
        assert_eq!(interpolate("${env:UNSET:-}", &env).as_deref(), Ok(""));
        assert_eq!(interpolate("${env:PORT:-a:-b}", &env).as_deref(), Ok("a:-b"));
    }

    #[test]
    fn leaves_plain_dollars_and_unescapes_double_dollar() {
        let env = env(&[]);
        assert_eq!(interpolate("costs $5", &env).as_deref(), Ok("costs $5"));
        assert_eq!(interpolate("$${env:X} stays", &env).as_deref(), Ok("${env:X} stays"));
        assert_eq!(interpolate("end$", &env).as_deref(), Ok("end$"));
    }

    #[test]
    fn errors_name_the_variable_not_a_value() {
        let env = env(&[]);
        assert_eq!(interpolate("Bearer ${env:API_KEY}", &env), Err(InterpolationError::Missing("API_KEY".into())));
        assert_eq!(interpolate("${env:API_KEY", &env), Err(InterpolationError::Unterminated));
        assert_eq!(interpolate("${HOME}", &env), Err(InterpolationError::Unsupported("HOME".into())));
        assert_eq!(interpolate("${env:9X}", &env), Err(InterpolationError::InvalidName("9X".into())));
    }

    #[test]
    fn detects_references() {
        assert!(references_env("Bearer ${env:KEY}"));
        assert!(!references_env("Bearer $${env:KEY}"));
        assert!(!references_env("Bearer sk-123"));
    }
}
