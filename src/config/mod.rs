//! Configuration from the config directory (config.json, header.json, payload.json,
//! prompts.json): typed, interpolated, validated as a whole and swapped in live.
//! Owns the files and the live snapshot; it does not call LLMs or MCP servers itself.

pub mod interpolate;
pub mod issue;
pub mod load;
pub mod model;
pub mod reload;
pub mod store;
pub mod validate;
pub mod watcher;

pub use interpolate::{Env, ProcessEnv};
pub use issue::{ConfigError, ConfigFile, ConfigIssue};
pub use load::RawConfigSet;
pub use model::Config;
pub use reload::{ConfigReloader, ReloadOutcome};
pub use store::{ConfigSnapshot, ConfigStore};
pub use watcher::WatchOptions;
