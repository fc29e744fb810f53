//! Reading the config directory and turning its four files into a validated [`Config`].
//! Pure apart from file reads: no logging, no global state, no swapping (see `store`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::interpolate::{Env, interpolate};
use super::issue::{ConfigError, ConfigFile, ConfigIssue};
use super::model::{Config, PromptsFile, ServiceConfig};
use super::validate;

/// The bytes of the four files as read at one moment, before any parsing.
#[derive(Debug, Clone)]
pub struct RawConfigSet {
    dir: PathBuf,
    files: Vec<(ConfigFile, Result<Vec<u8>, String>)>,
}

impl RawConfigSet {
    /// Reads the four files through their visible paths (following kubelet's symlinks).
    /// A file that cannot be read is kept as an error so the set still has a digest.
    pub async fn read(dir: &Path) -> Self {
        let mut files = Vec::with_capacity(ConfigFile::ALL.len());
        for file in ConfigFile::ALL {
            let path = dir.join(file.file_name());
            let content = tokio::fs::read(&path).await.map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("missing: expected at {}", path.display()),
                _ => format!("cannot read {}: {e}", path.display()),
            });
            files.push((file, content));
        }
        Self { dir: dir.to_path_buf(), files }
    }

    /// A set from contents in hand, in [`ConfigFile::ALL`]'s order (the fuzz target's way
    /// in; `dir` only names where the set would live).
    pub fn from_contents(dir: &Path, contents: [Vec<u8>; 4]) -> Self {
        let files = ConfigFile::ALL.into_iter().zip(contents).map(|(file, bytes)| (file, Ok(bytes))).collect();
        Self { dir: dir.to_path_buf(), files }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SHA-256 over the names and contents of the four files, hex encoded. Two reads
    /// with the same digest hold the same configuration.
    pub fn sha256(&self) -> String {
        let mut hasher = Sha256::new();
        for (file, content) in &self.files {
            hasher.update(file.file_name().as_bytes());
            match content {
                Ok(bytes) => {
                    hasher.update([0u8]);
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(bytes);
                }
                Err(reason) => {
                    hasher.update([1u8]);
                    hasher.update(reason.as_bytes());
                }
            }
        }
        hex::encode(hasher.finalize())
    }

    /// Parses, interpolates and validates the whole set. All issues found are returned
    /// together so one `config check` shows everything to fix.
    pub fn parse(&self, env: &dyn Env) -> Result<Config, ConfigError> {
        let mut issues = Vec::new();
        let mut documents = Vec::with_capacity(self.files.len());
        for (file, content) in &self.files {
            match content {
                Ok(bytes) => match serde_json::from_slice::<Value>(bytes) {
                    Ok(value) => documents.push((*file, value)),
                    Err(e) => issues.push(ConfigIssue::new(*file, "", format!("invalid JSON: {e}"))),
                },
                Err(reason) => issues.push(ConfigIssue::new(*file, "", reason.clone())),
            }
        }
        if !issues.is_empty() {
            return Err(ConfigError { issues });
        }

        let env = Recording::new(env);
        for (file, value) in &mut documents {
            issues.extend(validate::inline_secrets(*file, value));
            interpolate_strings(value, *file, "", &env, &mut issues);
        }
        if !issues.is_empty() {
            return Err(ConfigError { issues });
        }
        // From here on a message may quote a value that came from the environment (a URL
        // that does not parse, a name that is not defined): it is shown as its reference.
        let hide = |mut error: ConfigError| {
            for issue in &mut error.issues {
                issue.message = env.hide_values(&issue.message);
            }
            error
        };

        let take = |wanted: ConfigFile| {
            documents.iter().find(|(file, _)| *file == wanted).map(|(_, value)| value.clone()).unwrap_or(Value::Null)
        };
        let service = typed::<ServiceConfig>(take(ConfigFile::Config), ConfigFile::Config, &mut issues);
        let headers = typed(take(ConfigFile::Header), ConfigFile::Header, &mut issues);
        let payloads = typed(take(ConfigFile::Payload), ConfigFile::Payload, &mut issues);
        let prompts = typed::<PromptsFile>(take(ConfigFile::Prompts), ConfigFile::Prompts, &mut issues);
        let (Some(service), Some(headers), Some(payloads), Some(prompts)) = (service, headers, payloads, prompts)
        else {
            return Err(hide(ConfigError { issues }));
        };

        validate::validate(service, headers, payloads, prompts).map_err(|issues| hide(ConfigError { issues }))
    }
}

