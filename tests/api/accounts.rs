//! Sign-in, sessions and their revocation, throttling, and who may see what.

use std::time::Duration;

use crate::helpers::{ADMIN_PASSWORD, AppOptions, spawn_app, spawn_app_with};

#[tokio::test]
async fn login_sets_a_hardened_session_cookie_and_me_describes_the_caller() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let cookie = admin.set_cookie.to_lowercase();
    for attribute in ["httponly", "samesite=lax", "path=/", "max-age="] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("secure"), "plain http must not mark the cookie Secure: {cookie}");
    let me = admin.json("/api/v1/me").await;
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["csrf_token"], admin.csrf.as_str());
    assert_eq!(me["credentials"]["jira"], serde_json::json!({"configured": false, "hint": null, "updated_at": null}));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn https_public_url_makes_the_cookie_secure_and_sends_hsts() {
    let app =
        spawn_app_with(AppOptions { public_url: Some("https://po.example.com".into()), ..AppOptions::default() }).await;
    let response = app
        .client
        .post(format!("{}/api/v1/auth/login", app.base))
        .header("origin", "https://po.example.com")
        .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-promptops_session="), "{cookie}");
    assert!(cookie.contains("Secure"), "{cookie}");
    assert_eq!(response.headers()["strict-transport-security"], "max-age=31536000; includeSubDomains");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn wrong_credentials_get_401_and_are_audited() {
    let app = spawn_app().await;
    for (username, password) in [("admin", "wrong-password"), ("nobody", "whatever-password")] {
        let response = app
            .client
            .post(format!("{}/api/v1/auth/login", app.base))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "wrong user name or password");
    }
    let admin = app.admin().await;
    let audit = admin.json("/api/v1/admin/audit?action=login&outcome=failure").await;
    let actors: Vec<&str> = audit["entries"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors, ["nobody", "admin"]);
    assert_eq!(audit["entries"][0]["client_addr"], "127.0.0.1");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn throttling_engages_after_repeated_failures_with_retry_after() {
    let app = spawn_app().await;
    let attempt = |password: &'static str| {
        let request = app
            .client
            .post(format!("{}/api/v1/auth/login", app.base))
            .json(&serde_json::json!({"username": "admin", "password": password}));
        async move { request.send().await.unwrap() }
    };
    for _ in 0..6 {
        assert_eq!(attempt("wrong-password").await.status(), 401);
    }
    // The sixth failure started a delay: even the right password now waits.
    let throttled = attempt(ADMIN_PASSWORD).await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "1");
    let body: serde_json::Value = throttled.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let admin = app.admin().await;
    let denied = admin.json("/api/v1/admin/audit?action=login&outcome=denied").await;
    assert_eq!(denied["entries"][0]["detail"], "throttled");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_session_the_api_answers_401_and_pages_redirect_to_login() {
    let app = spawn_app().await;
    let api = app.get("/api/v1/me").await;
    assert_eq!(api.status(), 401);
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/settings", "/admin/users", "/admin/audit?before=2"] {
        let page = client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(page.status(), 303, "{path}");
        let location = page.headers()["location"].to_str().unwrap();
        let expected = format!(
            "/login?{}",
            url::form_urlencoded::Serializer::new(String::new()).append_pair("next", path).finish()
        );
        assert_eq!(location, expected);
    }
    // Open to everyone: login, static files, probes, metrics.
    assert_eq!(app.get("/login").await.status(), 200);
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn logout_makes_the_old_cookie_useless() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let cookie = admin.cookie();
    let response = app
        .client
        .post(format!("{}/api/v1/auth/logout", app.base))
        .header("cookie", &cookie)
        .header("x-csrf-token", &admin.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let replay = app.client.get(format!("{}/api/v1/me", app.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(replay.status(), 401, "a logged-out session cookie must not work again");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_forged_or_tampered_cookie_is_no_session() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let cookie = admin.cookie();
    let (name, value) = cookie.split_once('=').unwrap();
    let mut bytes = value.as_bytes().to_vec();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{name}={}", String::from_utf8(bytes).unwrap());
    for cookie in [tampered.as_str(), "promptops_session=not-a-session"] {
        let response = app.client.get(format!("{}/api/v1/me", app.base)).header("cookie", cookie).send().await.unwrap();
        assert_eq!(response.status(), 401, "{cookie}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn sessions_expire_after_the_idle_time() {
    let app = spawn_app_with(AppOptions { session_ttl: Duration::from_secs(1), ..AppOptions::default() }).await;
    let admin = app.admin().await;
    assert_eq!(admin.get("/api/v1/me").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(admin.get("/api/v1/me").await.status(), 401);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_and_blocks_login() {
    let app = spawn_app().await;
    let bob = app.user("bob").await;
    let admin = app.admin().await;
    let users = admin.json("/api/v1/admin/users").await;
    let bob_id = users.as_array().unwrap().iter().find(|u| u["username"] == "bob").unwrap()["id"].as_i64().unwrap();

    let response = admin.patch(&format!("/api/v1/admin/users/{bob_id}"), &serde_json::json!({"disabled": true})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(bob.get("/api/v1/me").await.status(), 401);
    let again = app
        .client
        .post(format!("{}/api/v1/auth/login", app.base))
        .json(&serde_json::json!({"username": "bob", "password": "bob-password-123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401);

    admin.patch(&format!("/api/v1/admin/users/{bob_id}"), &serde_json::json!({"disabled": false})).await;
    app.login("bob", "bob-password-123").await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_password_change_ends_the_other_sessions_only() {
    let app = spawn_app().await;
    let here = app.user("carol").await;
    let elsewhere = app.login("carol", "carol-password-123").await;

    let wrong = here
        .put(
            "/api/v1/me/password",
            &serde_json::json!({"current_password": "nope", "new_password": "a-new-password-1"}),
        )
        .await;
    assert_eq!(wrong.status(), 403);
    let short = here
        .put(
            "/api/v1/me/password",
            &serde_json::json!({"current_password": "carol-password-123", "new_password": "short"}),
        )
        .await;
    assert_eq!(short.status(), 422);

    let changed = here
        .put(
            "/api/v1/me/password",
            &serde_json::json!({"current_password": "carol-password-123", "new_password": "a-new-password-1"}),
        )
        .await;
    assert_eq!(changed.status(), 204);
    assert_eq!(here.get("/api/v1/me").await.status(), 200, "the session that changed it stays");
    assert_eq!(elsewhere.get("/api/v1/me").await.status(), 401, "other sessions end");
    app.login("carol", "a-new-password-1").await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn admin_routes_refuse_users_with_403() {
    let app = spawn_app().await;
    let dave = app.user("dave").await;
    for path in ["/api/v1/admin/config", "/api/v1/admin/users", "/api/v1/admin/audit"] {
        let response = dave.get(path).await;
        assert_eq!(response.status(), 403, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    for path in ["/admin/users", "/admin/config", "/admin/audit"] {
        let response = dave.get(path).await;
        assert_eq!(response.status(), 403, "{path}");
        assert!(response.text().await.unwrap().contains("this page is for admins"));
    }
    let post = dave.form("/admin/users", &[("username", "mallory"), ("role", "admin")]).await;
    assert_eq!(post.status(), 403);
    app.stop().await.unwrap();
}
