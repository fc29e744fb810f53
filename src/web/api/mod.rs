//! The JSON API under `/api/v1/`: the scriptable twin of every page action.
//! Same services, same rules; errors are `{"error": {"code", "message"}}`.

pub mod admin;
pub mod auth;
pub mod conversations;
pub mod jobs;
pub mod me;
pub mod prompts;
pub mod ws;

use super::error::ApiError;
use super::routes::{Access, Routes};

pub fn routes() -> Routes {
    use Access::{Admin, SignedIn};
    Routes::default()
        .post("/auth/login", Access::Public, auth::login)
        .post("/auth/logout", SignedIn, auth::logout)
        .get("/me", SignedIn, me::me)
        .put("/me/password", SignedIn, me::change_password)
        .put("/me/credentials/{service}", SignedIn, me::set_credential)
        .delete("/me/credentials/{service}", SignedIn, me::remove_credential)
        .post("/me/credentials/{service}/test", SignedIn, me::test_credential)
        .get("/conversations", SignedIn, conversations::list)
        .post("/conversations", SignedIn, conversations::create)
        .get("/conversations/{id}", SignedIn, conversations::get)
        .patch("/conversations/{id}", SignedIn, conversations::rename)
        .delete("/conversations/{id}", SignedIn, conversations::delete)
        .get("/conversations/{id}/export", SignedIn, conversations::export)
        .post("/conversations/{id}/messages", SignedIn, conversations::send)
        .get("/conversations/{id}/messages/{message_id}", SignedIn, conversations::message)
        .get("/conversations/{id}/messages/{message_id}/events", SignedIn, conversations::events)
        .post("/conversations/{id}/messages/{message_id}/cancel", SignedIn, conversations::cancel)
        .post("/conversations/{id}/messages/{message_id}/approvals/{call_id}", SignedIn, conversations::decide)
        .get("/prompts", SignedIn, prompts::list)
        .post("/prompts", SignedIn, prompts::create)
        .get("/prompts/{name}", SignedIn, prompts::get)
        .patch("/prompts/{name}", SignedIn, prompts::update)
        .delete("/prompts/{name}", SignedIn, prompts::delete)
        .get("/jobs", SignedIn, jobs::list)
        .post("/jobs", SignedIn, jobs::create)
        .get("/jobs/{id}", SignedIn, jobs::get)
        .patch("/jobs/{id}", SignedIn, jobs::update)
        .delete("/jobs/{id}", SignedIn, jobs::delete)
        .get("/jobs/{id}/runs", SignedIn, jobs::runs)
        .get("/jobs/{id}/runs/{run_id}", SignedIn, jobs::run)
        .post("/jobs/{id}/runs/{run_id}/deliveries/{target}/retry", SignedIn, jobs::redeliver)
        .post("/jobs/{id}/run", SignedIn, jobs::run_now)
        .get("/ws", SignedIn, ws::upgrade)
        .get("/admin/config", Admin, admin::config)
        .get("/admin/config/reloads", Admin, admin::reloads)
        .get("/admin/maintenance", Admin, admin::maintenance)
        .post("/admin/maintenance/{task}", Admin, admin::run_maintenance)
        .get("/admin/users", Admin, admin::users)
        .post("/admin/users", Admin, admin::create_user)
        .get("/admin/users/{id}", Admin, admin::user)
        .patch("/admin/users/{id}", Admin, admin::update_user)
        .post("/admin/users/{id}/password", Admin, admin::reset_password)
        .get("/admin/audit", Admin, admin::audit)
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no API route for this path")
}
