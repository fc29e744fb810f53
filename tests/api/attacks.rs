//! Our own attack suite. The route checks walk `promptops::web::route_table`, the table the
//! router is built from, so a new route is attacked without anyone remembering to: as
//! nobody, as another user, as a non-admin, without its CSRF token, from another origin,
//! and with hostile parameters and bodies. Then hostile LLM and tool output through every
//! place that shows it, traversal by raw request lines, and secrets that must never leave.

use std::time::Duration;

use promptops::chat::markdown::{URL_ATTRIBUTES, tag_parts};
use promptops::web::Exposure;
use promptops::web::routes::{Access, Route};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Script, Session, TestApp, spawn_chat_app, words};

/// What a route's parameters are filled with: objects of one user (`alice`), so that another
/// user must be refused them; a throwaway user for the admin routes that change users.
struct Fixtures {
    conversation: i64,
    message: i64,
    job: String,
    run: String,
    carol: i64,
}

impl Fixtures {
    async fn create(app: &TestApp, alice: &Session) -> Self {
        let conversation = alice.conversation().await;
        let message = alice.send(conversation, "hello").await;
        alice.events(conversation, message, None).await;
        let created =
            alice.post("/api/v1/jobs", &json!({"name": "mine", "schedule": "0 9 * * MON", "prompt": "Say hi"})).await;
        assert_eq!(created.status(), 201);
        let job = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let ran = alice.post(&format!("/api/v1/jobs/{job}/run"), &json!({})).await;
        assert_eq!(ran.status(), 202, "{}", ran.text().await.unwrap());
        let run = alice.json(&format!("/api/v1/jobs/{job}/runs")).await[0]["id"].as_str().unwrap().to_owned();
        let prompt = json!({"name": "mine", "title": "Mine", "template": "Say hi"});
        assert_eq!(alice.post("/api/v1/prompts", &prompt).await.status(), 201);
        app.user("carol").await;
        app.user("bob").await;
        let users = app.admin().await.json("/api/v1/admin/users").await;
        let carol =
            users.as_array().unwrap().iter().find(|u| u["username"] == "carol").unwrap()["id"].as_i64().unwrap();
        Self { conversation, message, job, run, carol }
    }

    /// `route`'s path with each parameter filled, and whether one of them is alice's.
    /// A parameter this suite does not know fails the test: extend it with the new route.
    fn fill(&self, route: &Route) -> (String, bool) {
        let mut owned = false;
        let mut previous = "";
        let mut segments = Vec::new();
        for segment in route.path.split('/') {
            let value = match (previous, segment) {
                (_, s) if !s.starts_with('{') => s.to_owned(),
                ("c" | "conversations", "{id}") => {
                    owned = true;
                    self.conversation.to_string()
                }
                ("m" | "messages", "{message_id}") => self.message.to_string(),
                ("jobs", "{id}") => {
                    owned = true;
                    self.job.clone()
                }
                ("runs", "{run_id}") => self.run.clone(),
                ("deliveries", "{target}") => "conversation".to_owned(),
                ("prompts", "{name}") => {
                    owned = true;
                    "mine".to_owned()
                }
                ("users", "{id}") => self.carol.to_string(),
                ("credentials", "{service}") => "jira".to_owned(),
                ("approvals", "{call_id}") => "call_0".to_owned(),
                // The cheapest task: the suite runs it as admin.
                ("maintenance", "{task}") => "sessions".to_owned(),
                ("static", "{*path}") => "js/app.js".to_owned(),
                (previous, parameter) => panic!(
                    "{} {} has the parameter {parameter} after /{previous}/, which the attack suite \
                     cannot fill yet: teach Fixtures::fill what it stands for",
                    route.method, route.path
                ),
            };
            previous = segment;
            segments.push(value);
        }
        (segments.join("/"), owned)
    }
}

