//! The agent loop through its observer: the real LLM client against the mock LLM, the
//! real MCP client against server-everything, and an observer that records what it is
//! told and approves what the test says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use promptops::agent::{Agent, AgentError, Observer, Outcome, Task, ToolCallRecord, ToolStatus};
use promptops::llm::LlmClient;
use promptops::mcp::{Principal, ToolOutput};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{AppOptions, Script, TestApp, edited_config, spawn_chat_app_with, words};
use crate::mcp_servers::{McpProcess, start_everything};
use crate::mock_llm::MockLlm;

/// Everything the agent told it, in order, and its answer to writes.
#[derive(Default)]
struct Recorder {
    approve: bool,
    seen: Mutex<Vec<String>>,
    records: Mutex<Vec<(bool, ToolStatus)>>,
}

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Observer for Recorder {
    fn text(&self, piece: &str) {
        self.seen.lock().unwrap().push(format!("text {piece}"));
    }

    fn notice(&self, message: &str) {
        self.seen.lock().unwrap().push(format!("notice {message}"));
    }

    fn tool_call(&self, call: &ToolCallRecord, arguments: &Value) {
        self.seen.lock().unwrap().push(format!("call {} {arguments} writes={}", call.name, call.writes));
    }

    fn tool_result(&self, call: &ToolCallRecord, output: &ToolOutput) {
        self.seen.lock().unwrap().push(format!("result {} {:?} {}", call.name, call.status, output.text));
    }

    fn approve<'a>(
        &'a self,
        call: &'a ToolCallRecord,
        _arguments: &'a Map<String, Value>,
        _cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.seen.lock().unwrap().push(format!("approve? {}", call.name));
        Box::pin(std::future::ready(if self.approve { Ok(()) } else { Err("Not this one.".to_owned()) }))
    }

    fn record<'a>(&'a self, call: &'a ToolCallRecord, new: bool) -> BoxFuture<'a, ()> {
        self.records.lock().unwrap().push((new, call.status));
        Box::pin(std::future::ready(()))
    }
}

struct World {
    app: TestApp,
    llm: MockLlm,
    agent: Agent,
    _everything: McpProcess,
}

async fn world(max_steps: u32) -> World {
    let everything = tokio::task::spawn_blocking(start_everything).await.unwrap();
    let url = everything.url.clone();
    let files = edited_config(|c| {
        c["agent"]["max_steps"] = json!(max_steps);
        c["mcp_servers"] = json!({"everything": {
            "url": url, "auth": {"type": "none"},
            "tools": {"allow": ["echo", "toggle-simulated-logging"], "default": ["echo", "toggle-simulated-logging"],
                      "write_patterns": ["toggle-*"]}
        }});
    });
    let (app, llm) = spawn_chat_app_with(AppOptions { files, ..AppOptions::default() }).await;
    let agent = Agent::new(Arc::new(LlmClient::new()), app.state.mcp.clone(), app.state.metrics.clone());
    World { app, llm, agent, _everything: everything }
}

impl World {
    async fn run(&self, observer: &Recorder, cancel: CancellationToken) -> Outcome {
        let snapshot = self.app.state.config.current().unwrap();
        let task = Task {
            endpoint: snapshot.config.service.default_endpoint.clone(),
            snapshot,
            principal: Principal::Token { scope: "agent-test".into(), token: None },
            tools: None,
            messages: vec![
                json!({"role": "system", "content": "Be brief."}),
                json!({"role": "user", "content": "Go."}),
            ],
            cancel,
        };
        tokio::time::timeout(Duration::from_secs(30), self.agent.run(task, observer)).await.unwrap()
    }
}

fn tool_call(name: &str, arguments: &Value) -> Script {
    Script::ToolCall { name: name.into(), arguments: arguments.to_string() }
}

