//! Repository functions: every SQL statement of the service, grouped by table.
//! They take a connection or transaction so services can compose them; no HTTP, no rules.

pub mod audit;
pub mod config_reloads;
pub mod conversations;
pub mod credentials;
pub mod jobs;
pub mod sessions;
pub mod users;
