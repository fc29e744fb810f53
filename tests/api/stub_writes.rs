//! The stub Jira/Confluence's writes and faults, through the real mcp-atlassian called
//! directly over MCP (no promptops in between): pages created, found, read and updated, a
//! comment added and read back, and an outage and a refused write seen as tool errors.

use std::collections::HashMap;

use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::{RoleClient, RunningService, ServiceExt as _};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::mcp_servers::{McpProcess, start_atlassian};
use crate::stub_atlassian::StubAtlassian;

type Client = RunningService<RoleClient, ClientConfig>;

/// An MCP session to mcp-atlassian as this PAT's user.
async fn client(mcp: &McpProcess, pat: &str) -> Client {
    let value = http::HeaderValue::try_from(format!("Token {pat}")).unwrap();
    let config = StreamableHttpClientTransportConfig::with_uri(mcp.url.clone())
        .custom_headers(HashMap::from([(http::header::AUTHORIZATION, value)]));
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ClientConfig::default().serve(transport).await.unwrap()
}

/// Calls a tool; `Ok(text)` for a result, `Err(text)` for a tool error (or a protocol error).
async fn call(client: &Client, tool: &str, arguments: Value) -> Result<String, String> {
    let Value::Object(arguments) = arguments else { panic!("arguments are an object") };
    let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
    match client.call_tool(request).await {
        Err(e) => Err(format!("protocol error: {e}")),
        Ok(result) => {
            let content = serde_json::to_value(&result.content).unwrap();
            let text: Vec<String> = content
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["text"].as_str().map(str::to_owned))
                .collect();
            let text = text.join("\n");
            eprintln!("--- {tool} -> is_error={:?}\n{text}", result.is_error);
            if result.is_error == Some(true) { Err(text) } else { Ok(text) }
        }
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn pages_and_comments_are_written_and_faults_are_tool_errors() {
    let stub = StubAtlassian::start().await;
    let base = stub.base.clone();
    let mcp = tokio::task::spawn_blocking(move || start_atlassian(&base)).await.unwrap();
    let alice = client(&mcp, "alice-pat").await;
    let title = "Weekly blockers: payments";

    // Create, as Alice, in PAY.
    let created = call(
        &alice,
        "confluence_create_page",
        json!({"space_key": "PAY", "title": title, "content": "# Blockers\n\nPAY-7 is blocked by PAY-9.\n\nmark-one",
               "content_format": "markdown"}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", mcp.log()));
    let created = parse(&created);
    let id = created["page"]["id"].as_str().unwrap().to_owned();
    let pages = stub.pages_titled("PAY", title);
    assert_eq!(pages.len(), 1, "{pages:?}");
    assert_eq!(pages[0].id, id);
    assert_eq!((pages[0].version, pages[0].author.as_str()), (1, "alice"));
    assert!(pages[0].body.contains("mark-one") && pages[0].body.contains("<h1"), "stored as storage: {:?}", pages[0]);
    let post = stub
        .writes()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.trim_end_matches('/') == "/rest/api/content")
        .unwrap();
    assert_eq!(post.authorization.as_deref(), Some("Bearer alice-pat"));
    assert_eq!(post.json()["space"]["key"], "PAY");

    // A second page with that title is refused, as Confluence does.
    let again =
        call(&alice, "confluence_create_page", json!({"space_key": "PAY", "title": title, "content": "x"})).await;
    assert!(again.unwrap_err().contains("already exists"));
    assert_eq!(stub.pages_titled("PAY", title).len(), 1);

    // A child page, under the new one.
    let child = call(
        &alice,
        "confluence_create_page",
        json!({"space_key": "PAY", "title": "Blockers archive", "content": "old", "parent_id": id}),
    )
    .await
    .unwrap();
    let child_id = parse(&child)["page"]["id"].as_str().unwrap().to_owned();
    assert_eq!(stub.page(&child_id).unwrap().parent_id.as_deref(), Some(id.as_str()));

    // Found by title (CQL), by text, and read by id and by title.
    let found =
        call(&alice, "confluence_search", json!({"query": format!("space = \"PAY\" AND title = \"{title}\"")})).await;
    let found = parse(&found.unwrap());
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["id"], id.as_str());
    let by_text = parse(&call(&alice, "confluence_search", json!({"query": "mark-one"})).await.unwrap());
    assert_eq!(by_text.as_array().unwrap().len(), 1, "siteSearch finds the body: {by_text}");
    let page = parse(&call(&alice, "confluence_get_page", json!({"page_id": id})).await.unwrap());
    assert!(page.to_string().contains("mark-one"), "{page}");
    let page = parse(&call(&alice, "confluence_get_page", json!({"title": title, "space_key": "PAY"})).await.unwrap());
    assert!(page.to_string().contains(&id), "{page}");

    // Updated: the version goes up, the body is replaced.
    let updated = call(
        &alice,
        "confluence_update_page",
        json!({"page_id": id, "title": title, "content": "Nothing blocks PAY-7 now.\n\nmark-two"}),
    )
    .await
    .unwrap();
    let updated = parse(&updated);
    assert_eq!(updated["page"]["id"], id.as_str());
    let page = stub.page(&id).unwrap();
    assert_eq!(page.version, 2);
    assert!(page.body.contains("mark-two") && !page.body.contains("mark-one"), "{page:?}");
    let put = stub.writes().into_iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(put.json()["version"]["number"], 2);

    // A comment on PAY-7, read back through jira_get_issue.
    let added = call(&alice, "jira_add_comment", json!({"issue_key": "PAY-7", "body": "Checked: mark-three"})).await;
    let added = parse(&added.unwrap());
    let last = stub.comments("PAY-7").last().cloned().unwrap();
    assert!(last.body.contains("mark-three") && last.author == "alice");
    assert_eq!(added["id"], last.id.as_str(), "{added}");
    let issue =
        call(&alice, "jira_get_issue", json!({"issue_key": "PAY-7", "fields": "summary,comment", "comment_limit": 20}))
            .await
            .unwrap();
    let issue = parse(&issue);
    let comments = issue["comments"].as_array().unwrap_or_else(|| panic!("{issue}"));
    assert_eq!(comments.len(), 4, "{issue}");
    assert!(comments.iter().any(|c| c["body"].as_str().unwrap().contains("mark-three")), "{issue}");

    // An outage: tool errors, nothing written.
    let (pages_before, comments_before) = (stub.all_pages(), stub.comments("PAY-7"));
    let seen = stub.requests().len();
    stub.set_outage(true);
    let down = call(&alice, "jira_get_issue", json!({"issue_key": "PAY-7", "comment_limit": 5})).await;
    assert!(down.unwrap_err().contains("503"));
    let down = call(&alice, "jira_add_comment", json!({"issue_key": "PAY-7", "body": "mark-four"})).await;
    assert!(down.unwrap_err().contains("503"));
    let down =
        call(&alice, "confluence_create_page", json!({"space_key": "PAY", "title": "Down", "content": "x"})).await;
    assert!(down.unwrap_err().contains("503"));
    let during = &stub.requests()[seen..];
    assert!(!during.is_empty() && during.iter().all(|r| r.status == 503), "{during:?}");
    stub.set_outage(false);

    // A refused write (403): tool errors, nothing written.
    stub.set_write_status(Some(403));
    // mcp-atlassian passes on Jira's message, not the status.
    let refused = call(&alice, "jira_add_comment", json!({"issue_key": "PAY-7", "body": "mark-five"})).await;
    assert!(refused.unwrap_err().contains("You do not have the permission to comment on this issue."));
    let refused =
        call(&alice, "confluence_create_page", json!({"space_key": "PAY", "title": "No", "content": "x"})).await;
    assert!(refused.is_err());
    let refused = call(&alice, "confluence_update_page", json!({"page_id": id, "title": title, "content": "no"})).await;
    assert!(refused.unwrap_err().contains("not permitted"));
    assert!(stub.writes().iter().filter(|r| r.status == 403).count() >= 3, "{:?}", stub.writes());
    // Reads still work.
    call(&alice, "jira_get_issue", json!({"issue_key": "PAY-7", "comment_limit": 5})).await.unwrap();
    stub.set_write_status(None);
    assert_eq!(stub.all_pages(), pages_before, "no page written during the faults");
    assert_eq!(stub.comments("PAY-7").len(), comments_before.len(), "no comment written during the faults");

    assert!(stub.unknown().is_empty(), "{:?}", stub.unknown());
    alice.cancel().await.unwrap();
}
