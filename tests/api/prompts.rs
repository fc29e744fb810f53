//! Personal prompts (`me:name`) through the API and the pages: made, listed, changed and
//! deleted; refused with the library's own reasons; private to their owner; usable in
//! chat and in personal jobs.

use serde_json::{Value, json};

use crate::helpers::{Session, spawn_chat_app};
use crate::jobs::{error_of, finished_run, run_now};

fn weekly() -> Value {
    json!({
        "name": "weekly",
        "title": "Weekly blockers",
        "description": "What blocks a project this week.",
        "template": "List the blockers of {{project}} since {{since}}.",
        "variables": [
            {"name": "project", "description": "Jira project key", "required": true},
            {"name": "since", "default": "last Monday"},
        ],
    })
}

async fn create(session: &Session, body: &Value) -> reqwest::Response {
    session.post("/api/v1/prompts", body).await
}

#[tokio::test]
async fn personal_prompts_are_made_listed_changed_and_deleted() {
    let (app, _mock) = spawn_chat_app().await;
    let ada = app.user("ada").await;

    let created = create(&ada, &weekly()).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["name"], "me:weekly");
    assert_eq!(created["source"], "personal");
    assert_eq!(created["editable"], true);
    assert_eq!(
        created["variables"][1],
        json!({"name": "since", "description": "", "required": false, "default": "last Monday"})
    );

    let list = ada.json("/api/v1/prompts").await;
    let names: Vec<(&str, &str, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["source"].as_str().unwrap(), p["editable"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("blockers", "file", false), ("release-notes", "file", false), ("me:weekly", "personal", true)]);
    assert_eq!(ada.json("/api/v1/prompts/me:weekly").await["title"], "Weekly blockers");

    // Refused with the library's reasons, which are the config's and the reconciler's.
    let mut undeclared = weekly();
    undeclared["name"] = json!("other");
    undeclared["template"] = json!("Blockers of {{project}} for {{team}} since {{since}}.");
    assert_eq!(
        error_of(create(&ada, &undeclared).await).await,
        (422, "the prompt is not valid: template: uses {{team}}, which is not declared in variables".into())
    );
    let mut bad_name = weekly();
    bad_name["name"] = json!("Not A Name");
    let (status, message) = error_of(create(&ada, &bad_name).await).await;
    assert_eq!(status, 422);
    assert!(message.starts_with("a prompt name must be lower-case letters"), "{message}");
    let mut elsewhere = weekly();
    elsewhere["name"] = json!("elsewhere");
    elsewhere["endpoint"] = json!("nowhere");
    let (status, message) = error_of(create(&ada, &elsewhere).await).await;
    assert_eq!(status, 422);
    assert!(message.contains("names endpoint \"nowhere\", which config.json does not define"), "{message}");
    assert_eq!(
        error_of(create(&ada, &weekly()).await).await,
        (409, "you already have a prompt named \"weekly\"".into())
    );
    assert_eq!(create(&ada, &json!({"name": "x", "title": "x", "template": "x", "colour": "red"})).await.status(), 422);

    // A change sets the fields it names; an invalid one changes nothing.
    let changed =
        ada.patch("/api/v1/prompts/me:weekly", &json!({"template": "Blockers of {{project}}, since {{since}}."})).await;
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["template"], "Blockers of {{project}}, since {{since}}.");
    assert_eq!(changed["title"], "Weekly blockers");
    let refused = ada.patch("/api/v1/prompts/weekly", &json!({"variables": []})).await;
    assert_eq!(refused.status(), 422);
    assert_eq!(ada.json("/api/v1/prompts/weekly").await["variables"].as_array().unwrap().len(), 2);
    assert_eq!(ada.patch("/api/v1/prompts/blockers", &json!({"title": "x"})).await.status(), 404, "not one of hers");
    assert_eq!(ada.patch("/api/v1/prompts/team-a%2Fstandup", &json!({"title": "x"})).await.status(), 403);

    assert_eq!(ada.delete("/api/v1/prompts/me:weekly").await.status(), 204);
    assert_eq!(ada.get("/api/v1/prompts/me:weekly").await.status(), 404);
    assert_eq!(ada.delete("/api/v1/prompts/weekly").await.status(), 404);
    assert_eq!(ada.json("/api/v1/prompts").await.as_array().unwrap().len(), 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn personal_prompts_are_private_to_their_owner() {
    let (app, _mock) = spawn_chat_app().await;
    let ada = app.user("ada").await;
    let bob = app.user("bob").await;
    assert_eq!(create(&ada, &weekly()).await.status(), 201);

    let seen: Vec<Value> = bob.json("/api/v1/prompts").await.as_array().unwrap().clone();
    assert!(seen.iter().all(|p| p["name"] != "me:weekly"), "{seen:?}");
    assert_eq!(bob.get("/api/v1/prompts/weekly").await.status(), 404);
    assert_eq!(bob.patch("/api/v1/prompts/weekly", &json!({"title": "mine now"})).await.status(), 404);
    assert_eq!(bob.delete("/api/v1/prompts/weekly").await.status(), 404);
    // Bob's own of the same name is his, beside hers.
    assert_eq!(create(&bob, &weekly()).await.status(), 201);
    assert_eq!(bob.delete("/api/v1/prompts/weekly").await.status(), 204);
    assert_eq!(ada.json("/api/v1/prompts/weekly").await["title"], "Weekly blockers");

    let conversation = bob.conversation().await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let sent = bob.post(&path, &json!({"prompt": "me:weekly", "variables": {"project": "PAY"}})).await;
    assert_eq!(error_of(sent).await, (422, "there is no prompt named \"me:weekly\"".into()));
    let job = bob.post("/api/v1/jobs", &json!({"name": "x", "schedule": "0 9 * * *", "prompt_ref": "me:weekly"})).await;
    assert_eq!(error_of(job).await, (422, "there is no prompt named \"me:weekly\"".into()));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn personal_prompts_run_in_chat_and_in_jobs() {
    let (app, mock) = spawn_chat_app().await;
    let ada = app.user("ada").await;
    assert_eq!(create(&ada, &weekly()).await.status(), 201);

    let conversation = ada.conversation().await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let sent = ada.post(&path, &json!({"prompt": "me:weekly", "variables": {"project": "PAY"}})).await;
    assert_eq!(sent.status(), 202);
    let message = sent.json::<Value>().await.unwrap()["message_id"].as_i64().unwrap();
    ada.events(conversation, message, None).await;
    let asked = mock.received()[0].body["messages"][1]["content"].as_str().unwrap().to_owned();
    assert_eq!(asked, "List the blockers of PAY since last Monday.");
    let missing = ada.post(&path, &json!({"prompt": "me:weekly"})).await;
    assert_eq!(error_of(missing).await, (422, "the prompt needs a value for project".into()));

    let body = json!({"name": "PAY weekly", "schedule": "0 9 * * MON", "prompt_ref": "me:weekly",
                      "variables": {"project": "PAY", "since": "Friday"}});
    let created = ada.post("/api/v1/jobs", &body).await;
    assert_eq!(created.status(), 201);
    let job = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let run = run_now(&ada, &job).await;
    let done = finished_run(&ada, &job, &run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["output"].as_str().unwrap().ends_with("You said: List the blockers of PAY since Friday."), "{done}");

    // Deleted, the prompt is gone for the job too: its next run fails and says why.
    assert_eq!(ada.delete("/api/v1/prompts/weekly").await.status(), 204);
    let run = run_now(&ada, &job).await;
    let done = finished_run(&ada, &job, &run).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"], "there is no prompt named \"me:weekly\"");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_prompts_page_makes_edits_and_deletes_your_own() {
    let (app, _mock) = spawn_chat_app().await;
    let ada = app.user("ada").await;
    let fields = [
        ("name", "standup"),
        ("title", "Stand-up <notes>"),
        ("template", "Summarise yesterday in {{project}} and {{team}}."),
        ("var.0.name", "project"),
        ("var.0.required", "on"),
    ];
    // Refused: the form comes back with what was typed and the reason.
    let refused = ada.form("/prompts", &fields).await;
    assert_eq!(refused.status(), 422);
    let page = refused.text().await.unwrap();
    assert!(page.contains("template: uses {{team}}, which is not declared in variables"), "{page}");
    assert!(
        page.contains(r#"value="Stand-up &#60;notes&#62;""#) || page.contains(r#"value="Stand-up &lt;notes&gt;""#),
        "{page}"
    );
    assert!(page.contains("Summarise yesterday in {{project}} and {{team}}."), "the template is kept");

    let mut fixed = fields.to_vec();
    fixed.extend([("var.1.name", "team"), ("var.1.default", "payments")]);
    let created = ada.form("/prompts", &fixed).await;
    assert_eq!(created.status(), 303);
    let library = ada.get("/prompts?notice=prompt_created").await.text().await.unwrap();
    assert!(library.contains("Prompt saved.") && library.contains("me:standup"), "{library}");
    assert!(library.contains("Stand-up &#60;notes&#62;") || library.contains("Stand-up &lt;notes&gt;"));
    assert!(!library.contains("Stand-up <notes>"), "titles are escaped");
    assert_eq!(ada.json("/api/v1/prompts/standup").await["variables"][1]["default"], "payments");

    let edit = ada.get("/prompts/standup/edit").await;
    assert_eq!(edit.status(), 200);
    assert!(edit.text().await.unwrap().contains(r#"name="var.1.name" class="input font-mono" value="team""#));
    let mut changed = fixed.clone();
    changed[1] = ("title", "Stand-up");
    assert_eq!(ada.form("/prompts/standup", &changed).await.status(), 303);
    assert_eq!(ada.json("/api/v1/prompts/standup").await["title"], "Stand-up");

    let other = app.user("bob").await;
    assert_eq!(other.get("/prompts/standup/edit").await.status(), 404);
    assert_eq!(other.form("/prompts/standup/delete", &[]).await.status(), 404);
    assert_eq!(ada.form("/prompts/standup/delete", &[]).await.status(), 303);
    assert_eq!(ada.get("/api/v1/prompts/standup").await.status(), 404);
    app.stop().await.unwrap();
}
