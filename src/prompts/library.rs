//! Finding and listing prompts across their three sources, and keeping people's own.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use sqlx::SqlitePool;

use super::{Prompt, PromptError, PromptInfo, PromptRef, validate};
use crate::config::ConfigStore;
use crate::db::repositories::prompts::{self as repo, StoredPrompt};

/// The most prompts one person keeps.
pub const MAX_PERSONAL: i64 = 200;

/// The prompts of prompts.json (live), of the Prompt resources the controller mirrors and
/// of each person.
#[derive(Debug)]
pub struct PromptLibrary {
    db: SqlitePool,
    config: Arc<ConfigStore>,
}

impl PromptLibrary {
    pub fn new(db: SqlitePool, config: Arc<ConfigStore>) -> Self {
        Self { db, config }
    }

    /// The prompt `reference` names, as `user_id` sees it (their own prompts only).
    pub async fn find(&self, reference: &PromptRef, user_id: Option<i64>) -> Result<Prompt, PromptError> {
        let not_found = || PromptError::NotFound(reference.to_string());
        match reference {
            PromptRef::File(name) => self
                .config
                .current()
                .and_then(|snapshot| snapshot.config.prompts.prompts.get(name).cloned())
                .ok_or_else(not_found),
            PromptRef::Resource { namespace, name } => {
                let stored = repo::resource(&mut *self.db.acquire().await?, namespace, name).await?;
                stored.map(|s| s.prompt).ok_or_else(not_found)
            }
            PromptRef::Personal(name) => {
                let owner = user_id.ok_or_else(not_found)?;
                let stored = repo::personal(&mut *self.db.acquire().await?, owner, name).await?;
                stored.map(|s| s.prompt).ok_or_else(not_found)
            }
        }
    }

    /// Every prompt `user_id` may pick: prompts.json, Prompt resources, then their own.
    pub async fn list(&self, user_id: i64) -> Result<Vec<PromptInfo>, PromptError> {
        let mut list: Vec<PromptInfo> = self
            .config
            .current()
            .map(|snapshot| {
                snapshot
                    .config
                    .prompts
                    .prompts
                    .iter()
                    .map(|(name, prompt)| PromptInfo::new(&PromptRef::File(name.clone()), prompt.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut conn = self.db.acquire().await?;
        list.extend(repo::resources(&mut conn).await?.into_iter().map(|stored| {
            let reference =
                PromptRef::Resource { namespace: stored.namespace.clone().unwrap_or_default(), name: stored.name };
            PromptInfo::new(&reference, stored.prompt)
        }));
        list.extend(
            repo::personal_list(&mut conn, user_id)
                .await?
                .into_iter()
                .map(|stored| PromptInfo::new(&PromptRef::Personal(stored.name), stored.prompt)),
        );
        Ok(list)
    }

    /// Mirrors a valid Prompt resource.
    pub async fn apply_resource(
        &self,
        uid: &str,
        namespace: &str,
        name: &str,
        prompt: &Prompt,
    ) -> Result<(), PromptError> {
        Ok(repo::upsert_resource(&mut *self.db.acquire().await?, uid, namespace, name, prompt, Utc::now()).await?)
    }

    /// Forgets a Prompt resource; `false` when it was not mirrored.
    pub async fn remove_resource(&self, uid: &str) -> Result<bool, PromptError> {
        Ok(repo::delete_resource(&mut *self.db.acquire().await?, uid).await?)
    }

    /// Keeps a new prompt of `user_id`'s, named `me:{name}`.
    pub async fn create_personal(&self, user_id: i64, name: &str, prompt: Prompt) -> Result<PromptInfo, PromptError> {
        if !crate::text::is_slug(name) {
            return Err(PromptError::Invalid(crate::text::slug_message("a prompt name")));
        }
        let prompt = self.checked(prompt)?;
        let mut conn = self.db.acquire().await?;
        if repo::personal_count(&mut conn, user_id).await? >= MAX_PERSONAL {
            return Err(PromptError::Invalid(format!("you have {MAX_PERSONAL} prompts, the most one person keeps")));
        }
        if !repo::insert_personal(&mut conn, user_id, name, &prompt, Utc::now()).await? {
            return Err(PromptError::Exists(name.to_owned()));
        }
        Ok(PromptInfo::new(&PromptRef::Personal(name.to_owned()), prompt))
    }

    /// Replaces one of `user_id`'s prompts.
    pub async fn update_personal(&self, user_id: i64, name: &str, prompt: Prompt) -> Result<PromptInfo, PromptError> {
        let prompt = self.checked(prompt)?;
        if !repo::update_personal(&mut *self.db.acquire().await?, user_id, name, &prompt, Utc::now()).await? {
            return Err(PromptError::NotFound(PromptRef::Personal(name.to_owned()).to_string()));
        }
        Ok(PromptInfo::new(&PromptRef::Personal(name.to_owned()), prompt))
    }

    /// Deletes one of `user_id`'s prompts (jobs that run it fail until it is back).
    pub async fn delete_personal(&self, user_id: i64, name: &str) -> Result<(), PromptError> {
        if !repo::delete_personal(&mut *self.db.acquire().await?, user_id, name).await? {
            return Err(PromptError::NotFound(PromptRef::Personal(name.to_owned()).to_string()));
        }
        Ok(())
    }

    /// One of `user_id`'s prompts, by name.
    pub async fn personal(&self, user_id: i64, name: &str) -> Result<PromptInfo, PromptError> {
        let stored: Option<StoredPrompt> = repo::personal(&mut *self.db.acquire().await?, user_id, name).await?;
        let reference = PromptRef::Personal(name.to_owned());
        stored
            .map(|s| PromptInfo::new(&reference, s.prompt))
            .ok_or_else(|| PromptError::NotFound(reference.to_string()))
    }

    /// `prompt` trimmed and valid against the live config's endpoints.
    fn checked(&self, mut prompt: Prompt) -> Result<Prompt, PromptError> {
        prompt.title = prompt.title.trim().to_owned();
        prompt.description = prompt.description.trim().to_owned();
        prompt.endpoint = prompt.endpoint.filter(|e| !e.trim().is_empty());
        let snapshot = self.config.current();
        let endpoints: Option<BTreeSet<&str>> =
            snapshot.as_ref().map(|s| s.config.service.endpoints.keys().map(String::as_str).collect());
        let problems = validate(&prompt, endpoints.as_ref());
        if problems.is_empty() { Ok(prompt) } else { Err(PromptError::Problems(problems)) }
    }
}
