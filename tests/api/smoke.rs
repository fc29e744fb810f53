//! Optional smoke test against a real small model (SmolLM2 under llama.cpp's server, see
//! `scripts/smoke-llm`, which starts it and runs this with PROMPTOPS_SMOKE_LLM_URL set).

use crate::helpers::{AppOptions, spawn_app_with, text_of};

#[tokio::test]
#[ignore = "needs a real model: run scripts/smoke-llm"]
async fn a_real_small_model_streams_an_answer() {
    let base = std::env::var("PROMPTOPS_SMOKE_LLM_URL").expect("PROMPTOPS_SMOKE_LLM_URL (scripts/smoke-llm sets it)");
    let mut options = AppOptions::default();
    options.env.insert("PROMPTOPS_LLM_BASE_URL".into(), base);
    let app = spawn_app_with(options).await;
    let admin = app.admin().await;
    let conversation = admin.conversation().await;
    let message = admin.send(conversation, "Name one colour of the rainbow.").await;
    let events = admin.events(conversation, message, None).await;
    let tokens = events.iter().filter(|e| e.event == "token").count();
    let text = text_of(&events);
    assert!(tokens > 1, "the answer streamed in more than one piece: {events:?}");
    assert!(!text.trim().is_empty());
    assert_eq!(events.last().unwrap().data["status"], "complete", "{events:?}");
    let stored = admin.message(conversation, message).await;
    assert_eq!(stored["content"], text.as_str());
    assert_eq!(stored["status"], "complete");
    app.stop().await.unwrap();
}
