//! Jira and Confluence tools through the real mcp-atlassian, in front of the stub
//! Jira/Confluence, under each user's own token; approvals before writes; the failure modes;
//! and a second, unrelated MCP server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{AppOptions, Script, Session, Sse, TestApp, edited_config, spawn_chat_app_with, text_of, words};
use crate::mcp_servers::{McpProcess, start_atlassian, start_everything};
use crate::mock_llm::MockLlm;
use crate::stub_atlassian::StubAtlassian;

struct World {
    app: TestApp,
    llm: MockLlm,
    jira: StubAtlassian,
    mcp: McpProcess,
}

/// promptops with the mock LLM and the real mcp-atlassian in front of the stub.
async fn world(edit: impl FnOnce(&mut Value)) -> World {
    let jira = StubAtlassian::start().await;
    let base = jira.base.clone();
    let mcp = tokio::task::spawn_blocking(move || start_atlassian(&base)).await.unwrap();
    let url = mcp.url.clone();
    let files = edited_config(|c| {
        c["mcp_servers"]["atlassian"]["url"] = json!(url);
        edit(c);
    });
    let (app, llm) = spawn_chat_app_with(AppOptions { files, ..AppOptions::default() }).await;
    World { app, llm, jira, mcp }
}

async fn with_token(app: &TestApp, name: &str, pat: &str) -> Session {
    let session = app.user(name).await;
    let stored = session.put("/api/v1/me/credentials/jira", &json!({"token": pat})).await;
    assert_eq!(stored.status(), 200);
    session
}

fn tool_call(name: &str, arguments: &Value) -> Script {
    Script::ToolCall { name: name.into(), arguments: arguments.to_string() }
}

/// The names of the tools a request to the LLM offered.
fn offered_tools(request: &Value) -> Vec<String> {
    request["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap().to_owned()).collect()
}

fn of_kind<'a>(events: &'a [Sse], kind: &str) -> Vec<&'a Sse> {
    events.iter().filter(|e| e.event == kind).collect()
}

#[tokio::test]
async fn each_users_call_reaches_jira_with_their_own_token() {
    let w = world(|_| {}).await;
    w.jira.add_user("bob-pat-5678", "bob", "Bob Example");
    let alice = with_token(&w.app, "alice", "alice-pat").await;
    let bob = with_token(&w.app, "bob", "bob-pat-5678").await;
    for (session, pat) in [(&alice, "alice-pat"), (&bob, "bob-pat-5678")] {
        w.jira.clear_requests();
        w.llm.push(tool_call("jira_get_issue", &json!({"issue_key": "PAY-7"})));
        w.llm.push(Script::Stream { pieces: words("PAY-7 is blocked by PAY-9."), delay: Duration::ZERO });
        let conversation = session.conversation().await;
        let message = session.send(conversation, "What is blocking PAY-7?").await;
        let events = session.events(conversation, message, None).await;

        let call = of_kind(&events, "tool_call")[0];
        assert_eq!(call.data["name"], "jira_get_issue");
        assert_eq!(call.data["arguments"], json!({"issue_key": "PAY-7"}));
        assert_eq!(call.data["writes"], false);
        let result = of_kind(&events, "tool_result")[0];
        assert_eq!(result.data["status"], "done", "{result:?}\n{}", w.mcp.log());
        assert!(result.data["content"].as_str().unwrap().contains("Payment retries fail"));
        assert_eq!(text_of(&events), "PAY-7 is blocked by PAY-9.");

        let auth = w.jira.authorizations();
        assert_eq!(auth, [format!("Bearer {pat}")], "Jira saw only this user's token");
        assert!(w.jira.requests().iter().any(|r| r.path == "/rest/api/2/issue/PAY-7"));
        // The LLM got the tool result back, then answered.
        let second = &w.llm.received()[w.llm.requests() - 1].body;
        let tool_message = second["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap();
        assert!(tool_message["content"].as_str().unwrap().contains("PAY-9"));
    }
    let mut offered = offered_tools(&w.llm.received()[0].body);
    offered.sort();
    assert_eq!(
        offered,
        ["confluence_get_page", "confluence_search", "jira_add_comment", "jira_get_issue", "jira_search"],
        "only the configured default set of the 98 tools is sent"
    );
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_user_without_a_token_is_told_and_still_answered() {
    let w = world(|_| {}).await;
    let carl = w.app.user("carl").await;
    w.llm.push(Script::Stream { pieces: words("I cannot look that up."), delay: Duration::ZERO });
    let conversation = carl.conversation().await;
    let message = carl.send(conversation, "What is blocking PAY-7?").await;
    let events = carl.events(conversation, message, None).await;
    let notice = of_kind(&events, "notice")[0];
    assert_eq!(
        notice.data["message"],
        "No Jira token is stored, so the atlassian tools are off for this answer. Add your personal access token under Settings."
    );
    assert_eq!(text_of(&events), "I cannot look that up.");
    assert!(w.llm.received()[0].body.get("tools").is_none(), "no tools offered");
    assert!(w.jira.requests().is_empty());
    let page = carl.get(&format!("/c/{conversation}")).await.text().await.unwrap();
    assert!(
        page.contains("No Jira token is stored") && page.contains("href=\"/settings\""),
        "the notice stays, with a link"
    );
    w.app.stop().await.unwrap();
}

async fn wait_for(events: &mut Vec<Sse>, session: &Session, conversation: i64, message: i64, kind: &str) -> Sse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = events.iter().find(|e| e.event == kind) {
            return found.clone();
        }
        assert!(Instant::now() < deadline, "no {kind} event: {events:?}");
        let last = events.last().map(|e| e.id.parse::<u64>().unwrap());
        let more = session.events_until(conversation, message, last, 1).await;
        events.extend(more);
    }
}

