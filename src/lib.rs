//! promptops: a self-hosted, Kubernetes-native AI assistant for Jira and Confluence.
//! One library holds every part; `main.rs` only parses the command line and calls `cli::run`.

pub mod agent;
pub mod app;
pub mod audit;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod controller;
pub mod db;
pub mod jobs;
pub mod llm;
pub mod maintenance;
pub mod mcp;
pub mod prompts;
pub mod settings;
pub mod telemetry;
pub mod template;
pub mod text;
pub mod web;
