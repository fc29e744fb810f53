//! Online backups and restores of the SQLite file.
//!
//! A backup is `VACUUM INTO` a new file: a consistent snapshot taken inside one read
//! transaction, so a running `serve` keeps answering (and writing) meanwhile. It is
//! written under a `.partial` name and takes its final name only after
//! `PRAGMA integrity_check` passed on it, so a backup file that exists is a good one.
//!
//! A restore refuses while any process serves the database: every `serve` holds a shared
//! lock on `<database>.lock` for as long as it runs, and a restore needs it exclusively
//! (which also keeps a `serve` from starting halfway through). It refuses a file that is
//! not a sound promptops database or was written by a newer promptops, keeps the current
//! database (with its WAL) under `<database>.before-restore-<unix time>`, and only then
//! moves the backup in: nothing is lost, whatever fails.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrate as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{ConnectOptions as _, Connection as _};

use super::{MIGRATIONS_TABLE, migrator};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already exists; a backup never overwrites a file")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("{0} is an in-memory database: there is no file to back up or restore")]
    InMemory(String),
    #[error("{path} is not a sound SQLite file: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("{0} is not a promptops database (it has no migration table)")]
    NotPromptops(PathBuf),
    #[error("{path} was written by a newer promptops (migration {version} is unknown to this one)")]
    Newer { path: PathBuf, version: i64 },
    #[error("the database {0} is in use by a running `promptops serve` (or another restore): stop every replica first")]
    InUse(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_owned(), source }
}

/// The database file a `sqlite://` URL names.
pub fn database_file(url: &str) -> Result<PathBuf, BackupError> {
    let options = SqliteConnectOptions::from_str(url).map_err(BackupError::Url)?;
    let file = options.get_filename();
    if file.as_os_str().is_empty() || file == Path::new(":memory:") || url.contains("mode=memory") {
        return Err(BackupError::InMemory(url.to_owned()));
    }
    Ok(file.to_path_buf())
}

/// A backup written and checked.
#[derive(Debug)]
pub struct Written {
    pub bytes: u64,
    pub took: Duration,
    pub checked: Checked,
}

/// What a check of a database file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The newest migration applied to it.
    pub schema_version: i64,
    /// Migrations this binary has that it lacks (applied at the next start).
    pub behind: usize,
}

/// Writes a consistent copy of the database `pool` is open on to `to` and checks it.
pub async fn backup(pool: &SqlitePool, to: &Path) -> Result<Written, BackupError> {
    let started = Instant::now();
    if to.exists() {
        return Err(BackupError::Exists(to.to_owned()));
    }
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let partial = suffixed(to, ".partial");
    remove_if_there(&partial)?;
    let written = async {
        sqlx::query("VACUUM INTO ?").bind(partial.to_string_lossy().into_owned()).execute(pool).await?;
        let checked = check(&partial).await?;
        std::fs::rename(&partial, to).map_err(io(to))?;
        Ok::<_, BackupError>(checked)
    }
    .await;
    let checked = match written {
        Ok(checked) => checked,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let bytes = std::fs::metadata(to).map_err(io(to))?.len();
    Ok(Written { bytes, took: started.elapsed(), checked })
}

/// Opens `file` read-only and checks that it is a sound SQLite file holding a promptops
/// database this binary can run.
pub async fn check(file: &Path) -> Result<Checked, BackupError> {
    if !file.is_file() {
        return Err(BackupError::Io {
            path: file.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let corrupt = |problem: String| BackupError::Corrupt { path: file.to_owned(), problem };
    let mut conn = SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .connect()
        .await
        .map_err(|e| corrupt(e.to_string()))?;
    let problems: Vec<String> =
        sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&mut conn).await.map_err(|e| corrupt(e.to_string()))?;
    if problems != ["ok"] {
        return Err(corrupt(problems.join("; ")));
    }
    let applied =
        conn.list_applied_migrations(MIGRATIONS_TABLE).await.map_err(|_| BackupError::NotPromptops(file.to_owned()))?;
    conn.close().await?;
    let known = migrator();
    if let Some(unknown) = applied.iter().find(|a| !known.iter().any(|m| m.version == a.version)) {
        return Err(BackupError::Newer { path: file.to_owned(), version: unknown.version });
    }
    let behind = known
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.iter().any(|a| a.version == m.version))
        .count();
    let schema_version = applied.iter().map(|a| a.version).max().unwrap_or(0);
    if schema_version == 0 {
        return Err(BackupError::NotPromptops(file.to_owned()));
    }
    Ok(Checked { schema_version, behind })
}

/// The shared lock a running `serve` holds on its database; released when dropped.
#[derive(Debug)]
pub struct InUse {
    _file: File,
}

/// Marks the database at `url` as in use for as long as the returned value lives; `None`
/// for an in-memory database. Fails while a restore runs.
pub fn hold(url: &str) -> Result<Option<InUse>, BackupError> {
    let Ok(database) = database_file(url) else { return Ok(None) };
    let file = lock_file(&database)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(InUse { _file: file })),
        Err(TryLockError::WouldBlock) => Err(BackupError::InUse(database)),
        Err(TryLockError::Error(e)) => Err(BackupError::Io { path: lock_path(&database), source: e }),
    }
}

/// A restore done: where the database that was there went, if there was one.
#[derive(Debug)]
pub struct Restored {
    pub checked: Checked,
    pub previous: Option<PathBuf>,
}

/// Replaces the database at `url` by the backup `from`, after checking it; refuses while
/// the database is in use.
pub async fn restore(from: &Path, url: &str) -> Result<Restored, BackupError> {
    let database = database_file(url)?;
    let lock = lock_file(&database)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(BackupError::InUse(database)),
        Err(TryLockError::Error(e)) => return Err(BackupError::Io { path: lock_path(&database), source: e }),
    }
    let checked = check(from).await?;
    let incoming = suffixed(&database, ".restore-partial");
    remove_if_there(&incoming)?;
    std::fs::copy(from, &incoming).map_err(io(&incoming))?;
    File::open(&incoming).and_then(|f| f.sync_all()).map_err(io(&incoming))?;
    let previous = if database.exists() {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let kept = suffixed(&database, &format!(".before-restore-{stamp}"));
        // The WAL and its index go along under the matching names, so the kept copy opens
        // with every commit it had.
        for tail in ["", "-wal", "-shm"] {
            let (now, then) = (suffixed(&database, tail), suffixed(&kept, tail));
            if now.exists() {
                std::fs::rename(&now, &then).map_err(io(&now))?;
            }
        }
        Some(kept)
    } else {
        None
    };
    std::fs::rename(&incoming, &database).map_err(io(&database))?;
    drop(lock);
    Ok(Restored { checked, previous })
}

fn lock_path(database: &Path) -> PathBuf {
    suffixed(database, ".lock")
}

fn lock_file(database: &Path) -> Result<File, BackupError> {
    let path = lock_path(database);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))
}

/// `path` with `suffix` appended to its file name (`a.db` → `a.db-wal`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_there(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}