#[tokio::test]
async fn a_write_waits_for_approval_and_nothing_is_written_before() {
    let w = world(|_| {}).await;
    let alice = with_token(&w.app, "alice", "alice-pat").await;
    let conversation = alice.conversation().await;
    let before = w.jira.comments("PAY-7").len();

    w.llm.push(tool_call("jira_add_comment", &json!({"issue_key": "PAY-7", "body": "Escalated by promptops."})));
    w.llm.push(Script::Stream { pieces: words("Done, I commented."), delay: Duration::ZERO });
    let message = alice.send(conversation, "Comment on PAY-7 that it is escalated.").await;
    let mut events = Vec::new();
    let approval = wait_for(&mut events, &alice, conversation, message, "approval_required").await;
    assert_eq!(approval.data["name"], "jira_add_comment");
    let call_id = approval.data["call_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.jira.writes().is_empty(), "nothing is written before approval");
    assert_eq!(alice.message(conversation, message).await["status"], "streaming", "the answer waits");

    // The pending approval survives a reload: a new follower replays it.
    let replay = alice.events_until(conversation, message, None, events.len()).await;
    assert!(replay.iter().any(|e| e.event == "approval_required"));
    // Someone else cannot approve it.
    let mallory = w.app.user("mallory").await;
    let path = format!("/api/v1/conversations/{conversation}/messages/{message}/approvals/{call_id}");
    assert_eq!(mallory.post(&path, &json!({"approve": true})).await.status(), 404);

    assert_eq!(alice.post(&path, &json!({"approve": true})).await.status(), 204);
    let rest = alice.events(conversation, message, None).await;
    let result = of_kind(&rest, "tool_result")[0];
    assert_eq!(result.data["status"], "done", "{result:?}");
    let writes = w.jira.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].authorization.as_deref(), Some("Bearer alice-pat"));
    assert_eq!(w.jira.comments("PAY-7").len(), before + 1);
    assert_eq!(alice.post(&path, &json!({"approve": true})).await.status(), 409, "decided once");

    // Refused: no write, and the LLM is told.
    w.llm.push(tool_call("jira_add_comment", &json!({"issue_key": "PAY-7", "body": "Again."})));
    w.llm.push(Script::Stream { pieces: words("Understood, I did not comment."), delay: Duration::ZERO });
    let message = alice.send(conversation, "Comment again.").await;
    let mut events = Vec::new();
    let approval = wait_for(&mut events, &alice, conversation, message, "approval_required").await;
    let path = format!(
        "/api/v1/conversations/{conversation}/messages/{message}/approvals/{}",
        approval.data["call_id"].as_str().unwrap()
    );
    assert_eq!(alice.post(&path, &json!({"approve": false})).await.status(), 204);
    let rest = alice.events(conversation, message, None).await;
    assert_eq!(of_kind(&rest, "tool_result")[0].data["status"], "refused");
    assert_eq!(w.jira.writes().len(), 1, "a refusal writes nothing");
    let told = &w.llm.received()[w.llm.requests() - 1].body["messages"];
    let tool_message = told.as_array().unwrap().iter().rev().find(|m| m["role"] == "tool").unwrap();
    assert!(tool_message["content"].as_str().unwrap().starts_with("The user refused this action"));

    // Both decisions are in the audit log.
    let admin = w.app.admin().await;
    let audit = admin.json("/api/v1/admin/audit?action=tool.&actor=alice").await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("tool.refuse", "jira_add_comment"), ("tool.approve", "jira_add_comment")]);

    // A finished conversation still shows its tool calls.
    let page = alice.get(&format!("/c/{conversation}")).await.text().await.unwrap();
    assert!(page.contains("jira_add_comment") && page.contains("refused"));
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn the_tool_list_is_fetched_once_while_cached() {
    let w = world(|_| {}).await;
    let alice = with_token(&w.app, "alice", "alice-pat").await;
    let conversation = alice.conversation().await;
    for _ in 0..3 {
        let message = alice.send(conversation, "hello").await;
        alice.events(conversation, message, None).await;
    }
    assert_eq!(w.app.metric("promptops_mcp_tool_list_fetches_total{server=\"atlassian\"}").await, 1.0);
    assert_eq!(w.app.state.mcp.open_sessions(), 1, "one warm session for Alice");
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_token_and_an_outage_are_survived_and_recovered_from() {
    let mut w = world(|_| {}).await;
    let zed = with_token(&w.app, "zed", "zed-unknown-pat").await;
    let conversation = zed.conversation().await;
    w.llm.push(tool_call("jira_get_issue", &json!({"issue_key": "PAY-7"})));
    w.llm.push(Script::Stream { pieces: words("Your token was refused."), delay: Duration::ZERO });
    let message = zed.send(conversation, "PAY-7?").await;
    let events = zed.events(conversation, message, None).await;
    let result = of_kind(&events, "tool_result")[0];
    assert_eq!(result.data["status"], "failed");
    assert!(result.data["content"].as_str().unwrap().contains("401"), "{result:?}");
    assert_eq!(events.last().unwrap().data["status"], "complete", "the answer goes on");

    let alice = with_token(&w.app, "alice", "alice-pat").await;
    let conversation = alice.conversation().await;
    w.mcp.kill();
    w.llm.push(Script::Stream { pieces: words("Without tools then."), delay: Duration::ZERO });
    let message = alice.send(conversation, "PAY-7?").await;
    let events = alice.events(conversation, message, None).await;
    let notice = of_kind(&events, "notice")[0];
    assert!(
        notice.data["message"].as_str().unwrap().starts_with("The atlassian tools are unavailable right now"),
        "{notice:?}"
    );
    assert_eq!(text_of(&events), "Without tools then.");

    // Back: a new server, the config pointed at it, and tools return without a restart.
    let base = w.jira.base.clone();
    let again = tokio::task::spawn_blocking(move || start_atlassian(&base)).await.unwrap();
    let url = again.url.clone();
    crate::helpers::write_files(
        &w.app.config_dir,
        &edited_config(|c| c["mcp_servers"]["atlassian"]["url"] = json!(url)),
    );
    w.app.wait_for_generation(2, Duration::from_secs(5)).await;
    w.llm.push(tool_call("jira_get_issue", &json!({"issue_key": "PAY-7"})));
    w.llm.push(Script::Stream { pieces: words("Blocked by PAY-9."), delay: Duration::ZERO });
    let message = alice.send(conversation, "PAY-7 now?").await;
    let events = alice.events(conversation, message, None).await;
    assert_eq!(of_kind(&events, "tool_result")[0].data["status"], "done");
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn test_connection_says_who_jira_sees() {
    let w = world(|_| {}).await;
    let alice = with_token(&w.app, "alice", "alice-pat").await;
    let check = alice.post("/api/v1/me/credentials/jira/test", &json!({})).await;
    let body: Value = check.json().await.unwrap();
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["message"], "Connected: Jira knows you as Alice Example (alice).");
    let card = alice.form("/settings/credentials/jira/test", &[]).await.text().await.unwrap();
    assert!(card.contains("Alice Example"));

    let eve = with_token(&w.app, "eve", "eve-wrong-pat").await;
    let body: Value = eve.post("/api/v1/me/credentials/jira/test", &json!({})).await.json().await.unwrap();
    assert_eq!(body["ok"], false);
    assert!(body["message"].as_str().unwrap().starts_with("Jira refused"), "{body}");
    let nobody = w.app.user("nobody").await;
    let body: Value = nobody.post("/api/v1/me/credentials/jira/test", &json!({})).await.json().await.unwrap();
    assert_eq!(body["message"], "The check failed: no Jira token is stored.");
    w.app.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_unrelated_mcp_server_works_the_same_way() {
    let everything = tokio::task::spawn_blocking(start_everything).await.unwrap();
    let url = everything.url.clone();
    let files = edited_config(|c| {
        c["mcp_servers"] = json!({"everything": {
            "url": url, "auth": {"type": "none"},
            "tools": {"allow": ["echo", "get-sum"], "default": ["echo", "get-sum"]}
        }});
    });
    let (app, llm) = spawn_chat_app_with(AppOptions { files, ..AppOptions::default() }).await;
    let user = app.user("una").await;
    let conversation = user.conversation().await;
    llm.push(tool_call("echo", &json!({"message": "hello from promptops"})));
    llm.push(Script::Stream { pieces: words("It echoed."), delay: Duration::ZERO });
    let message = user.send(conversation, "echo something").await;
    let events = user.events(conversation, message, None).await;
    let result = of_kind(&events, "tool_result")[0];
    assert_eq!(result.data["status"], "done");
    assert_eq!(result.data["content"], "Echo: hello from promptops");
    let offered = offered_tools(&llm.received()[0].body);
    assert_eq!(offered, ["echo", "get-sum"]);
    app.stop().await.unwrap();
    drop(everything);
}
