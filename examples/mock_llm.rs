//! The tests' scripted mock LLM as a program, for the browser tests and for trying the UI
//! without a model: `cargo run --example mock_llm` prints its OpenAI-style base URL on the
//! first line of stdout and echoes every question back word by word.
//! `MOCK_LLM_DELAY_MS` sets the pause between words (default 60); `MOCK_LLM_MODE=agent`
//! makes it call Jira tools when asked about PAY-7 or to comment (see `Script::Agent`).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/support/mock_llm.rs"]
mod mock_llm;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let delay = std::env::var("MOCK_LLM_DELAY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let delay = Duration::from_millis(delay);
    let script = match std::env::var("MOCK_LLM_MODE").as_deref() {
        Ok("agent") => mock_llm::Script::Agent { delay },
        _ => mock_llm::Script::Echo { delay },
    };
    let mock = mock_llm::MockLlm::start_with_default(script).await;
    println!("{}", mock.base);
    std::future::pending::<()>().await;
}
