//! Streaming chat against the scripted mock LLM: the request promptops builds, streaming
//! and resuming, answers that outlive their client, cancel, retries only before the first
//! token, every fault kept with its partial text, limits, and untrusted output.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{AppOptions, LLM_KEY, Script, edited_config, spawn_chat_app, spawn_chat_app_with, text_of, words};

fn stream(text: &str, delay_ms: u64) -> Script {
    Script::Stream { pieces: words(text), delay: Duration::from_millis(delay_ms) }
}

async fn wait_status(
    session: &crate::helpers::Session,
    conversation: i64,
    message: i64,
    status: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = session.message(conversation, message).await;
        if stored["status"] == status {
            return stored;
        }
        assert!(Instant::now() < deadline, "message never became {status}: {stored}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_answer_streams_as_tokens_and_is_stored_with_its_usage() {
    let (app, mock) = spawn_chat_app().await;
    mock.push(stream("Blocked by PAY-9, waiting on legal.", 5));
    let alice = app.user("alice").await;
    let conversation = alice.conversation().await;
    let message = alice.send(conversation, "What is blocking PAY-7?").await;
    let events = alice.events(conversation, message, None).await;

    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let expected: Vec<String> = (1..=events.len()).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected, "every event has the next id");
    assert_eq!(text_of(&events), "Blocked by PAY-9, waiting on legal.");
    let done = events.last().unwrap();
    assert_eq!(done.event, "done");
    assert_eq!(done.data["status"], "complete");
    assert_eq!(done.data["usage"], json!({"prompt_tokens": 11, "completion_tokens": 6}));

    let stored = alice.message(conversation, message).await;
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["content"], "Blocked by PAY-9, waiting on legal.");
    assert_eq!(stored["completion_tokens"], 6);
    assert_eq!(stored["endpoint"], "local");
    let listed = alice.json(&format!("/api/v1/conversations/{conversation}")).await;
    assert_eq!(listed["conversation"]["title"], "What is blocking PAY-7?", "the first message names the conversation");
    assert_eq!(listed["messages"].as_array().unwrap().len(), 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_request_follows_the_config_templates_and_headers() {
    let (app, mock) = spawn_chat_app().await;
    let bob = app.user("bob").await;
    let conversation = bob.conversation().await;
    let first = bob.send(conversation, "first question").await;
    bob.events(conversation, first, None).await;
    let second = bob.send(conversation, "second question").await;
    bob.events(conversation, second, None).await;

    let received = mock.received();
    assert_eq!(received.len(), 2);
    let request = &received[1];
    assert_eq!(request.headers["authorization"], format!("Bearer {LLM_KEY}"));
    assert_eq!(request.body["model"], "smollm2");
    assert_eq!(request.body["stream"], true);
    assert_eq!(request.body["temperature"], 0.2);
    assert!(request.body.get("tools").is_none(), "no tools offered: the key is left out");
    let roles: Vec<&str> =
        request.body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "the system prompt, then the history");
    assert!(request.body["messages"][0]["content"].as_str().unwrap().starts_with("You are promptops"));
    assert_eq!(request.body["messages"][2]["content"], "You said: first question");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_config_reload_applies_to_the_next_request() {
    let (app, mock) = spawn_chat_app().await;
    let carol = app.user("carol").await;
    let conversation = carol.conversation().await;
    let message = carol.send(conversation, "one").await;
    carol.events(conversation, message, None).await;
    crate::helpers::write_files(
        &app.config_dir,
        &edited_config(|c| c["endpoints"]["local"]["model"] = json!("bigger-model")),
    );
    app.wait_for_generation(2, Duration::from_secs(5)).await;
    let message = carol.send(conversation, "two").await;
    carol.events(conversation, message, None).await;
    let models: Vec<String> = mock.received().iter().map(|r| r.body["model"].as_str().unwrap().to_owned()).collect();
    assert_eq!(models, ["smollm2", "bigger-model"]);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_send_that_asks_for_the_stream_gets_the_answer_in_the_same_response_and_can_resume_it() {
    use eventsource_stream::Eventsource as _;
    use futures_util::StreamExt as _;
    let (app, mock) = spawn_chat_app().await;
    mock.push(stream("one two three four five", 10));
    let erin = app.user("erin").await;
    let conversation = erin.conversation().await;
    let response = erin
        .client
        .post(format!("{}/api/v1/conversations/{conversation}/messages", app.base))
        .header("x-csrf-token", &erin.csrf)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "count"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream().eventsource();
    let sent = stream.next().await.unwrap().unwrap();
    assert_eq!(sent.event, "sent", "the ids come first");
    let ids: serde_json::Value = serde_json::from_str(&sent.data).unwrap();
    let message = ids["message_id"].as_i64().unwrap();
    assert!(ids["user_message_id"].as_i64().unwrap() < message);
    // Two events, then the client hangs up and resumes through …/events.
    let mut head = Vec::new();
    while head.len() < 2 {
        let event = stream.next().await.unwrap().unwrap();
        head.push(crate::helpers::Sse {
            id: event.id,
            event: event.event,
            data: serde_json::from_str(&event.data).unwrap(),
        });
    }
    drop(stream);
    let last: u64 = head.last().unwrap().id.parse().unwrap();
    let mut all = head;
    all.extend(erin.events(conversation, message, Some(last)).await);
    let numbers: Vec<u64> = all.iter().map(|e| e.id.parse().unwrap()).collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>(), "no gap, no repeat");
    assert_eq!(text_of(&all), "one two three four five");
    assert_eq!(erin.message(conversation, message).await["status"], "complete");

    // Refused sends stay plain JSON errors, whatever the client accepts.
    let other = app.user("frank").await.conversation().await;
    let refused = erin
        .client
        .post(format!("{}/api/v1/conversations/{other}/messages", app.base))
        .header("x-csrf-token", &erin.csrf)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "peek"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404, "another user's conversation");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_answer_shows_in_the_running_followers_and_token_metrics() {
    use eventsource_stream::Eventsource as _;
    use futures_util::StreamExt as _;
    let (app, mock) = spawn_chat_app().await;
    mock.push(stream("one two three four five six seven eight nine ten", 60));
    let gail = app.user("gail").await;
    let conversation = gail.conversation().await;
    let message = gail.send(conversation, "count slowly").await;
    let response = gail
        .client
        .get(format!("{}/api/v1/conversations/{conversation}/messages/{message}/events", app.base))
        .send()
        .await
        .unwrap();
    let mut events = response.bytes_stream().eventsource();
    events.next().await.unwrap().unwrap();
    assert_eq!(app.metric("promptops_answers_running").await, 1.0, "while it streams");
    assert_eq!(app.metric("promptops_stream_followers").await, 1.0, "one client follows it");
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains(r#"promptops_db_connections{pool="main",state="in_use"}"#), "{text}");
    assert!(text.contains(r#"promptops_db_connections{pool="main",state="idle"}"#), "{text}");
    while events.next().await.is_some() {}
    drop(events);
    wait_status(&gail, conversation, message, "complete").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.metric("promptops_answers_running").await > 0.0 {
        assert!(Instant::now() < deadline, "the ended answer still counts as running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.metric("promptops_stream_followers").await, 0.0, "the client hung up");
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains(r#"promptops_llm_tokens_total{endpoint="local",direction="in"} 11"#), "{text}");
    assert!(text.contains(r#"promptops_llm_tokens_total{endpoint="local",direction="out"} 10"#), "{text}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_follower_resumes_after_its_last_event_without_gaps_or_repeats() {
    let (app, mock) = spawn_chat_app().await;
    mock.push(stream("one two three four five six seven eight", 20));
    let dan = app.user("dan").await;
    let conversation = dan.conversation().await;
    let message = dan.send(conversation, "count").await;
    let head = dan.events_until(conversation, message, None, 3).await;
    let last: u64 = head.last().unwrap().id.parse().unwrap();
    let tail = dan.events(conversation, message, Some(last)).await;
    let mut all = head.clone();
    all.extend(tail.iter().cloned());
    let ids: Vec<u64> = all.iter().map(|e| e.id.parse().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "no gap, no repeat");
    assert_eq!(text_of(&all), "one two three four five six seven eight");
    assert_eq!(tail.first().unwrap().id, (last + 1).to_string());
    let bad = dan
        .client
        .get(format!("{}/api/v1/conversations/{conversation}/messages/{message}/events", app.base))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_answer_keeps_going_when_its_client_goes_away() {
    let (app, mock) = spawn_chat_app().await;
    mock.push(stream("slow and steady wins the race in the end", 30));
    let erin = app.user("erin").await;
    let conversation = erin.conversation().await;
    let message = erin.send(conversation, "tell me").await;
    // Read two events and hang up, like a closed tab.
    erin.events_until(conversation, message, None, 2).await;
    let stored = wait_status(&erin, conversation, message, "complete").await;
    assert_eq!(stored["content"], "slow and steady wins the race in the end");
    assert_eq!(mock.abandoned(), 0, "the upstream stream ran to its end");
    // Long after, a new follower still gets every event.
    let events = erin.events(conversation, message, None).await;
    assert_eq!(text_of(&events), "slow and steady wins the race in the end");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_stops_the_upstream_request_and_keeps_the_partial_text() {
    let (app, mock) = spawn_chat_app().await;
    mock.push(Script::Hang { pieces: words("partial answer ") });
    let fay = app.user("fay").await;
    let conversation = fay.conversation().await;
    let message = fay.send(conversation, "never ending").await;
    // A notice (no Jira token stored), then the two pieces.
    let first = fay.events_until(conversation, message, None, 3).await;
    assert_eq!(first[0].event, "notice");
    assert_eq!(text_of(&first), "partial answer ");
    assert_eq!(mock.open_streams(), 1);
    let cancel = fay.post(&format!("/api/v1/conversations/{conversation}/messages/{message}/cancel"), &json!({})).await;
    assert_eq!(cancel.status(), 202);
    let events = fay.events(conversation, message, None).await;
    assert_eq!(events.last().unwrap().data["status"], "cancelled");
    let stored = wait_status(&fay, conversation, message, "cancelled").await;
    assert_eq!(stored["content"], "partial answer ");
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.abandoned() == 0 {
        assert!(Instant::now() < deadline, "the upstream connection was not closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.open_streams(), 0);
    let again = fay.post(&format!("/api/v1/conversations/{conversation}/messages/{message}/cancel"), &json!({})).await;
    assert_eq!(again.status(), 204, "nothing left to stop");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn statuses_and_resets_before_the_first_token_are_retried() {
    let (app, mock) = spawn_chat_app_with(AppOptions {
        files: edited_config(|c| c["endpoints"]["local"]["retry"]["initial_backoff"] = json!("10ms")),
        ..AppOptions::default()
    })
    .await;
    mock.push(Script::Status { status: 503, retry_after: None });
    mock.push(Script::ResetAfter { pieces: Vec::new() });
    mock.push(stream("third time lucky", 0));
    let gus = app.user("gus").await;
    let conversation = gus.conversation().await;
    let message = gus.send(conversation, "try").await;
    let events = gus.events(conversation, message, None).await;
    assert_eq!(text_of(&events), "third time lucky");
    assert_eq!(mock.requests(), 3);

    // Retry-After is honoured.
    mock.push(Script::Status { status: 429, retry_after: Some("1") });
    mock.push(stream("after the wait", 0));
    let started = Instant::now();
    let message = gus.send(conversation, "again").await;
    let events = gus.events(conversation, message, None).await;
    assert_eq!(text_of(&events), "after the wait");
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());

    // A status not in the policy is not retried; the reason is kept.
    mock.push(Script::Status { status: 400, retry_after: None });
    let message = gus.send(conversation, "bad").await;
    let events = gus.events(conversation, message, None).await;
    let error = events.iter().find(|e| e.event == "error").unwrap();
    assert_eq!(error.data["message"], "the LLM answered HTTP 400: mock says 400");
    assert_eq!(
        wait_status(&gus, conversation, message, "failed").await["error"],
        "the LLM answered HTTP 400: mock says 400"
    );
    assert_eq!(mock.requests(), 6);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn after_the_first_token_nothing_is_retried_and_the_partial_text_is_kept() {
    let (app, mock) = spawn_chat_app().await;
    mock.push(Script::ResetAfter { pieces: words("half of the ") });
    let hal = app.user("hal").await;
    let conversation = hal.conversation().await;
    let message = hal.send(conversation, "go").await;
    let events = hal.events(conversation, message, None).await;
    assert_eq!(text_of(&events), "half of the ");
    let error = events.iter().find(|e| e.event == "error").unwrap();
    assert!(error.data["message"].as_str().unwrap().starts_with("the connection to the LLM was lost"), "{error:?}");
    assert_eq!(events.last().unwrap().data["status"], "failed");
    let stored = wait_status(&hal, conversation, message, "failed").await;
    assert_eq!(stored["content"], "half of the ");
    assert_eq!(mock.requests(), 1, "no retry once text reached the user");

    mock.push(Script::MalformedAfter { pieces: words("good start ") });
    let message = hal.send(conversation, "garbage").await;
    let events = hal.events(conversation, message, None).await;
    let error = events.iter().find(|e| e.event == "error").unwrap_or_else(|| panic!("{events:?}"));
    assert!(error.data["message"].as_str().unwrap().starts_with("the LLM sent a malformed chunk"), "{error:?}");
    assert_eq!(wait_status(&hal, conversation, message, "failed").await["content"], "good start ");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn silence_is_cut_by_the_first_token_and_idle_timeouts() {
    let (app, mock) = spawn_chat_app_with(AppOptions {
        files: edited_config(|c| {
            let local = &mut c["endpoints"]["local"];
            local["timeouts"] = json!({"connect": "1s", "first_token": "300ms", "idle": "300ms", "total": "5s"});
            local["retry"]["max_attempts"] = json!(1);
        }),
        ..AppOptions::default()
    })
    .await;
    mock.push(Script::Silent { wait: Duration::from_secs(2) });
    mock.push(Script::Hang { pieces: words("a slow ") });
    let ida = app.user("ida").await;
    let conversation = ida.conversation().await;
    let message = ida.send(conversation, "hello?").await;
    let stored = wait_status(&ida, conversation, message, "failed").await;
    assert_eq!(stored["error"], "the LLM did not start answering within 300ms");

    let message = ida.send(conversation, "still there?").await;
    let stored = wait_status(&ida, conversation, message, "failed").await;
    assert_eq!(stored["error"], "the LLM went silent for 300ms");
    assert_eq!(stored["content"], "a slow ");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_company_llm_with_another_shape_is_read_through_its_mapping() {
    let (app, mock) = spawn_chat_app_with(AppOptions {
        files: edited_config(|c| {
            c["endpoints"]["local"]["response"] = json!({"format": "custom", "framing": "ndjson", "text": "/out/text",
                "finish_reason": "/out/stop", "completion_tokens": "/meter/out"});
        }),
        ..AppOptions::default()
    })
    .await;
    mock.push(Script::Raw {
        content_type: "application/x-ndjson",
        body: "{\"out\": {\"text\": \"Hello \"}}\n{\"out\": {\"text\": \"from corp\"}}\n{\"out\": {\"stop\": \"end\"}, \"meter\": {\"out\": 2}}\n"
            .into(),
    });
    let jo = app.user("jo").await;
    let conversation = jo.conversation().await;
    let message = jo.send(conversation, "hi").await;
    let events = jo.events(conversation, message, None).await;
    assert_eq!(text_of(&events), "Hello from corp");
    let stored = wait_status(&jo, conversation, message, "complete").await;
    assert_eq!(stored["completion_tokens"], 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn script_tags_and_javascript_links_never_reach_a_page_active() {
    let (app, mock) = spawn_chat_app().await;
    let attack = "Here: <script>alert('x')</script> [click](javascript:alert(1)) <img src=x onerror=alert(2)> **bold**";
    mock.push(Script::Stream { pieces: vec![attack.to_owned()], delay: Duration::ZERO });
    let kim = app.user("kim").await;
    let conversation = kim.conversation().await;
    let message = kim.send(conversation, "<b>my own</b> <script>evil()</script>").await;
    kim.events(conversation, message, None).await;

    let page = kim.get(&format!("/c/{conversation}")).await.text().await.unwrap();
    assert!(page.contains("<strong>bold</strong>"), "Markdown is rendered");
    for active in ["<script>alert", "<script>evil", "javascript:", "onerror=", "<b>my own"] {
        assert!(!page.contains(active), "{active} reached the page");
    }
    let shown = page.split("message-body whitespace-pre-wrap\">").nth(1).unwrap().split("</div>").next().unwrap();
    assert!(
        shown.starts_with("&#60;b&#62;my own&#60;/b&#62; &#60;script&#62;"),
        "the user's text is shown escaped: {shown}"
    );
    let partial = kim.get(&format!("/c/{conversation}/m/{message}")).await.text().await.unwrap();
    assert!(!partial.contains("<script") && !partial.contains("javascript:"), "{partial}");
    let api = kim.message(conversation, message).await;
    assert!(!api["html"].as_str().unwrap().contains("<script"));
    assert!(api["content"].as_str().unwrap().contains("<script>"), "the stored text is what the LLM said");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn limits_refuse_with_429_and_413_and_a_reason() {
    let (app, mock) = spawn_chat_app_with(AppOptions {
        files: edited_config(|c| {
            c["limits"] = json!({"requests_per_minute": 3, "concurrent_generations": 1, "max_message_chars": 20});
        }),
        ..AppOptions::default()
    })
    .await;
    let leo = app.user("leo").await;
    let conversation = leo.conversation().await;
    let path = format!("/api/v1/conversations/{conversation}/messages");

    let long = leo.post(&path, &json!({"content": "x".repeat(21)})).await;
    assert_eq!(long.status(), 413);
    let body: serde_json::Value = long.json().await.unwrap();
    assert_eq!(body["error"]["message"], "the message has 21 characters; the limit is 20");

    mock.push(Script::Hang { pieces: words("busy ") });
    let first = leo.send(conversation, "one").await;
    let busy = leo.post(&path, &json!({"content": "two"})).await;
    assert_eq!(busy.status(), 429);
    assert_eq!(busy.headers()["retry-after"], "1");
    leo.post(&format!("{path}/{first}/cancel"), &json!({})).await;
    wait_status(&leo, conversation, first, "cancelled").await;

    let second = leo.send(conversation, "three").await;
    leo.events(conversation, second, None).await;
    let too_many = leo.post(&path, &json!({"content": "four"})).await;
    assert_eq!(too_many.status(), 429);
    let seconds: u64 = too_many.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&seconds), "{seconds}");

    let empty = leo.post(&path, &json!({"content": "   "})).await;
    assert_eq!(empty.status(), 422, "refused before the rate limit would count it");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn named_prompts_fill_their_variables() {
    let (app, mock) = spawn_chat_app().await;
    let max = app.user("max").await;
    let prompts = max.json("/api/v1/prompts").await;
    let names: Vec<&str> = prompts.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["blockers", "release-notes"]);
    assert_eq!(
        prompts[1]["variables"][2],
        json!({"name": "tone", "description": "Tone of voice", "required": false, "default": "neutral"})
    );

    let conversation = max.conversation().await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let sent =
        max.post(&path, &json!({"prompt": "release-notes", "variables": {"project": "PAY", "version": "2.4.0"}})).await;
    assert_eq!(sent.status(), 202);
    let message = sent.json::<serde_json::Value>().await.unwrap()["message_id"].as_i64().unwrap();
    max.events(conversation, message, None).await;
    let asked = mock.received()[0].body["messages"][1]["content"].as_str().unwrap().to_owned();
    assert_eq!(
        asked,
        "Draft release notes for version 2.4.0 of project PAY in a neutral tone, from the issues whose fix version is 2.4.0."
    );
    let missing = max.post(&path, &json!({"prompt": "blockers"})).await;
    assert_eq!(missing.status(), 422);
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["error"]["message"],
        "the prompt needs a value for project"
    );
    let unknown = max.post(&path, &json!({"prompt": "nope"})).await;
    assert_eq!(unknown.status(), 422);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn prompt_resources_from_kubernetes_are_usable_in_chat() {
    let (app, mock) = spawn_chat_app().await;
    // As the controller mirrors a Prompt resource.
    let standup: promptops::prompts::Prompt = serde_json::from_value(json!({
        "title": "Stand-up notes",
        "template": "Summarise yesterday in {{project}}.",
        "variables": [{"name": "project", "required": true}],
        "tools": [],
    }))
    .unwrap();
    app.state.prompts.apply_resource("0d6f5a1e", "team-a", "standup", &standup).await.unwrap();
    let max = app.user("max").await;
    let prompts = max.json("/api/v1/prompts").await;
    let listed = prompts.as_array().unwrap().iter().find(|p| p["name"] == "team-a/standup").expect("listed");
    assert_eq!(listed["source"], "kubernetes");
    assert_eq!(listed["title"], "Stand-up notes");

    let conversation = max.conversation().await;
    let path = format!("/api/v1/conversations/{conversation}/messages");
    let sent = max.post(&path, &json!({"prompt": "team-a/standup", "variables": {"project": "PAY"}})).await;
    assert_eq!(sent.status(), 202);
    let message = sent.json::<serde_json::Value>().await.unwrap()["message_id"].as_i64().unwrap();
    max.events(conversation, message, None).await;
    assert_eq!(mock.received()[0].body["messages"][1]["content"], "Summarise yesterday in PAY.");
    let missing = max.post(&path, &json!({"prompt": "team-a/standup"})).await;
    assert_eq!(missing.status(), 422, "its variables are checked like those of prompts.json");
    let gone = max.post(&path, &json!({"prompt": "team-a/nope"})).await;
    assert_eq!(gone.status(), 422);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn conversations_are_strictly_per_user() {
    let (app, _mock) = spawn_chat_app().await;
    let nia = app.user("nia").await;
    let oz = app.user("oz").await;
    let conversation = nia.conversation().await;
    let message = nia.send(conversation, "private thoughts about PAY").await;
    nia.events(conversation, message, None).await;

    for path in [
        format!("/api/v1/conversations/{conversation}"),
        format!("/api/v1/conversations/{conversation}/messages/{message}"),
        format!("/api/v1/conversations/{conversation}/messages/{message}/events"),
        format!("/api/v1/conversations/{conversation}/export"),
        format!("/c/{conversation}"),
    ] {
        assert_eq!(oz.get(&path).await.status(), 404, "{path}");
    }
    let send = oz.post(&format!("/api/v1/conversations/{conversation}/messages"), &json!({"content": "hi"})).await;
    assert_eq!(send.status(), 404);
    let cancel = oz.post(&format!("/api/v1/conversations/{conversation}/messages/{message}/cancel"), &json!({})).await;
    assert_eq!(cancel.status(), 404);
    assert_eq!(
        oz.patch(&format!("/api/v1/conversations/{conversation}"), &json!({"title": "mine"})).await.status(),
        404
    );
    assert_eq!(oz.delete(&format!("/api/v1/conversations/{conversation}")).await.status(), 404);
    assert_eq!(oz.json("/api/v1/conversations?q=PAY").await, json!([]));
    assert_eq!(nia.json("/api/v1/conversations?q=PAY").await.as_array().unwrap().len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn conversations_can_be_renamed_searched_exported_and_deleted() {
    let (app, _mock) = spawn_chat_app().await;
    let pat = app.user("pat").await;
    let first = pat.conversation().await;
    let message = pat.send(first, "release of 2.4").await;
    pat.events(first, message, None).await;
    let second = pat.conversation().await;
    let renamed = pat.patch(&format!("/api/v1/conversations/{second}"), &json!({"title": "  Sprint   review  "})).await;
    assert_eq!(renamed.json::<serde_json::Value>().await.unwrap()["title"], "Sprint review");
    assert_eq!(pat.patch(&format!("/api/v1/conversations/{second}"), &json!({"title": " "})).await.status(), 422);

    let found = pat.json("/api/v1/conversations?q=2.4").await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["id"], first);
    assert_eq!(pat.json("/api/v1/conversations?q=%25").await, json!([]), "LIKE wildcards are taken literally");
    // Words match as prefixes, in any order, with the passage and its matched words.
    let found = pat.json("/api/v1/conversations?q=RELEA%202").await;
    assert_eq!(found[0]["id"], first, "{found}");
    let hits: Vec<&str> = found[0]["snippet"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["hit"] == true)
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert!(hits.contains(&"release"), "{found}");
    // Title matches come first and carry no passage.
    let by_title = pat.json("/api/v1/conversations?q=sprint").await;
    assert_eq!(by_title[0]["id"], second);
    assert!(by_title[0].get("snippet").is_none());
    // Search syntax is text, never FTS5 operators; too long a search is refused.
    assert_eq!(pat.json("/api/v1/conversations?q=owner%3Au1%20OR%20NEAR(a)").await, json!([]));
    let long = pat.get(&format!("/api/v1/conversations?q={}", "a".repeat(201))).await;
    assert_eq!(long.status(), 422);

    let markdown = pat.get(&format!("/api/v1/conversations/{first}/export?format=markdown")).await;
    assert_eq!(markdown.headers()["content-disposition"], format!("attachment; filename=\"conversation-{first}.md\""));
    let text = markdown.text().await.unwrap();
    assert!(text.starts_with("# release of 2.4\n"), "{text}");
    assert!(text.contains("## You — ") && text.contains("You said: release of 2.4"), "{text}");
    let json_export: serde_json::Value =
        pat.get(&format!("/api/v1/conversations/{first}/export?format=json")).await.json().await.unwrap();
    assert_eq!(json_export["messages"].as_array().unwrap().len(), 2);
    assert_eq!(pat.get(&format!("/api/v1/conversations/{first}/export?format=pdf")).await.status(), 400);

    assert_eq!(pat.delete(&format!("/api/v1/conversations/{first}")).await.status(), 204);
    assert_eq!(pat.get(&format!("/api/v1/conversations/{first}")).await.status(), 404);
    assert_eq!(pat.json("/api/v1/conversations").await.as_array().unwrap().len(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_answer_cut_off_by_a_stop_is_marked_failed_at_the_next_start() {
    let data = tempfile::tempdir().unwrap();
    let options = || AppOptions { data_dir: Some(data.path().to_path_buf()), ..AppOptions::default() };
    let (app, mock) = spawn_chat_app_with(options()).await;
    mock.push(Script::Hang { pieces: words("cut off ") });
    let quinn = app.user("quinn").await;
    let conversation = quinn.conversation().await;
    let message = quinn.send(conversation, "long job").await;
    quinn.events_until(conversation, message, None, 2).await;
    // Let the flusher save the partial text, then simulate a crash: the row stays 'streaming'.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let streaming: String = sqlx::query_scalar("SELECT status FROM messages WHERE id = ?")
        .bind(message)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(streaming, "streaming");
    let db = app.state.db.clone();
    sqlx::query("UPDATE messages SET status = 'streaming' WHERE id = ?").bind(message).execute(&db).await.unwrap();
    drop(app);

    let (again, _mock) = spawn_chat_app_with(options()).await;
    let quinn = again.login("quinn", "quinn-password-123").await;
    let stored = quinn.message(conversation, message).await;
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["content"], "cut off ", "the partial text was kept");
    assert!(stored["error"].as_str().unwrap().starts_with("interrupted"));
    let events = quinn.events(conversation, message, None).await;
    assert_eq!(events[0].event, "snapshot");
    assert_eq!(events[1].data["status"], "failed");
    again.stop().await.unwrap();
}

/// The next frame from a socket, as JSON.
async fn next<S>(socket: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
{
    use futures_util::StreamExt as _;
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
    serde_json::from_str(frame.to_text().unwrap()).unwrap()
}

#[tokio::test]
async fn the_websocket_sends_streams_and_cancels() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message as Frame;

    let (app, mock) = spawn_chat_app().await;
    let rae = app.user("rae").await;
    let conversation = rae.conversation().await;
    let url = format!("{}/api/v1/ws?csrf_token={}", app.base.replacen("http", "ws", 1), rae.csrf);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    request.headers_mut().insert("cookie", rae.cookie().parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    mock.push(stream("over the socket", 5));
    socket
        .send(Frame::text(json!({"type": "send", "conversation_id": conversation, "content": "hi"}).to_string()))
        .await
        .unwrap();
    let accepted = next(&mut socket).await;
    assert_eq!(accepted["type"], "accepted");
    let message = accepted["message_id"].as_i64().unwrap();
    let mut text = String::new();
    loop {
        let frame = next(&mut socket).await;
        assert_eq!(frame["message_id"], message);
        match frame["type"].as_str().unwrap() {
            "token" => text.push_str(frame["text"].as_str().unwrap()),
            "notice" => assert!(frame["message"].as_str().unwrap().starts_with("No Jira token is stored")),
            "done" => {
                assert_eq!(frame["status"], "complete");
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(text, "over the socket");

    mock.push(Script::Hang { pieces: words("forever ") });
    socket
        .send(Frame::text(json!({"type": "send", "conversation_id": conversation, "content": "again"}).to_string()))
        .await
        .unwrap();
    let message = next(&mut socket).await["message_id"].as_i64().unwrap();
    assert_eq!(next(&mut socket).await["type"], "notice", "the user has no Jira token");
    assert_eq!(next(&mut socket).await["type"], "token");
    socket
        .send(Frame::text(
            json!({"type": "cancel", "conversation_id": conversation, "message_id": message}).to_string(),
        ))
        .await
        .unwrap();
    let mut saw = Vec::new();
    while !saw.contains(&"done".to_owned()) {
        let frame = next(&mut socket).await;
        saw.push(frame["type"].as_str().unwrap().to_owned());
        if frame["type"] == "done" {
            assert_eq!(frame["status"], "cancelled");
        }
    }
    assert!(saw.contains(&"cancelled".to_owned()), "{saw:?}");
    socket.send(Frame::text("{not json")).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], "failed");

    // Without the CSRF parameter, or from another origin, there is no socket.
    let refused = |url: String, origin: Option<&str>| {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        request.headers_mut().insert("cookie", rae.cookie().parse().unwrap());
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        async move {
            match tokio_tungstenite::connect_async(request).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
                other => panic!("the socket opened: {:?}", other.map(|_| ())),
            }
        }
    };
    let ws_base = app.base.replacen("http", "ws", 1);
    assert_eq!(refused(format!("{ws_base}/api/v1/ws"), None).await, 403);
    assert_eq!(refused(url.clone(), Some("http://evil.example")).await, 403);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_conversation_opens_at_its_newest_messages_and_loads_older_ones_on_demand() {
    use promptops::db::repositories::conversations::{NewMessage, add_message};
    let (app, _mock) = spawn_chat_app().await;
    let kim = app.user("kim").await;
    let conversation = kim.conversation().await;
    let mut conn = app.state.db.acquire().await.unwrap();
    for n in 1..=120 {
        let (role, content) =
            if n % 2 == 1 { ("user", format!("question {n:03}")) } else { ("assistant", format!("answer {n:03}")) };
        let message = NewMessage { role, content: &content, status: "complete", prompt_name: None, endpoint: None };
        add_message(&mut conn, conversation, &message, chrono::Utc::now()).await.unwrap();
    }
    drop(conn);

    let page = kim.get(&format!("/c/{conversation}")).await.text().await.unwrap();
    assert!(page.contains("question 071") && page.contains("answer 120"), "the newest 50 are shown");
    assert!(!page.contains("answer 070"), "older ones wait");
    let before = page.split("earlier?before=").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let older = kim.get(&format!("/c/{conversation}/earlier?before={before}")).await;
    assert_eq!(older.status(), 200);
    let older = older.text().await.unwrap();
    assert!(older.contains("question 021") && older.contains("answer 070") && !older.contains("question 071"));
    let oldest_before = older.split("earlier?before=").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let oldest = kim.get(&format!("/c/{conversation}/earlier?before={oldest_before}")).await.text().await.unwrap();
    assert!(oldest.contains("question 001") && oldest.contains("answer 020"));
    assert!(!oldest.contains("earlier?before="), "nothing older: no button");
    // Another user's conversation stays hidden.
    let oz = app.user("oz").await;
    assert_eq!(oz.get(&format!("/c/{conversation}/earlier?before={before}")).await.status(), 404);
    assert_eq!(kim.get(&format!("/c/{conversation}/earlier?before=x")).await.status(), 400);
    app.stop().await.unwrap();
}