#[tokio::test]
async fn a_read_runs_at_once_and_its_result_goes_back_to_the_model() {
    let w = world(8).await;
    w.llm.push(tool_call("echo", &json!({"message": "hi"})));
    w.llm.push(Script::Stream { pieces: words("It echoed."), delay: Duration::ZERO });
    let observer = Recorder::default();
    let outcome = w.run(&observer, CancellationToken::new()).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(outcome.text, "It echoed.");
    let seen = observer.seen();
    assert_eq!(seen[0], r#"call echo {"message":"hi"} writes=false"#);
    assert_eq!(seen[1], "result echo Done Echo: hi");
    let streamed: String =
        seen[2..].iter().map(|s| s.strip_prefix("text ").expect("only text after the call")).collect();
    assert_eq!(streamed, "It echoed.", "{seen:?}");
    assert_eq!(*observer.records.lock().unwrap(), [(true, ToolStatus::Running), (false, ToolStatus::Done)]);
    let second = &w.llm.received()[1].body["messages"];
    assert_eq!(
        second[3],
        json!({"role": "tool", "tool_call_id": second[2]["tool_calls"][0]["id"], "content": "Echo: hi"})
    );
    assert!(outcome.usage.completion_tokens.is_some(), "both steps' usage is counted: {:?}", outcome.usage);
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_write_waits_for_the_observer_and_a_refusal_is_what_the_model_hears() {
    let w = world(8).await;
    w.llm.push(tool_call("toggle-simulated-logging", &json!({})));
    w.llm.push(Script::Stream { pieces: words("Understood."), delay: Duration::ZERO });
    let observer = Recorder { approve: false, ..Recorder::default() };
    let outcome = w.run(&observer, CancellationToken::new()).await;
    assert!(outcome.result.is_ok());
    let seen = observer.seen();
    assert_eq!(
        seen[..3],
        [
            "call toggle-simulated-logging {} writes=true".to_owned(),
            "approve? toggle-simulated-logging".to_owned(),
            "result toggle-simulated-logging Refused Not this one.".to_owned(),
        ]
    );
    assert_eq!(*observer.records.lock().unwrap(), [(true, ToolStatus::Pending), (false, ToolStatus::Refused)]);
    assert_eq!(w.llm.received()[1].body["messages"][3]["content"], "Not this one.");

    // Approved, it runs.
    w.llm.push(tool_call("toggle-simulated-logging", &json!({})));
    w.llm.push(Script::Stream { pieces: words("Done."), delay: Duration::ZERO });
    let observer = Recorder { approve: true, ..Recorder::default() };
    w.run(&observer, CancellationToken::new()).await.result.unwrap();
    let statuses: Vec<ToolStatus> = observer.records.lock().unwrap().iter().map(|r| r.1).collect();
    assert_eq!(statuses, [ToolStatus::Pending, ToolStatus::Running, ToolStatus::Done]);
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_tools_fail_without_a_record_and_the_step_limit_and_cancel_end_a_run() {
    let w = world(2).await;
    w.llm.push(tool_call("no_such_tool", &json!({})));
    w.llm.push(tool_call("echo", &json!({"message": "again"})));
    let observer = Recorder::default();
    let outcome = w.run(&observer, CancellationToken::new()).await;
    assert!(matches!(outcome.result, Err(AgentError::StepLimit(2))), "{:?}", outcome.result);
    assert_eq!(
        outcome.result.unwrap_err().to_string(),
        "stopped after 2 rounds of tool calls without a final answer (agent.max_steps)"
    );
    let seen = observer.seen();
    assert_eq!(seen[1], "result no_such_tool Failed There is no tool named \"no_such_tool\" available.");
    assert!(observer.records.lock().unwrap().is_empty(), "an unknown tool is not kept: {seen:?}");

    let cancel = CancellationToken::new();
    cancel.cancel();
    w.llm.push(Script::Stream { pieces: words("never read"), delay: Duration::from_millis(200) });
    let outcome = w.run(&Recorder::default(), cancel).await;
    assert!(matches!(outcome.result, Err(AgentError::Cancelled)), "{:?}", outcome.result);
    w.app.stop().await.unwrap();
}
