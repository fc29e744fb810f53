//! Benchmark of the costs that grow with the data, run with `cargo bench --bench
//! data_growth` (release build, a real SQLite file with the project's migrations). Prints
//! figures at 1×, 10× and 100× the data, each next to the way it was done before (the old
//! SQL, run in the same process on the same file); asserts nothing about speed.
//!
//! 1. Message search: 10,000 → 1,000,000 messages of 100 users; the full-text index
//!    (`conversations::search`) against the LIKE scan it replaced.
//! 2. Audit log: 10,000 → 1,000,000 entries; a page 2,000 pages deep (or the deepest there
//!    is) by keyset (`audit::page` with a cursor) against OFFSET paging.
//! 3. Jobs page: 10 → 1,000 jobs with 100 runs each; every job's latest run in two
//!    queries (`jobs::latest_runs_visible_to`) against three queries per job.
//! 4. Chat page of a conversation of 200 → 2,000 messages: what the server does for it
//!    (messages, their tool calls, each answer's Markdown rendered and sanitised) for the
//!    newest page of 50 against the whole conversation, as the page did before.
//!
//! 5. Online backup (`promptops backup`, `db::backup::backup`: `VACUUM INTO` plus
//!    `PRAGMA integrity_check` of the copy) of a database of 10 MB → 1 GB, against a plain
//!    copy of the file (which would not be consistent while the service writes).
//!
//! `DATA_GROWTH_PARTS` (default `1,2,3,4,5`) picks the parts.
//!
//! Seeding writes rows with plain SQL in large transactions (the services would take far
//! longer and are not what is measured); the triggers of the search index run as they do
//! in the service.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use promptops::db::repositories::audit::{self, AuditEntry, AuditFilter, Cursor};
use promptops::db::repositories::{conversations, deliveries, jobs};
use std::str::FromStr as _;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, SqliteConnection, SqlitePool};

const USERS: i64 = 100;
const MESSAGES_PER_CONVERSATION: i64 = 20;
const SEARCHES: usize = 60;
const PAGE_SIZE: i64 = 50;
const RUNS_PER_JOB: i64 = 100;

/// A small deterministic generator (xorshift64*), so every run seeds the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index in 0..n with a Zipf-like skew: common words are common.
    fn skewed(&mut self, n: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64
    }
}

/// 5,000 pronounceable words: the vocabulary of the seeded messages.
fn vocabulary() -> Vec<String> {
    const ONSETS: [&str; 20] =
        ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "st", "tr"];
    const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
    const CODAS: [&str; 10] = ["", "n", "r", "s", "t", "l", "x", "ck", "nd", "m"];
    let mut words = Vec::new();
    'outer: for a in ONSETS {
        for v in VOWELS {
            for b in ONSETS {
                for w in VOWELS {
                    for c in CODAS {
                        words.push(format!("{a}{v}{b}{w}{c}"));
                        if words.len() == 5_000 {
                            break 'outer;
                        }
                    }
                }
            }
        }
    }
    words
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

struct Figures {
    p50: Duration,
    p99: Duration,
}

/// Runs `$body` once to warm the caches, then `$times` times, timing each; `$i` is the
/// round (0 for the warm-up).
macro_rules! measure {
    ($times:expr, |$i:ident| $body:block) => {{
        let mut samples = Vec::with_capacity($times);
        for round in 0..=$times {
            let $i: usize = round;
            let began = Instant::now();
            $body;
            if round > 0 {
                samples.push(began.elapsed());
            }
        }
        Figures { p50: percentile(&mut samples, 0.5), p99: percentile(&mut samples, 0.99) }
    }};
}

fn report(label: &str, new: &Figures, old: &Figures, goal: &str) {
    println!(
        "  {label:<38} new p50 {:>10} p99 {:>10} | before p50 {:>10} p99 {:>10} | {:>7.1}× faster (p50) | goal {goal}",
        ms(new.p50),
        ms(new.p99),
        ms(old.p50),
        ms(old.p99),
        old.p50.as_secs_f64() / new.p50.as_secs_f64().max(1e-9)
    );
}

async fn open(dir: &std::path::Path, name: &str) -> SqlitePool {
    let url = format!("sqlite://{}", dir.join(name).display());
    let pool = promptops::db::connect(&url).await.unwrap();
    promptops::db::migrator().run(&pool).await.unwrap();
    pool
}

