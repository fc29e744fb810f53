//! The integration test binary: every test talks to a real promptops on a loopback port.
// Test helpers panic on purpose: a failed set-up is a failed test.
#![allow(clippy::unwrap_used)]

mod accounts;
mod admin;
mod agent;
mod attacks;
mod backup;
mod chat;
mod cli;
mod config_check;
mod config_reload;
#[path = "../support/configmap.rs"]
mod configmap;
mod crds;
mod delivery;
mod helpers;
mod jobs;
mod maintenance;
mod mcp;
#[path = "../support/mcp_servers.rs"]
mod mcp_servers;
#[path = "../support/mock_llm.rs"]
mod mock_llm;
mod probes;
mod prompts;
mod security;
mod smoke;
#[path = "../support/stub_atlassian.rs"]
mod stub_atlassian;
mod stub_writes;
mod vault;
