//! The route table: each route with the one access rule it has. The router is built from
//! it and the attack suite (`tests/api/attacks.rs`) walks it, so a route cannot be added
//! without saying who may call it, and none escapes the auth and CSRF checks.
//! The declaration is checked, not trusted: the suite calls every route as nobody, as a
//! plain user and as an admin, and fails when the answer disagrees with the table.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{self, MethodRouter};

use super::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (probes, static files, the login form).
    Public,
    /// A signed-in user; others get 401 (API) or the login page.
    SignedIn,
    /// A signed-in admin; other users get 403.
    Admin,
}

/// One method on one path, as the router serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// The path template, `{name}` for a parameter and `{*name}` for the rest.
    pub path: String,
    pub access: Access,
}

/// A router under construction and the table of what it serves.
#[derive(Debug)]
pub struct Routes {
    router: Router<AppState>,
    table: Vec<Route>,
}

impl Default for Routes {
    fn default() -> Self {
        Self { router: Router::new(), table: Vec::new() }
    }
}

impl Routes {
    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, access: Access, handler: H) -> Self {
        self.add(Method::GET, path, access, routing::get(handler))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, access: Access, handler: H) -> Self {
        self.add(Method::POST, path, access, routing::post(handler))
    }

    pub fn put<H: Handler<T, AppState>, T: 'static>(self, path: &str, access: Access, handler: H) -> Self {
        self.add(Method::PUT, path, access, routing::put(handler))
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(self, path: &str, access: Access, handler: H) -> Self {
        self.add(Method::PATCH, path, access, routing::patch(handler))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &str, access: Access, handler: H) -> Self {
        self.add(Method::DELETE, path, access, routing::delete(handler))
    }

    /// `inner`'s routes under `prefix`, with its own fallback.
    pub fn nest(mut self, prefix: &str, inner: Self) -> Self {
        self.table
            .extend(inner.table.into_iter().map(|route| Route { path: format!("{prefix}{}", route.path), ..route }));
        self.router = self.router.nest(prefix, inner.router);
        self
    }

    pub fn fallback<H: Handler<T, AppState>, T: 'static>(mut self, handler: H) -> Self {
        self.router = self.router.fallback(handler);
        self
    }

    pub fn table(&self) -> &[Route] {
        &self.table
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }

    /// Methods on one path merge (axum merges repeated paths, and panics on a repeated method).
    fn add(mut self, method: Method, path: &str, access: Access, route: MethodRouter<AppState>) -> Self {
        self.table.push(Route { method, path: path.to_owned(), access });
        self.router = self.router.route(path, route);
        self
    }
}
