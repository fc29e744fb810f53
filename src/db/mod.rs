//! The SQLite database: opening it with the right pragmas, migrations, readiness.
//! SQL itself lives in `repositories`; nothing here knows about HTTP or config files.

pub mod repositories;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migrate, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

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
        .busy_timeout(BUSY_TIMEOUT);
    let file = options.get_filename();
    // `sqlite::memory:` has no folder: its parent is empty.
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| DbError::CreateDir { path: parent.display().to_string(), source })?;
    }
    SqlitePoolOptions::new().max_connections(max_connections).connect_with(options).await.map_err(DbError::Open)
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