/// An environment that remembers what it handed out, so messages can leave it out.
#[derive(Debug)]
struct Recording<'a> {
    env: &'a dyn Env,
    given: Mutex<Vec<(String, String)>>,
}

impl<'a> Recording<'a> {
    fn new(env: &'a dyn Env) -> Self {
        Self { env, given: Mutex::new(Vec::new()) }
    }

    /// `message` with each value handed out (of 4 characters or more: shorter ones are no
    /// secret and would match everywhere) replaced by its `${env:NAME}` reference, as
    /// written and as quoted with escapes (serde quotes what it cannot read), longest first
    /// so a value inside another is not half replaced.
    fn hide_values(&self, message: &str) -> String {
        let mut forms: Vec<(String, String)> = Vec::new();
        for (name, value) in self.given.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            if value.chars().count() < 4 {
                continue;
            }
            let quoted = format!("{value:?}");
            let escaped = quoted[1..quoted.len() - 1].to_owned();
            forms.push((value.clone(), name.clone()));
            forms.push((escaped, name.clone()));
        }
        forms.sort_by_key(|(form, _)| std::cmp::Reverse(form.len()));
        forms
            .into_iter()
            .fold(message.to_owned(), |text, (form, name)| text.replace(&form, &format!("${{env:{name}}}")))
    }
}

impl Env for Recording<'_> {
    fn var(&self, name: &str) -> Option<String> {
        let value = self.env.var(name)?;
        self.given.lock().unwrap_or_else(PoisonError::into_inner).push((name.to_owned(), value.clone()));
        Some(value)
    }
}

fn typed<T: DeserializeOwned>(value: Value, file: ConfigFile, issues: &mut Vec<ConfigIssue>) -> Option<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            issues.push(ConfigIssue::new(file, path, e.into_inner().to_string()));
        })
        .ok()
}

/// Replaces `${env:…}` references in every string value (keys are left alone).
fn interpolate_strings(value: &mut Value, file: ConfigFile, path: &str, env: &dyn Env, issues: &mut Vec<ConfigIssue>) {
    match value {
        Value::String(s) => match interpolate(s, env) {
            Ok(done) => *s = done,
            Err(e) => issues.push(ConfigIssue::new(file, path, e.to_string())),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_strings(item, file, &format!("{path}[{i}]"), env, issues);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                interpolate_strings(item, file, &child, env, issues);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Found by the `config_set` fuzz target: a URL that does not parse was quoted whole in
    /// the error, with the part that came from an environment variable.
    #[test]
    fn errors_show_a_reference_instead_of_a_value_from_the_environment() {
        let config = include_str!("../../config/config.json")
            .replace("${env:PROMPTOPS_LLM_BASE_URL:-http://127.0.0.1:11434/v1}", "${env:BASE}");
        let set = RawConfigSet::from_contents(
            Path::new("/config"),
            [
                config.into_bytes(),
                include_bytes!("../../config/header.json").to_vec(),
                include_bytes!("../../config/payload.json").to_vec(),
                include_bytes!("../../config/prompts.json").to_vec(),
            ],
        );
        let env: HashMap<String, String> =
            [("BASE".to_owned(), "httt://127.0.0.1:99999/\"SECRET-in-a-url-7f3a\"".to_owned())].into();
        let error = set.parse(&env).expect_err("the URL does not parse");
        let shown = error.to_string();
        assert!(!shown.contains("SECRET-in-a-url-7f3a"), "{shown}");
        assert!(shown.contains("endpoints.local.url") && shown.contains("${env:BASE}"), "{shown}");
    }
}