async fn seed_users(conn: &mut SqliteConnection, now: DateTime<Utc>) {
    for id in 1..=USERS {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, role, created_at, password_changed_at) \
             VALUES (?, ?, '', 'user', ?, ?)",
        )
        .bind(id)
        .bind(format!("user{id}"))
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
}

/// Adds messages until there are `total`, in conversations of 20 messages spread over the
/// users; each message 30 words.
async fn grow_messages(pool: &SqlitePool, words: &[String], rng: &mut Rng, have: &mut i64, total: i64) {
    let now = Utc::now();
    let mut tx = pool.begin().await.unwrap();
    while *have < total {
        let conversation = *have / MESSAGES_PER_CONVERSATION + 1;
        if *have % MESSAGES_PER_CONVERSATION == 0 {
            sqlx::query(
                "INSERT INTO conversations (id, user_id, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(conversation)
            .bind(conversation % USERS + 1)
            .bind(format!("Conversation {conversation}"))
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        let text: Vec<&str> = (0..30).map(|_| words[rng.skewed(words.len() as u64) as usize].as_str()).collect();
        let role = if *have % 2 == 0 { "user" } else { "assistant" };
        sqlx::query(
            "INSERT INTO messages (conversation_id, role, content, status, created_at) VALUES (?, ?, ?, 'complete', ?)",
        )
        .bind(conversation)
        .bind(role)
        .bind(text.join(" "))
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
        *have += 1;
        if *have % 50_000 == 0 {
            tx.commit().await.unwrap();
            tx = pool.begin().await.unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// The search as it was before the index: a LIKE scan of the user's messages.
async fn search_by_like(conn: &mut SqliteConnection, user_id: i64, query: &str) -> usize {
    let pattern = format!("%{query}%");
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT c.id FROM conversations c WHERE c.user_id = ? AND \
         (c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id \
         AND m.content LIKE ? ESCAPE '\\')) ORDER BY c.updated_at DESC, c.id DESC LIMIT 200",
    )
    .bind(user_id)
    .bind(&pattern)
    .bind(&pattern)
    .fetch_all(conn)
    .await
    .unwrap();
    rows.len()
}

async fn search(dir: &std::path::Path) {
    println!(
        "\n1. Message search (100 users, 30 words a message, two words a search; FTS5 against LIKE; goal p50 < 20 ms at 1,000,000)"
    );
    let pool = open(dir, "search.db").await;
    seed_users(&mut pool.acquire().await.unwrap(), Utc::now()).await;
    let words = vocabulary();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut have = 0;
    for total in [10_000, 100_000, 1_000_000] {
        let began = Instant::now();
        grow_messages(&pool, &words, &mut rng, &mut have, total).await;
        let seeded = began.elapsed();
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("PRAGMA optimize").execute(&mut *conn).await.unwrap();
        let size = std::fs::metadata(dir.join("search.db")).map(|m| m.len()).unwrap_or(0)
            + std::fs::metadata(dir.join("search.db-wal")).map(|m| m.len()).unwrap_or(0);
        println!("  {total:>9} messages (seeded in {:.1} s, file {:.0} MB)", seeded.as_secs_f64(), size as f64 / 1e6);
        // Common words (ranked 20–200: each in 2–15 % of the messages) and rarer ones
        // (ranked 200–1,200: under 1 %), two to a search.
        for (label, from, span) in [("common words", 20, 180), ("rarer words", 200, 1_000)] {
            let queries: Vec<(i64, String)> = (0..SEARCHES)
                .map(|_| {
                    let a = &words[from + rng.below(span) as usize];
                    let b = &words[from + rng.below(span) as usize];
                    ((rng.below(USERS as u64) + 1) as i64, format!("{a} {b}"))
                })
                .collect();
            let mut found = 0;
            let new = measure!(SEARCHES, |i| {
                let (user, query) = &queries[i % queries.len()];
                found += conversations::search(&mut conn, *user, query, 200).await.unwrap().len();
            });
            let old = measure!(SEARCHES, |i| {
                let (user, query) = &queries[i % queries.len()];
                // The old search matched the text as typed, so two words rarely met; one
                // word keeps the work comparable.
                search_by_like(&mut conn, *user, query.split(' ').next().unwrap()).await;
            });
            let label = format!("{label}: {:.1} found", found as f64 / (SEARCHES + 1) as f64);
            report(&label, &new, &old, "p50 < 20 ms");
        }
    }
    pool.close().await;
}

async fn grow_audit(pool: &SqlitePool, have: &mut i64, total: i64) {
    let now = Utc::now();
    let mut tx = pool.begin().await.unwrap();
    let actions = ["login", "logout", "token.set", "tool.approve", "config.reload"];
    while *have < total {
        let entry = audit::NewAuditEntry {
            actor: Some("user7"),
            action: actions[(*have % 5) as usize],
            target: Some("PAY-7"),
            client_addr: Some("10.0.0.7"),
            outcome: "success",
            detail: None,
        };
        audit::insert(&mut tx, &entry, now).await.unwrap();
        *have += 1;
        if *have % 100_000 == 0 {
            tx.commit().await.unwrap();
            tx = pool.begin().await.unwrap();
        }
    }
    tx.commit().await.unwrap();
}

async fn audit_log(dir: &std::path::Path) {
    println!(
        "\n2. Audit log page 2,000 deep (50 a page; the deepest page where there are fewer; goal p50 < 10 ms at any depth)"
    );
    let pool = open(dir, "audit.db").await;
    let mut have = 0;
    for total in [10_000, 100_000, 1_000_000] {
        grow_audit(&pool, &mut have, total).await;
        let mut conn = pool.acquire().await.unwrap();
        let pages = (total / PAGE_SIZE).min(2_000);
        let offset = (pages - 1) * PAGE_SIZE;
        // The cursor the page before it hands out: the id just above the page.
        let max_id: i64 = sqlx::query_scalar("SELECT MAX(id) FROM audit_log").fetch_one(&mut *conn).await.unwrap();
        let cursor = Cursor::Before(max_id - offset + 1);
        let filter = AuditFilter::default();
        let new = measure!(200, |_i| {
            let rows = audit::page(&mut conn, &filter, cursor, PAGE_SIZE + 1).await.unwrap();
            assert_eq!(rows[0].id, max_id - offset, "the keyset page is the offset page");
        });
        let old = measure!(200, |_i| {
            let _: Vec<AuditEntry> = sqlx::query_as(
                "SELECT id, occurred_at, actor, action, target, client_addr, outcome, detail FROM audit_log \
                 WHERE 1 = 1 ORDER BY id DESC LIMIT ? OFFSET ?",
            )
            .bind(PAGE_SIZE + 1)
            .bind(offset)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        });
        // With a filter on the action: one in five entries match.
        let filtered = AuditFilter { action: Some("token.set".into()), ..AuditFilter::default() };
        let deep: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM audit_log WHERE action = 'token.set' ORDER BY id DESC LIMIT 1 OFFSET ?")
                .bind(((total / 5 / PAGE_SIZE).min(2_000) - 1) * PAGE_SIZE)
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let filtered_cursor = Cursor::Before(deep[0] + 1);
        let new_filtered = measure!(200, |_i| {
            audit::page(&mut conn, &filtered, filtered_cursor, PAGE_SIZE + 1).await.unwrap();
        });
        let old_filtered = measure!(200, |_i| {
            let _: Vec<AuditEntry> = sqlx::query_as(
                "SELECT id, occurred_at, actor, action, target, client_addr, outcome, detail FROM audit_log \
                 WHERE 1 = 1 AND action = ? ORDER BY id DESC LIMIT ? OFFSET ?",
            )
            .bind("token.set")
            .bind(PAGE_SIZE + 1)
            .bind(((total / 5 / PAGE_SIZE).min(2_000) - 1) * PAGE_SIZE)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        });
        println!("  {total:>9} entries, page {pages}");
        report("all entries (keyset vs OFFSET)", &new, &old, "p50 < 10 ms");
        report("action=token.set (keyset vs OFFSET)", &new_filtered, &old_filtered, "p50 < 10 ms");
    }
    pool.close().await;
}

async fn grow_jobs(pool: &SqlitePool, have: &mut i64, total: i64) {
    let now = Utc::now();
    let mut tx = pool.begin().await.unwrap();
    while *have < total {
        let job = format!("job-{have}");
        sqlx::query(
            "INSERT INTO scheduled_jobs (id, source, namespace, name, schedule, time_zone, prompt, created_at, updated_at) \
             VALUES (?, 'kubernetes', 'team', ?, '0 9 * * 1', 'UTC', 'Summarise', ?, ?)",
        )
        .bind(&job)
        .bind(&job)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
        for n in 0..RUNS_PER_JOB {
            let at = now - chrono::Duration::hours(RUNS_PER_JOB - n);
            // The newest run of every tenth job is still running.
            let status = if n == RUNS_PER_JOB - 1 && *have % 10 == 0 { "running" } else { "succeeded" };
            sqlx::query(
                "INSERT INTO job_runs (id, job_id, idempotency_key, trigger, scheduled_for, status, started_at, finished_at, \
                 output, created_at) VALUES (?, ?, ?, 'schedule', ?, ?, ?, CASE WHEN ? = 'succeeded' THEN ? END, ?, ?)",
            )
            .bind(format!("{job}-{n}"))
            .bind(&job)
            .bind(format!("{job}/{n}"))
            .bind(at)
            .bind(status)
            .bind(at)
            .bind(status)
            .bind(at)
            .bind("The summary of the week: three blockers, two fixed.")
            .bind(at)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        *have += 1;
    }
    tx.commit().await.unwrap();
}

async fn jobs_page(dir: &std::path::Path) {
    println!(
        "\n3. Jobs page: every visible job with its latest run ({RUNS_PER_JOB} runs each; goal: one or two queries, p50 < 20 ms at 1,000 jobs)"
    );
    let pool = open(dir, "jobs.db").await;
    let mut have = 0;
    for total in [10, 100, 1_000] {
        grow_jobs(&pool, &mut have, total).await;
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("PRAGMA optimize").execute(&mut *conn).await.unwrap();
        let new = measure!(50, |_i| {
            let listed = jobs::visible_to(&mut conn, 1).await.unwrap();
            let latest = jobs::latest_runs_visible_to(&mut conn, 1).await.unwrap();
            assert_eq!((listed.len(), latest.len()), (total as usize, total as usize));
        });
        let old = measure!(50, |_i| {
            for job in jobs::visible_to(&mut conn, 1).await.unwrap() {
                let last = jobs::last_finished(&mut conn, &job.id).await.unwrap();
                jobs::open_runs(&mut conn, &job.id).await.unwrap();
                if let Some(run) = last {
                    deliveries::for_run(&mut conn, &run.id).await.unwrap();
                }
            }
        });
        let jobs_alone = measure!(50, |_i| {
            jobs::visible_to(&mut conn, 1).await.unwrap();
        });
        println!(
            "  {total:>9} jobs, {} runs: 2 queries now, {} before; of the {}, the job rows alone take {}",
            total * RUNS_PER_JOB,
            1 + 3 * total,
            ms(new.p50),
            ms(jobs_alone.p50)
        );
        report("latest runs (2 queries vs 3 per job)", &new, &old, "p50 < 20 ms");
        drop(conn);
        // The same two queries on a connection whose reads are not limited by SQLite's
        // default 2 MB page cache: memory-mapped reads of the file (what a bigger cache
        // or mmap in `db::connect` would buy).
        let url = format!("sqlite://{}", dir.join("jobs.db").display());
        let options = SqliteConnectOptions::from_str(&url).unwrap().pragma("mmap_size", "268435456");
        let mut mapped = SqliteConnection::connect_with(&options).await.unwrap();
        let with_mmap = measure!(50, |_i| {
            jobs::visible_to(&mut mapped, 1).await.unwrap();
            jobs::latest_runs_visible_to(&mut mapped, 1).await.unwrap();
        });
        println!(
            "  {:<38} new p50 {:>10} p99 {:>10} (mmap_size 256 MB)",
            "the same, reads memory-mapped",
            ms(with_mmap.p50),
            ms(with_mmap.p99)
        );
    }
    pool.close().await;
}

const ANSWER: &str = "The open blockers of **PAY**:\n\n1. PAY-7 — the payment gateway times out under load; \
owner *Kim*, due Friday.\n2. PAY-9 — refunds are booked twice when the webhook retries.\n\n\
```sql\nSELECT key, summary FROM issues WHERE project = 'PAY' AND priority = 'Blocker';\n```\n\n\
| issue | status |\n|---|---|\n| PAY-7 | In progress |\n| PAY-9 | To do |\n\n\
See [the board](https://jira.example.com/secure/RapidBoard.jspa?rapidView=7) for the rest.";

async fn chat_page(dir: &std::path::Path) {
    println!(
        "\n4. Chat page server work (messages + tool calls + Markdown of each answer; goal p50 < 30 ms at 2,000 messages)"
    );
    let pool = open(dir, "chat.db").await;
    let now = Utc::now();
    let mut conn = pool.acquire().await.unwrap();
    seed_users(&mut conn, now).await;
    let conversation = conversations::create(&mut conn, 1, "Blockers", now).await.unwrap().id;
    let mut have = 0;
    for total in [200, 2_000] {
        while have < total {
            let (role, content) =
                if have % 2 == 0 { ("user", "What blocks PAY this week?") } else { ("assistant", ANSWER) };
            let message =
                conversations::NewMessage { role, content, status: "complete", prompt_name: None, endpoint: None };
            conversations::add_message(&mut conn, conversation, &message, now).await.unwrap();
            have += 1;
        }
        let render = |messages: &[conversations::Message]| {
            messages
                .iter()
                .filter(|m| m.role == "assistant")
                .map(|m| promptops::chat::markdown::render(&m.content).len())
                .sum::<usize>()
        };
        let new = measure!(30, |_i| {
            let messages = conversations::messages_before(&mut conn, 1, conversation, None, 51).await.unwrap();
            let (first, last) = (messages[0].id, messages[messages.len() - 1].id);
            conversations::tool_calls(&mut conn, 1, conversation, first..=last).await.unwrap();
            render(&messages);
        });
        let old = measure!(30, |_i| {
            let messages = conversations::messages(&mut conn, 1, conversation).await.unwrap();
            conversations::tool_calls(&mut conn, 1, conversation, 0..=i64::MAX).await.unwrap();
            render(&messages);
        });
        println!("  {total:>9} messages");
        report("newest 50 vs the whole conversation", &new, &old, "p50 < 30 ms");
    }
    drop(conn);
    pool.close().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!(
        "data_growth: SQLite files in {} (WAL, synchronous=NORMAL, as the service opens them)",
        dir.path().display()
    );
    let parts = std::env::var("DATA_GROWTH_PARTS").unwrap_or_else(|_| "1,2,3,4,5".into());
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    if parts.contains(&"2") {
        audit_log(dir.path()).await;
    }
    if parts.contains(&"3") {
        jobs_page(dir.path()).await;
    }
    if parts.contains(&"4") {
        chat_page(dir.path()).await;
    }
    if parts.contains(&"1") {
        search(dir.path()).await;
    }
    if parts.contains(&"5") {
        backup(dir.path()).await;
    }
}

/// Grows the audit log with ~1 KB entries of random text until the file holds `bytes`.
async fn grow_to(pool: &SqlitePool, file: &std::path::Path, bytes: u64) {
    let now = Utc::now();
    while std::fs::metadata(file).map_or(0, |m| m.len()) < bytes {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
             INSERT INTO audit_log (occurred_at, actor, action, target, outcome, detail) \
             SELECT ?, 'bench', 'bench.fill', 'row ' || i, 'success', hex(randomblob(450)) FROM n",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await.unwrap();
    }
}

async fn backup(dir: &std::path::Path) {
    println!("\n5. online backup (VACUUM INTO + integrity_check of the copy) vs a plain file copy");
    let pool = open(dir, "backup.db").await;
    let file = dir.join("backup.db");
    for (n, size) in [10_000_000u64, 100_000_000, 1_000_000_000].into_iter().enumerate() {
        grow_to(&pool, &file, size).await;
        let bytes = std::fs::metadata(&file).unwrap().len();
        let target = dir.join(format!("copy-{n}.db"));
        let started = Instant::now();
        let written = promptops::db::backup::backup(&pool, &target).await.unwrap();
        let took = started.elapsed();
        let plain = dir.join(format!("plain-{n}.db"));
        let started = Instant::now();
        std::fs::copy(&file, &plain).unwrap();
        let copied = started.elapsed();
        println!(
            "  {:>7.1} MB database: backup {} ({:.1} MB written, {:.0} MB/s), plain copy {} ({:.1}x the copy's time)",
            bytes as f64 / 1e6,
            ms(took),
            written.bytes as f64 / 1e6,
            written.bytes as f64 / 1e6 / took.as_secs_f64(),
            ms(copied),
            took.as_secs_f64() / copied.as_secs_f64().max(1e-9)
        );
        std::fs::remove_file(&target).unwrap();
        std::fs::remove_file(&plain).unwrap();
    }
    pool.close().await;
}
