//! The SQLite database: opening it with the right pragmas, migrations, readiness.
//! SQL itself lives in `repositories`; nothing here knows about HTTP or config files.

pub mod backup;
pub mod repositories;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migrate, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

/// Our own bookkeeping table, so a job queue running its own migrations in the same
/// file can never confuse the two sets.
pub const MIGRATIONS_TABLE: &str = "_promptops_migrations";

/// How long a writer waits for another one before giving up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL {url:?}: {source}")]
    InvalidUrl { url: String, source: sqlx::Error },
    #[error("cannot create the database folder {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("cannot open the database: {0}")]
    Open(#[source] sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Bytes of the database file each connection may read through a memory map.
const MMAP_SIZE: &str = "268435456";

/// Opens (and creates, with its folder) the SQLite database at `url`:
/// WAL journal, foreign keys on, a busy timeout.
pub async fn connect(url: &str) -> Result<SqlitePool, DbError> {
    connect_with(url, 8).await
}

/// A pool of at most `max_connections` on the database at `url` (the job queue has its own).
pub async fn connect_with(url: &str, max_connections: u32) -> Result<SqlitePool, DbError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|source| DbError::InvalidUrl { url: url.to_owned(), source })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // Reads through a memory map instead of copying pages into each connection's 2 MB
        // cache: the Jobs page at 1,000 jobs × 100 runs went from 24.5 to 15.6 ms p50
        // (benches/data_growth.rs). File-backed memory the kernel can reclaim.
        .pragma("mmap_size", MMAP_SIZE);
    let file = options.get_filename();
    // `sqlite::memory:` has no folder: its parent is empty.
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| DbError::CreateDir { path: parent.display().to_string(), source })?;
    }
    SqlitePoolOptions::new().max_connections(max_connections).connect_with(options).await.map_err(DbError::Open)
}

/// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`), waiting up to the
/// busy timeout for another writer. Every transaction that reads and then writes needs it:
/// a deferred one that read first fails at its first write with `SQLITE_BUSY` (no wait)
/// when another connection committed in between, which surfaced as a rare 500.
pub async fn write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// The migrations in `migrations/`, embedded in the binary.
pub fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// Applies every pending migration; a no-op on an up-to-date database.
pub async fn migrate(pool: &SqlitePool) -> Result<(), DbError> {
    migrator().run(pool).await?;
    Ok(())
}

/// Why the database is not ready for requests, if it is not: unreachable, or missing
/// migrations that this binary expects.
pub async fn readiness(pool: &SqlitePool) -> Result<(), String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(2), pool.acquire())
        .await
        .map_err(|_| "timed out waiting for a database connection".to_owned())?
        .map_err(|e| format!("cannot reach the database: {e}"))?;
    let applied = conn
        .list_applied_migrations(MIGRATIONS_TABLE)
        .await
        .map_err(|_| "the database is not migrated: run `promptops migrate`".to_owned())?;
    let pending = migrator()
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .count();
    if pending > 0 {
        return Err(format!("{pending} migration(s) not applied: run `promptops migrate`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race behind the rare 500: this transaction reads, another connection commits a
    /// write, then this one writes. Deferred, the write fails with `SQLITE_BUSY` at once;
    /// from `write()` the other connection waits for the lock instead and both succeed.
    async fn read_then_write_while_another_commits(immediate: bool) -> Result<(), sqlx::Error> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("race.db").display());
        let pool = connect_with(&url, 2).await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)").execute(&pool).await?;
        let mut tx = if immediate { write(&pool).await? } else { pool.begin().await? };
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM t").fetch_one(&mut *tx).await?;
        let other = tokio::spawn({
            let pool = pool.clone();
            async move { sqlx::query("INSERT INTO t VALUES (1)").execute(&pool).await.map(|_| ()) }
        });
        if immediate {
            // The other writer is waiting for our lock; give it time to try.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!other.is_finished(), "the other writer waits for the lock");
        } else {
            other.await.unwrap()?;
            return sqlx::query("INSERT INTO t VALUES (2)").execute(&mut *tx).await.map(|_| ());
        }
        sqlx::query("INSERT INTO t VALUES (2)").execute(&mut *tx).await?;
        tx.commit().await?;
        other.await.unwrap()
    }

    #[tokio::test]
    async fn a_write_transaction_waits_for_the_lock_instead_of_failing() {
        let deferred = read_then_write_while_another_commits(false).await;
        assert!(
            matches!(&deferred, Err(sqlx::Error::Database(e)) if e.message().contains("locked")),
            "the race exists with a deferred transaction: {deferred:?}"
        );
        read_then_write_while_another_commits(true).await.unwrap();
    }
}
