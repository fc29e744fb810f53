//! The LLM client: requests built from the live config (URL, headers, payload template),
//! answers read as OpenAI-compatible or mapped company shapes, streamed as they arrive.
//! Knows nothing of users or conversations: `chat` decides what to ask.

pub mod client;
pub mod payload;
pub mod response;

pub use client::{LlmClient, LlmError, LlmEvent, LlmRequest};
pub use response::{Completion, ToolCall, Usage};
