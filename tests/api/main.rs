//! The integration test binary: every test talks to a real promptops on a loopback port.
// Test helpers panic on purpose: a failed set-up is a failed test.
#![allow(clippy::unwrap_used)]

mod accounts;
mod admin;
mod chat;
mod cli;
mod config_check;
mod config_reload;
#[path = "../support/configmap.rs"]
mod configmap;
mod helpers;
#[path = "../support/mock_llm.rs"]
mod mock_llm;
mod probes;
mod security;
mod smoke;
mod vault;
