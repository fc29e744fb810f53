//! What is wrong with a config set: the file, the path inside it and why. Shared by
//! loading (unreadable files, bad JSON) and validation (everything else).

use std::fmt;

/// The four files of a config directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigFile {
    Config,
    Header,
    Payload,
    Prompts,
}

impl ConfigFile {
    pub const ALL: [ConfigFile; 4] = [Self::Config, Self::Header, Self::Payload, Self::Prompts];

    pub fn file_name(self) -> &'static str {
        match self {
            Self::Config => "config.json",
            Self::Header => "header.json",
            Self::Payload => "payload.json",
            Self::Prompts => "prompts.json",
        }
    }
}

impl fmt::Display for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// One thing wrong with a config set: the file, the JSON path inside it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub file: ConfigFile,
    /// Dotted JSON path such as `endpoints.local.url`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(file: ConfigFile, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file, path: path.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Every issue found in a rejected config set, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}
