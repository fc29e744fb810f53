//! CSRF, origin checks, security headers and static files.

use crate::helpers::{AppOptions, spawn_app, spawn_app_with};

#[tokio::test]
async fn state_changing_api_calls_need_the_csrf_token() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let body = serde_json::json!({"token": "jira-token-12345678"});
    let url = format!("{}/api/v1/me/credentials/jira", app.base);

    let missing = admin.client.put(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), 403);
    let error: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "forbidden");

    let wrong = admin.client.put(&url).header("x-csrf-token", "guessed").json(&body).send().await.unwrap();
    assert_eq!(wrong.status(), 403);
    assert_eq!(admin.json("/api/v1/me").await["credentials"]["jira"]["configured"], false, "nothing was stored");

    assert_eq!(admin.put("/api/v1/me/credentials/jira", &body).await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn form_posts_need_the_csrf_field() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let url = format!("{}/settings/credentials/jira", app.base);
    let without = admin.client.post(&url).form(&[("token", "jira-token-12345678")]).send().await.unwrap();
    assert_eq!(without.status(), 403);
    assert!(without.text().await.unwrap().contains("missing or wrong CSRF token"));

    let with = admin.form("/settings/credentials/jira", &[("token", "jira-token-12345678")]).await;
    assert_eq!(with.status(), 303);
    assert_eq!(with.headers()["location"], "/settings?notice=token_saved");
    assert_eq!(admin.json("/api/v1/me").await["credentials"]["jira"]["hint"], "…5678");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cross_origin_requests_are_refused_even_with_a_token() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let url = format!("{}/api/v1/me/credentials/jira", app.base);
    let body = serde_json::json!({"token": "jira-token-12345678"});
    let foreign = admin
        .client
        .put(&url)
        .header("x-csrf-token", &admin.csrf)
        .header("origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let cross_site = admin
        .client
        .put(&url)
        .header("x-csrf-token", &admin.csrf)
        .header("sec-fetch-site", "cross-site")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    // A login posted from another site (login CSRF) is refused too.
    let login = app
        .client
        .post(format!("{}/login", app.base))
        .header("origin", "http://evil.example")
        .form(&[("username", "admin"), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);
    // The browser's own origin is fine.
    let own = admin
        .client
        .put(&url)
        .header("x-csrf-token", &admin.csrf)
        .header("origin", &app.base)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn pages_carry_a_strict_csp_and_hardening_headers() {
    let app = spawn_app().await;
    let response = app.get("/login").await;
    let headers = response.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-eval") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert!(headers.get("strict-transport-security").is_none(), "no HSTS over plain http");

    let html = response.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("onclick="), "no inline scripts");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn static_files_have_hashed_names_and_long_caching() {
    let app = spawn_app().await;
    let html = app.get("/login").await.text().await.unwrap();
    let css = html.split('"').find(|s| s.starts_with("/static/css/app.") && s.ends_with(".css")).unwrap().to_owned();
    let response = app.get(&css).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert_eq!(response.headers()["content-type"], "text/css; charset=utf-8");
    let plain = app.get("/static/css/app.css").await;
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.headers()["cache-control"], "no-cache");
    assert_eq!(app.get("/static/nope.js").await.status(), 404);
    for script in ["/static/vendor/htmx.", "/static/vendor/alpine-csp.", "/static/js/app."] {
        assert!(html.contains(script), "{script} is referenced");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_json_gets_a_400_with_the_reason() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/api/v1/auth/login", app.base))
        .header("content-type", "application/json")
        .body("{\"username\": \"admin\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("EOF"), "{body}");
    assert_eq!(app.get("/api/v1/nothing/here").await.status(), 404);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let app = spawn_app_with(AppOptions { metrics_listen: true, ..AppOptions::default() }).await;
    assert_eq!(app.get("/metrics").await.status(), 404, "not on the public listener any more");
    let ops = app.metrics_base.clone().unwrap();
    let metrics = app.client.get(format!("{ops}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("promptops_config_generation 1"));
    assert_eq!(app.client.get(format!("{ops}/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(format!("{ops}/login")).send().await.unwrap().status(), 404, "pages stay public-only");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_client_address_header_is_used_when_configured() {
    let app =
        spawn_app_with(AppOptions { client_ip_header: Some("x-forwarded-for".into()), ..AppOptions::default() }).await;
    app.client
        .post(format!("{}/api/v1/auth/login", app.base))
        .header("x-forwarded-for", "203.0.113.9, 198.51.100.7")
        .json(&serde_json::json!({"username": "admin", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    let admin = app.admin().await;
    let audit = admin.json("/api/v1/admin/audit?action=login&outcome=failure").await;
    assert_eq!(audit["entries"][0]["client_addr"], "198.51.100.7", "the entry the trusted proxy appended");
    app.stop().await.unwrap();
}

/// Sends `target` as the raw request line (no client normalises it), optionally with a
/// session cookie, and returns the status and the whole answer.
pub(crate) async fn raw_request(base: &str, target: &str, cookie: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

/// Found by an outside sweep: in debug builds `/static/../…/proc/self/fd/1` answered with
/// the server's log (and other descriptors with the database). Only listed names are served.
#[tokio::test]
async fn static_paths_outside_the_manifest_are_never_read() {
    let app = spawn_app().await;
    let deep = "../".repeat(12);
    let mut targets: Vec<String> = (0..24).map(|fd| format!("/static/{deep}proc/self/fd/{fd}")).collect();
    targets.extend([
        format!("/static/{deep}etc/passwd"),
        "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fproc/self/fd/1".to_owned(),
        "/static/..%2f..%2f..%2f..%2f..%2f..%2f..%2fproc%2fself%2ffd%2f1".to_owned(),
        "/static/%252e%252e%252fCargo.toml".to_owned(),
        "/static/..\\..\\..\\Cargo.toml".to_owned(),
        "/static/css/../../Cargo.toml".to_owned(),
        "/static/css/input.css".to_owned(),
        "/static//proc/self/fd/1".to_owned(),
    ]);
    for target in targets {
        // A descriptor that is a pipe could block a read: bounded.
        let Ok((status, body)) =
            tokio::time::timeout(std::time::Duration::from_secs(3), raw_request(&app.base, &target, None)).await
        else {
            panic!("{target} did not answer: the server tried to read it");
        };
        assert!(status == 404 || status == 400, "{target} answered {status}");
        assert!(!body.contains("[package]") && !body.contains("root:") && !body.contains("SQLite"), "{target}: {body}");
    }
    // What the pages reference is still served, hashed and plain.
    let (status, _) = raw_request(&app.base, "/static/js/app.js", None).await;
    assert_eq!(status, 200);
    app.stop().await.unwrap();
}

/// Found by an outside sweep: `next=/\t/evil.example/` redirected off the site, and control
/// characters in `next` gave a 500 after a correct password.
#[tokio::test]
async fn login_redirects_stay_on_this_site_for_any_next() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let hostile = [
        "/\t/evil.example/",
        "/\t\\evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "https://evil.example/",
        "/\r\nSet-Cookie: x=1",
        "/a\0b",
        "/a\u{7f}",
        "/\n/evil.example",
        " /evil",
    ];
    for next in hostile {
        let login = client
            .post(format!("{}/login", app.base))
            .form(&[("username", "admin"), ("password", crate::helpers::ADMIN_PASSWORD), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 303, "{next:?}: {}", login.status());
        assert_eq!(login.headers()["location"], "/", "{next:?}");
    }
    let login = client
        .post(format!("{}/login", app.base))
        .form(&[("username", "admin"), ("password", crate::helpers::ADMIN_PASSWORD), ("next", "/jobs?x=1")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.headers()["location"], "/jobs?x=1");
    // Signed in, GET /login?next=… redirects the same way.
    let admin = app.admin().await;
    let page = admin.client.get(format!("{}/login?next=%2F%09%2Fevil.example%2F", app.base)).send().await.unwrap();
    if page.status() == 303 {
        assert_eq!(page.headers()["location"], "/");
    }
    app.stop().await.unwrap();
}

/// Found by an outside sweep: a 100,000-character name was kept whole in the audit log and
/// as a throttle key. Names longer than any user name can be are refused first.
#[tokio::test]
async fn over_long_user_names_are_refused_before_anything_is_stored() {
    let app = spawn_app().await;
    let long = "n".repeat(100_000);
    let api = app
        .client
        .post(format!("{}/api/v1/auth/login", app.base))
        .json(&serde_json::json!({"username": long, "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 422);
    let body: serde_json::Value = api.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("64"), "{body}");
    let page = app
        .client
        .post(format!("{}/login", app.base))
        .form(&[("username", long.as_str()), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 422);
    assert!(page.text().await.unwrap().len() < 50_000, "the page does not echo the name");
    let admin = app.admin().await;
    let audit = admin.json("/api/v1/admin/audit").await.to_string();
    assert!(!audit.contains(&"n".repeat(65)), "the long name reached the audit log");
    app.stop().await.unwrap();
}
