//! `promptops backup` and `promptops restore` as an operator runs them: the real binary
//! against the database of a serving promptops.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sqlx::SqlitePool;

use crate::cli::{promptops, wait_exit};
use crate::helpers::{AppOptions, spawn_chat_app, spawn_chat_app_with};

fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("promptops.db").display())
}

/// Completed answers by message id, with their text.
async fn completed(pool: &SqlitePool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT id, content FROM messages WHERE role = 'assistant' AND status = 'complete' ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_50_answers_is_sound_and_holds_every_answer_completed_before_it() {
    let (app, _mock) = spawn_chat_app().await;
    // 50 people (one may have 3 answers running at a time), one conversation each.
    let mut people = Vec::new();
    for i in 0..50 {
        let session = app.user(&format!("person{i}")).await;
        let conversation = session.conversation().await;
        people.push((session, conversation));
    }
    let question = (0..400).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
    // 400 words 5 ms apart: every answer streams for about 2 s.
    let sends = join_all(people.iter().map(|(session, c)| session.send(*c, &question)));
    let backup = async {
        // Some answers done, the others still streaming.
        let deadline = Instant::now() + Duration::from_secs(20);
        while completed(&app.state.db).await.len() < 5 {
            assert!(Instant::now() < deadline, "no answer completed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = completed(&app.state.db).await;
        let streaming: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE status = 'streaming'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
        let file = app.data_dir.join("backups/during.db");
        let out = tokio::task::spawn_blocking({
            let (dir, file, url) = (app.data_dir.clone(), file.clone(), database_url(&app.data_dir));
            move || {
                let child = promptops(&dir)
                    .args(["backup", file.to_str().unwrap()])
                    .env("PROMPTOPS_DATABASE_URL", url)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                wait_exit(child)
            }
        })
        .await
        .unwrap();
        (before, file, out, streaming)
    };
    let (_, (before, file, out, streaming)) = tokio::join!(sends, backup);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("integrity ok"), "{stdout}");
    assert!(streaming > 0, "the backup started while answers streamed");

    let checked = promptops::db::backup::check(&file).await.unwrap();
    assert_eq!(checked.behind, 0);
    let copy = SqlitePool::connect(&format!("sqlite://{}?mode=ro", file.display())).await.unwrap();
    let held = completed(&copy).await;
    for answer in &before {
        assert!(held.contains(answer), "answer {} completed before the backup is in it", answer.0);
    }
    // The copy is a working database: it migrates as is and holds all 50 questions.
    let questions: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE role = 'user'").fetch_one(&copy).await.unwrap();
    assert_eq!(questions, 50);
    copy.close().await;

    let again = promptops(&app.data_dir)
        .args(["backup", file.to_str().unwrap()])
        .env("PROMPTOPS_DATABASE_URL", database_url(&app.data_dir))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "never overwritten");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn restore_refuses_a_live_database_and_a_corrupt_file_and_then_brings_the_backup_back() {
    let data = tempfile::tempdir().unwrap();
    let options = || AppOptions { data_dir: Some(data.path().to_path_buf()), ..AppOptions::default() };
    let (app, _mock) = spawn_chat_app_with(options()).await;
    let session = app.admin().await;
    let kept = session.conversation().await;
    let file = app.data_dir.join("kept.db");
    let backup = promptops::db::backup::backup(&app.state.db, &file).await.unwrap();
    assert!(backup.bytes > 0);
    let lost = session.conversation().await;
    let data_dir = app.data_dir.clone();
    let url = database_url(&data_dir);
    let restore = |from: &Path| {
        promptops(&data_dir)
            .args(["restore", from.to_str().unwrap()])
            .env("PROMPTOPS_DATABASE_URL", &url)
            .output()
            .unwrap()
    };

    let refused = restore(&file);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("in use by a running `promptops serve`"), "{stderr}");
    app.stop().await.unwrap();

    let corrupt = data_dir.join("corrupt.db");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 4096].fill(0xA5);
    std::fs::write(&corrupt, bytes).unwrap();
    let not_sqlite = data_dir.join("notes.txt");
    std::fs::write(&not_sqlite, "not a database").unwrap();
    for bad in [&corrupt, &not_sqlite] {
        let refused = restore(bad);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("is not a sound SQLite file"),
            "{}: {stderr}",
            bad.display()
        );
    }

    let restored = restore(&file);
    let stdout = String::from_utf8_lossy(&restored.stdout);
    assert!(restored.status.success(), "{stdout}{}", String::from_utf8_lossy(&restored.stderr));
    assert!(stdout.contains("the database it replaced is kept as"), "{stdout}");
    let previous: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("promptops.db.before-restore-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    assert_eq!(previous.len(), 1, "{previous:?}");

    let (app, _mock) = spawn_chat_app_with(options()).await;
    let session = app.admin().await;
    let listed = session.json("/api/v1/conversations").await.to_string();
    assert!(listed.contains(&format!("\"id\":{kept}")), "{listed}");
    assert!(!listed.contains(&format!("\"id\":{lost}")), "made after the backup: {listed}");
    // The replaced database, with its WAL, still holds what came after the backup.
    let old =
        SqlitePool::connect(&format!("sqlite://{}?mode=ro", data_dir.join(&previous[0]).display())).await.unwrap();
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM conversations WHERE id = ?").bind(lost).fetch_one(&old).await.unwrap();
    assert_eq!(count, 1);
    app.stop().await.unwrap();
}