/// A fresh session of `bob`, the plain user [`Fixtures::create`] made.
async fn bob(app: &TestApp) -> Session {
    app.login("bob", "bob-password-123").await
}

fn routes() -> Vec<Route> {
    promptops::web::route_table(Exposure::All)
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Sends `method path` with an empty JSON object (for state-changing methods) and the
/// given extra headers; never follows redirects.
async fn call(
    app: &TestApp,
    session: Option<&Session>,
    method: &Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut request = client.request(method.clone(), format!("{}{path}", app.base));
    if let Some(session) = session {
        request = request.header("cookie", session.cookie());
    }
    if changes_state(method) && is_api(path) {
        request = request.json(&json!({}));
    } else if changes_state(method) {
        request = request.header("content-type", "application/x-www-form-urlencoded").body("");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path} did not answer within 10 s"))
        .unwrap()
}

async fn with_csrf(app: &TestApp, session: &Session, method: &Method, path: &str) -> reqwest::Response {
    call(app, Some(session), method, path, &[("x-csrf-token", &session.csrf)]).await
}

/// Every route, called as nobody, as a user who does not own what the path names, as a
/// non-admin and as an admin, answers as the table says.
#[tokio::test]
async fn every_route_admits_only_whom_its_access_rule_names() {
    let (app, _llm) = spawn_chat_app().await;
    let alice = app.user("alice").await;
    let fixtures = Fixtures::create(&app, &alice).await;
    let table = routes();
    assert!(table.len() > 60, "the table lists every route: {}", table.len());
    let mut checked = 0;
    for route in &table {
        let (path, owned) = fixtures.fill(route);
        let what = format!("{} {}", route.method, route.path);

        // Nobody.
        let response = call(&app, None, &route.method, &path, &[]).await;
        let status = response.status().as_u16();
        let location = response.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or("").to_owned();
        match route.access {
            Access::Public => {
                assert!(status != 401 && !location.starts_with("/login"), "{what} is public but answered {status}");
                assert!(status < 500, "{what} answered {status} to nobody");
            }
            Access::SignedIn | Access::Admin if is_api(&path) => {
                assert_eq!(status, 401, "{what} must demand a session");
            }
            Access::SignedIn | Access::Admin => {
                assert_eq!(status, 303, "{what} must send nobody to the login page");
                assert!(location.starts_with("/login?next="), "{what} redirected to {location}");
            }
        }

        // Another plain user (a fresh session each time: some routes sign out).
        if route.access != Access::Public {
            let bob = bob(&app).await;
            let response = with_csrf(&app, &bob, &route.method, &path).await;
            let status = response.status().as_u16();
            match route.access {
                Access::Admin => assert_eq!(status, 403, "{what} is for admins but a user got {status}"),
                // A write whose (empty) body is refused first touches nothing of alice's.
                _ if owned && changes_state(&route.method) => {
                    assert!([400, 404, 422].contains(&status), "{what} let bob reach alice's object: {status}");
                }
                _ if owned => assert_eq!(status, 404, "{what} let bob reach alice's object: {status}"),
                _ => assert!(![401, 403].contains(&status) && status < 500, "{what} answered bob {status}"),
            }
        }

        // An admin is admitted to admin routes.
        if route.access == Access::Admin {
            let admin = app.admin().await;
            let status = with_csrf(&app, &admin, &route.method, &path).await.status().as_u16();
            assert!(![401, 403].contains(&status) && status < 500, "{what} answered an admin {status}");
        }
        checked += 1;
    }
    assert_eq!(checked, table.len());
    // Alice's things are still hers and intact after everyone else's attempts.
    assert_eq!(alice.get(&format!("/api/v1/conversations/{}", fixtures.conversation)).await.status(), 200);
    assert_eq!(alice.get(&format!("/api/v1/jobs/{}", fixtures.job)).await.status(), 200);
    assert_eq!(alice.json("/api/v1/prompts/mine").await["template"], "Say hi");
    app.stop().await.unwrap();
}

/// Every state-changing route refuses a signed-in request without its CSRF token, with a
/// wrong one, and any request from another origin (even signed out, even with the token).
#[tokio::test]
async fn every_state_changing_route_needs_the_csrf_token_and_our_origin() {
    let (app, _llm) = spawn_chat_app().await;
    let alice = app.user("alice").await;
    let fixtures = Fixtures::create(&app, &alice).await;
    let admin = app.admin().await;
    let mut checked = 0;
    for route in routes().iter().filter(|r| changes_state(&r.method)) {
        let (path, _) = fixtures.fill(route);
        let what = format!("{} {}", route.method, route.path);
        for (case, session, headers) in [
            ("no token", Some(&admin), vec![]),
            ("a wrong token", Some(&admin), vec![("x-csrf-token", "forged")]),
            (
                "another origin",
                Some(&admin),
                vec![("x-csrf-token", admin.csrf.as_str()), ("origin", "https://evil.example")],
            ),
            ("another origin, signed out", None, vec![("origin", "https://evil.example")]),
            ("a foreign referer", None, vec![("referer", "https://evil.example/page")]),
        ] {
            let response = call(&app, session, &route.method, &path, &headers).await;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert_eq!(status, 403, "{what} with {case} answered {status}: {body}");
            assert!(body.contains("CSRF") || body.contains("cross-origin"), "{what} with {case}: {body}");
        }
        checked += 1;
    }
    assert!(checked > 30, "{checked} state-changing routes");
    // None of it went through: the admin session is still live, alice's objects still there.
    assert_eq!(admin.get("/api/v1/me").await.status(), 200);
    assert_eq!(alice.get(&format!("/api/v1/jobs/{}", fixtures.job)).await.status(), 200);
    app.stop().await.unwrap();
}

/// Path parameters no client should send, and bodies that are malformed, of the wrong
/// shape or too large: every route answers 4xx with a reason, never a 5xx, never hangs.
#[tokio::test]
async fn hostile_parameters_and_bodies_on_every_route_get_a_4xx_never_a_5xx() {
    let (app, _llm) = spawn_chat_app().await;
    let alice = app.user("alice").await;
    let fixtures = Fixtures::create(&app, &alice).await;
    let long = "a".repeat(10_000);
    let hostile: Vec<&str> = vec![
        "0",
        "-1",
        "99999999999999999999999",
        "1e3",
        "%00",
        "%ff%fe",
        "..%2f..%2fetc%2fpasswd",
        "%252e%252e",
        "%E2%80%AEabc",
        "%3Cscript%3E",
        "'%20OR%201=1--",
        &long,
    ];
    let big = format!("{{\"content\": \"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let bodies: Vec<(&str, String)> = vec![
        ("application/json", "{\"".into()),
        ("application/json", "[]".into()),
        ("application/json", "null".into()),
        ("application/json", json!({"name": 5, "content": [], "title": {}, "token": null, "role": 7}).to_string()),
        ("application/json", big.clone()),
        ("application/x-www-form-urlencoded", "%zz=%zz&name".into()),
        ("text/plain", "hello".into()),
    ];
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut sent = 0;
    for route in routes() {
        let session = if route.access == Access::Admin { app.admin().await } else { bob(&app).await };
        let (good_path, _) = fixtures.fill(&route);
        let what = format!("{} {}", route.method, route.path);
        let mut paths = Vec::new();
        if route.path.contains('{') {
            for value in &hostile {
                let mut path = String::new();
                for (i, segment) in route.path.split('/').enumerate() {
                    if i > 0 {
                        path.push('/');
                    }
                    let good = good_path.split('/').nth(i).unwrap();
                    path.push_str(if segment.starts_with('{') { value } else { good });
                }
                paths.push(path);
            }
        }
        let mut requests: Vec<(String, Option<(&str, String)>)> = paths.into_iter().map(|p| (p, None)).collect();
        if changes_state(&route.method) {
            requests.extend(bodies.iter().map(|(kind, body)| (good_path.clone(), Some((*kind, body.clone())))));
        }
        let mut reads_json = false;
        for (path, body) in requests {
            // Signing out ends the session the next request needs.
            let fresh;
            let session = if route.path.ends_with("logout") {
                fresh = bob(&app).await;
                &fresh
            } else {
                &session
            };
            let mut request = client
                .request(route.method.clone(), format!("{}{path}", app.base))
                .header("cookie", session.cookie())
                .header("x-csrf-token", &session.csrf);
            if let Some((kind, body)) = &body {
                request = request.header("content-type", *kind).body(body.clone());
            }
            let response = tokio::time::timeout(Duration::from_secs(10), request.send())
                .await
                .unwrap_or_else(|_| panic!("{what} as {path} did not answer"))
                .unwrap();
            let status = response.status().as_u16();
            let shown = body.as_ref().map_or(String::new(), |(kind, b)| format!(" with {kind} {:.60}", b));
            let text = response.text().await.unwrap_or_default();
            assert!(status < 500, "{what} as {path:.80}{shown} answered {status}: {text:.300}");
            if status >= 400 && is_api(&path) {
                let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                assert!(error["error"]["message"].is_string(), "{what}{shown}: an API error says why: {text:.300}");
            }
            // A route that reads JSON (it refused the truncated `{"`) refuses a huge body as such.
            match &body {
                Some((_, b)) if b == "{\"" => reads_json = [400, 422].contains(&status),
                Some((_, b)) if b.len() > 1024 * 1024 && reads_json => {
                    assert_eq!(status, 413, "{what}: an oversized body is refused as too large");
                }
                _ => {}
            }
            sent += 1;
        }
    }
    assert!(sent > 300, "{sent} hostile requests");
    // The service is still healthy after all of it.
    assert_eq!(alice.get(&format!("/api/v1/conversations/{}", fixtures.conversation)).await.status(), 200);
    app.stop().await.unwrap();
}

/// Traversal by raw request lines (no client normalises them) under every prefix that has
/// a parameter, encoded, double-encoded, with backslashes and with symlinked paths.
#[tokio::test]
async fn traversal_by_raw_request_lines_never_reads_a_file() {
    let (app, _llm) = spawn_chat_app().await;
    let alice = app.user("alice").await;
    let fixtures = Fixtures::create(&app, &alice).await;
    let tricks = [
        "../../../../../../../../etc/passwd",
        "..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
        "..\\..\\..\\..\\..\\..\\etc\\passwd",
        "..%5c..%5c..%5c..%5cetc%5cpasswd",
        "....//....//....//etc/passwd",
        "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "../../../../../../proc/self/root/etc/passwd",
        "../../../../../../proc/self/cwd/Cargo.toml",
        "../../../../../../proc/self/environ",
        "../../../../../../dev/fd/1",
    ];
    let mut prefixes: Vec<String> = Vec::new();
    for route in routes().iter().filter(|r| r.method == Method::GET && r.path.contains('{')) {
        let cut = route.path.find('{').unwrap();
        let (prefix, _) = fixtures.fill(&Route { path: route.path[..cut].to_owned(), ..route.clone() });
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
    prefixes.extend(["/".to_owned(), "/api/v1/".to_owned()]);
    for prefix in &prefixes {
        for trick in tricks {
            let target = format!("{prefix}{trick}");
            let Ok((status, body)) = tokio::time::timeout(
                Duration::from_secs(3),
                crate::security::raw_request(&app.base, &target, Some(&alice.cookie())),
            )
            .await
            else {
                panic!("{target} did not answer: the server tried to read something");
            };
            assert!(status < 500, "{target} answered {status}");
            for leak in ["root:x:0", "[package]", "PROMPTOPS_", "SQLite format"] {
                assert!(!body.contains(leak), "{target} answered with a file: {body:.400}");
            }
        }
    }
    app.stop().await.unwrap();
}

/// Markup an attacker would get an LLM (or a Jira issue it reads) to write.
const HOSTILE: &str = "Hi <script>alert(1)</script> <img src=x onerror=alert(2)> \
    [x](javascript:alert(3)) <a href=\"javascript:alert(4)\">y</a> \"><svg onload=alert(5)> \
    <iframe src=//evil.example></iframe> </div></main></body> <pre title=\"t\">p</pre> \
    <form action=//evil.example><button>go</button></form> <style>*{display:none}</style>";

/// The first tag of `html` that a browser would run or obey on [`HOSTILE`]'s behalf: an
/// event handler attribute, a URL attribute pointing at `javascript:` or off the site, or
/// a script, frame, picture, style or plugin element that is not one of our own files.
/// (Escaped text has no `<`; an escaped attribute value is inert.)
fn active_in(html: &str) -> Option<String> {
    const EMBEDS: &[&str] = &["script", "iframe", "svg", "style", "img", "object", "embed", "math", "base", "meta"];
    let tags = html.split('<').skip(1).filter_map(|part| part.split_once('>').map(|(tag, _)| tag));
    for tag in tags.filter(|tag| !tag.starts_with('/')) {
        let (name, attributes) = tag_parts(tag);
        let url_of = |wanted: &str| attributes.iter().find(|(a, _)| a == wanted).map(|(_, v)| v.as_str());
        let foreign = |url: &str| {
            let url = url.trim().to_ascii_lowercase();
            url.starts_with("javascript:") || url.contains("evil.example") || url.contains("alert(")
        };
        let bad_attribute = attributes.iter().any(|(attribute, value)| {
            attribute.starts_with("on") || (URL_ATTRIBUTES.contains(&attribute.as_str()) && foreign(value))
        });
        let own_file = url_of("src").is_some_and(|src| src.starts_with("/static/"));
        let bad_embed =
            EMBEDS.contains(&name.as_str()) && !own_file && !(name == "meta" && url_of("http-equiv").is_none());
        if bad_attribute || bad_embed {
            return Some(tag.to_owned());
        }
    }
    None
}

/// Hostile markup from the LLM's answer, in a question (and so the title made from it), in
/// a tool call's arguments and in the tool's result, is inert on every page and in every
/// API answer and export that shows it.
#[tokio::test]
async fn hostile_llm_and_tool_output_is_inert_everywhere_it_is_shown() {
    let everything = tokio::task::spawn_blocking(crate::mcp_servers::start_everything).await.unwrap();
    let url = everything.url.clone();
    let files = crate::helpers::edited_config(|c| {
        c["mcp_servers"] = json!({"everything": {
            "url": url, "auth": {"type": "none"},
            "tools": {"allow": ["echo"], "default": ["echo"]}
        }});
    });
    let (app, llm) =
        crate::helpers::spawn_chat_app_with(crate::helpers::AppOptions { files, ..Default::default() }).await;
    assert!(active_in(HOSTILE).is_some(), "the detector sees the raw markup");
    let mallory = app.user("mallory").await;
    let conversation = mallory.conversation().await;
    llm.push(Script::ToolCall { name: "echo".into(), arguments: json!({"message": HOSTILE}).to_string() });
    llm.push(Script::Stream { pieces: words(HOSTILE), delay: Duration::ZERO });
    let message = mallory.send(conversation, HOSTILE).await;
    let events = mallory.events(conversation, message, None).await;
    let result = events.iter().find(|e| e.event == "tool_result").expect("the tool ran");
    assert!(result.data["content"].as_str().unwrap().contains("<script>alert(1)"), "the echo carried the markup");

    // What carries HTML to a browser: pages and fragments.
    let pages = ["/?q=alert".to_owned(), format!("/c/{conversation}"), format!("/c/{conversation}/m/{message}")];
    for page in &pages {
        let response = mallory.get(page).await;
        assert_eq!(response.status(), 200, "{page}");
        let html = response.text().await.unwrap();
        assert!(html.contains("alert(1)"), "{page} shows the conversation");
        let active = active_in(&html);
        assert_eq!(active, None, "{page} carries active markup {active:?}: {html}");
    }
    // The sanitised answer in the API is as inert as the page; the raw text is JSON, and
    // exports are served as something a browser does not render as HTML.
    let stored = mallory.message(conversation, message).await;
    assert_eq!(active_in(stored["html"].as_str().unwrap_or_default()), None, "{stored}");
    for format in ["markdown", "json"] {
        let export = mallory.get(&format!("/api/v1/conversations/{conversation}/export?format={format}")).await;
        assert_eq!(export.status(), 200, "export as {format}");
        let kind = export.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(!kind.starts_with("text/html"), "an export is never HTML: {kind}");
        assert_eq!(export.headers()["x-content-type-options"], "nosniff");
        assert!(export.headers()["content-disposition"].to_str().unwrap().starts_with("attachment;"));
    }
    let listed = mallory.json("/api/v1/conversations").await;
    assert!(listed.to_string().contains("alert(1)"), "the title was made from the question");
    app.stop().await.unwrap();
    drop(everything);
}

/// The secrets a running service holds (the LLM API key, a user's Jira token, the first
/// admin's password, a session cookie) appear in no log line even at trace level, in no
/// answer of any GET route, and never in plain text in the database, its WAL or its
/// shared memory.
#[tokio::test]
async fn secrets_never_leave_the_service() {
    use std::process::Stdio;

    use crate::cli::{free_port, promptops, signal, wait_exit, wait_ready};

    const API_KEY: &str = "canary-llm-key-5b1e0c9d7a";
    const PAT: &str = "canary-jira-pat-94c2f1e8b3";
    const PASSWORD: &str = "canary-admin-password-3d8f";
    let llm = crate::mock_llm::MockLlm::start().await;
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::write_files(&dir.path().join("config"), &crate::helpers::example_config());
    let port = free_port();
    let mut child = promptops(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--log-level", "trace"])
        .env("PROMPTOPS_BCRYPT_COST", "4")
        .env("PROMPTOPS_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD)
        .env("PROMPTOPS_LLM_BASE_URL", &llm.base)
        .env("PROMPTOPS_LLM_API_KEY", API_KEY)
        // A file, not a pipe: a trace log fills a pipe nobody reads until the end.
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("serve.log")).unwrap()))
        .stdout(Stdio::from(std::fs::File::create(dir.path().join("serve.out")).unwrap()))
        .spawn()
        .unwrap();
    wait_ready(port, &mut child).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let cookie_value = cookie.split_once('=').unwrap().1.to_owned();
    let csrf = login.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let authed = |method: Method, path: &str| {
        client.request(method, format!("{base}{path}")).header("cookie", &cookie).header("x-csrf-token", &csrf)
    };
    let stored = authed(Method::PUT, "/api/v1/me/credentials/jira").json(&json!({"token": PAT})).send().await.unwrap();
    assert_eq!(stored.status(), 200);
    let created = authed(Method::POST, "/api/v1/conversations").json(&json!({})).send().await.unwrap();
    let conversation = created.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    llm.push(Script::Stream { pieces: words("The answer."), delay: Duration::ZERO });
    let sent = authed(Method::POST, &format!("/api/v1/conversations/{conversation}/messages"))
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    let message = sent.json::<Value>().await.unwrap()["message_id"].as_i64().unwrap();
    let events = authed(Method::GET, &format!("/api/v1/conversations/{conversation}/messages/{message}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(events.contains("answer"), "the answer streamed: {events}");
    let sent_key = llm.received()[0].headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(sent_key, Some(format!("Bearer {API_KEY}")), "the key did reach the LLM");

    let secrets = [("the LLM API key", API_KEY), ("the Jira token", PAT), ("the admin password", PASSWORD)];
    // Every GET route, its parameters filled with what this admin has.
    let mut read = 0;
    for route in routes().iter().filter(|r| r.method == Method::GET) {
        let path = route
            .path
            .replace("{*path}", "js/app.js")
            .replace("{message_id}", &message.to_string())
            .replace("{service}", "jira");
        let path = if path.starts_with("/c/") || path.starts_with("/api/v1/conversations/") {
            path.replace("{id}", &conversation.to_string())
        } else {
            path.replace("{id}", "1")
        };
        let path = path.replace("{run_id}", "1");
        let body = authed(Method::GET, &path).send().await.unwrap().text().await.unwrap();
        for (what, secret) in secrets {
            assert!(!body.contains(secret), "GET {path} shows {what}");
        }
        assert!(!body.contains(&cookie_value), "GET {path} shows the session cookie");
        read += 1;
    }
    assert!(read > 25, "{read} GET routes read");

    // The database files, while running (WAL and shared memory are live) and after.
    let data = dir.path().join("data");
    let check_files = |when: &str| {
        let mut seen = 0;
        for entry in std::fs::read_dir(&data).unwrap() {
            let path = entry.unwrap().path();
            if !path.file_name().unwrap().to_string_lossy().starts_with("promptops.db") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for (what, secret) in secrets {
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "{} holds {what} in plain text {when}", path.display());
            }
            seen += 1;
        }
        assert!(seen >= 1, "the database was read {when}");
    };
    check_files("while running");
    signal(&child, "TERM");
    assert!(wait_exit(child).status.success());
    check_files("after shutdown");
    let file_text = |name: &str| String::from_utf8_lossy(&std::fs::read(dir.path().join(name)).unwrap()).into_owned();
    let log = format!("{}{}", file_text("serve.log"), file_text("serve.out"));
    assert!(log.contains("TRACE") || log.contains("\"level\":\"TRACE\""), "the log is at trace level");
    assert!(log.contains("/api/v1/conversations/{id}/messages"), "the requests were logged");
    for (what, secret) in secrets {
        assert!(!log.contains(secret), "the trace log holds {what}");
    }
    assert!(!log.contains(&cookie_value), "the trace log holds the session cookie");
    drop(llm);
}

/// A method a path does not serve gets `405`, on every path of the table; a page that
/// shows a freshly issued password tells browsers and proxies not to keep it.
#[tokio::test]
async fn other_methods_get_405_and_issued_passwords_are_not_cached() {
    let (app, _llm) = spawn_chat_app().await;
    let alice = app.user("alice").await;
    let fixtures = Fixtures::create(&app, &alice).await;
    let admin = app.admin().await;
    let table = routes();
    let mut checked = 0;
    for route in &table {
        let served: Vec<&Method> = table.iter().filter(|r| r.path == route.path).map(|r| &r.method).collect();
        let Some(other) =
            [Method::PUT, Method::DELETE, Method::PATCH, Method::POST].into_iter().find(|m| !served.contains(&m))
        else {
            continue;
        };
        let (path, _) = fixtures.fill(route);
        let status = with_csrf(&app, &admin, &other, &path).await.status().as_u16();
        assert_eq!(status, 405, "{other} {} answered {status}", route.path);
        checked += 1;
    }
    assert!(checked > 30, "{checked} paths");
    let reset = admin.form(&format!("/admin/users/{}/reset-password", fixtures.carol), &[]).await;
    assert_eq!(reset.status(), 200);
    assert_eq!(reset.headers()["cache-control"], "no-store");
    assert!(reset.text().await.unwrap().contains("issued-password"));
    app.stop().await.unwrap();
}
