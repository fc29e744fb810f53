//! The token vault: per-user isolation, encryption at rest, binding to the owner, rotation.

use std::sync::Arc;

use promptops::audit::AuditLog;
use promptops::auth::keys::Keyring;
use promptops::auth::model::Service;
use promptops::auth::vault::TokenVault;
use secrecy::ExposeSecret;

use crate::helpers::{AppOptions, spawn_app, spawn_app_with};

const ALICE_TOKEN: &str = "alice-jira-PAT-0123456789-abcd";

#[tokio::test]
async fn tokens_are_per_user_and_only_hints_come_back() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let stored = alice.put("/api/v1/me/credentials/jira", &serde_json::json!({"token": ALICE_TOKEN})).await;
    assert_eq!(stored.status(), 200);
    let body = stored.text().await.unwrap();
    assert!(!body.contains(ALICE_TOKEN), "{body}");
    assert!(body.contains("\"hint\":\"…abcd\""), "{body}");

    assert_eq!(bob.json("/api/v1/me").await["credentials"]["jira"]["configured"], false, "Bob sees only his own");
    bob.put("/api/v1/me/credentials/jira", &serde_json::json!({"token": "bob-jira-PAT-99999999"})).await;
    assert_eq!(bob.delete("/api/v1/me/credentials/jira").await.status(), 204);
    assert_eq!(alice.json("/api/v1/me").await["credentials"]["jira"]["hint"], "…abcd", "Bob's removal leaves Alice's");

    let page = alice.get("/settings").await.text().await.unwrap();
    assert!(page.contains("…abcd") && !page.contains(ALICE_TOKEN));

    let bad = alice.put("/api/v1/me/credentials/github", &serde_json::json!({"token": ALICE_TOKEN})).await;
    assert_eq!(bad.status(), 404);
    let empty = alice.put("/api/v1/me/credentials/confluence", &serde_json::json!({"token": "  "})).await;
    assert_eq!(empty.status(), 422);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_database_and_its_wal_never_hold_a_token_in_clear() {
    // A data folder of the test's own, so it outlives the app for the second look.
    let data = tempfile::tempdir().unwrap();
    let app = spawn_app_with(AppOptions { data_dir: Some(data.path().to_path_buf()), ..AppOptions::default() }).await;
    let alice = app.user("alice").await;
    alice.put("/api/v1/me/credentials/jira", &serde_json::json!({"token": ALICE_TOKEN})).await;
    alice.put("/api/v1/me/credentials/confluence", &serde_json::json!({"token": ALICE_TOKEN})).await;
    let data_dir = app.data_dir.clone();
    // Look while the app runs (WAL not yet checkpointed) and after it stopped.
    let scan = || {
        let mut files = 0;
        for entry in std::fs::read_dir(&data_dir).unwrap() {
            // SQLite may remove its -wal/-shm files between listing and reading.
            let Ok(bytes) = std::fs::read(entry.unwrap().path()) else { continue };
            files += 1;
            assert!(!bytes.windows(ALICE_TOKEN.len()).any(|w| w == ALICE_TOKEN.as_bytes()), "token in clear on disk");
        }
        files
    };
    assert!(scan() >= 2, "the database and its WAL were scanned");
    app.stop().await.unwrap();
    assert!(scan() >= 1, "the database was scanned after the WAL was checkpointed");
}

#[tokio::test]
async fn a_ciphertext_copied_to_another_user_does_not_open() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let _bob = app.user("bob").await;
    alice.put("/api/v1/me/credentials/jira", &serde_json::json!({"token": ALICE_TOKEN})).await;
    let alice_id: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE username = 'alice'").fetch_one(&app.state.db).await.unwrap();
    let bob_id: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE username = 'bob'").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(app.state.vault.open(alice_id, Service::Jira).await.unwrap().unwrap().expose_secret(), ALICE_TOKEN);

    // An attacker with write access to the database copies Alice's row to Bob.
    sqlx::query(
        "INSERT INTO credentials (user_id, service, key_id, nonce, ciphertext, hint, updated_at) \
         SELECT ?, service, key_id, nonce, ciphertext, hint, updated_at FROM credentials WHERE user_id = ?",
    )
    .bind(bob_id)
    .bind(alice_id)
    .execute(&app.state.db)
    .await
    .unwrap();
    let error = app.state.vault.open(bob_id, Service::Jira).await.unwrap_err();
    assert!(error.to_string().contains("does not authenticate"), "{error}");
    // Nor does moving it to another service of the same user.
    sqlx::query("UPDATE credentials SET service = 'confluence' WHERE user_id = ? AND service = 'jira'")
        .bind(alice_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    assert!(app.state.vault.open(alice_id, Service::Confluence).await.is_err());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn rotation_reseals_every_token_under_the_active_key() {
    let old = Keyring::generate_spec("old");
    let app = spawn_app_with(AppOptions { encryption_keys: Some(old.clone()), ..AppOptions::default() }).await;
    let alice = app.user("alice").await;
    alice.put("/api/v1/me/credentials/jira", &serde_json::json!({"token": ALICE_TOKEN})).await;
    let alice_id: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE username = 'alice'").fetch_one(&app.state.db).await.unwrap();
    let db = app.state.db.clone();

    let new = Keyring::generate_spec("new");
    let both = Arc::new(Keyring::parse(&format!("{new},{old}")).unwrap());
    let vault = TokenVault::new(db.clone(), both, AuditLog::new(db.clone()));
    assert_eq!(vault.rotate().await.unwrap(), 1);
    assert_eq!(vault.rotate().await.unwrap(), 0, "already under the active key");
    let key_id: String = sqlx::query_scalar("SELECT key_id FROM credentials").fetch_one(&db).await.unwrap();
    assert_eq!(key_id, "new");

    let only_new = TokenVault::new(db.clone(), Arc::new(Keyring::parse(&new).unwrap()), AuditLog::new(db.clone()));
    assert_eq!(only_new.open(alice_id, Service::Jira).await.unwrap().unwrap().expose_secret(), ALICE_TOKEN);
    app.stop().await.unwrap();
}
