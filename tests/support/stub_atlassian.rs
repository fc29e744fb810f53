//! A stub Jira Server/Data Center (REST v2) and Confluence Server (REST `/rest/api`) on one
//! loopback port, answering exactly the calls mcp-atlassian 0.23.1 makes for
//! `jira_get_issue` (with its comments), `jira_search`, `jira_add_comment`,
//! `confluence_search`, `confluence_get_page` (by id, or by space and title),
//! `confluence_create_page` and `confluence_update_page`. Point mcp-atlassian's `JIRA_URL`
//! and `CONFLUENCE_URL` at [`StubAtlassian::base`].
//!
//! Users are known by personal access token, sent as `Authorization: Bearer <pat>` (what
//! mcp-atlassian forwards for a client's `Authorization: Token <pat>`): `alice-pat` is Alice
//! Example (`alice`), `bob-pat` is Bob Example (`bob`); any other token, or none, gets 401.
//!
//! Project PAY: PAY-7 "Payment retries fail" is blocked by PAY-9 (an issue link of type
//! Blocks, and said in its description and comments), PAY-1 is their epic, PAY-8 is done.
//! Comments are state: posted ones are stored and read back (`GET .../comment` and the
//! issue's `comment` field).
//!
//! Confluence space PAY ("Payments") starts with two pages (98305 "Payments runbook: card
//! payment retries", 98306 "Gateway SDK v5 migration plan"). Pages are state, like Confluence:
//! `POST /rest/api/content` creates one (version 1; 400 "A page with this title already
//! exists" for a title the space has, 404 for an unknown space or parent), `PUT
//! /rest/api/content/{id}` replaces title and body and must carry the current version + 1
//! (else 409), `GET /rest/api/content/{id}/history` has the version to bump, `GET
//! /rest/api/content?spaceKey=&title=` finds by title, and a little CQL (`type`, `space`, `id`,
//! `parent`/`ancestor`, `title =` exact, `title ~` words of the title, `text ~`/`siteSearch ~`
//! words of title and body) serves `/rest/api/search`. See [`StubAtlassian::pages_titled`]
//! and [`StubAtlassian::all_pages`].
//!
//! Faults, off by default: [`StubAtlassian::set_outage`] answers every Atlassian route 503
//! (an HTML body, as a proxy in front of a down Jira would); [`StubAtlassian::set_write_status`]
//! answers the writes (add comment, create/update page) with that status and an
//! Atlassian-shaped error body, writing nothing. Both are still recorded.
//!
//! Every request is recorded (method, path, query, Authorization, body, status); a route the
//! stub does not know is logged on stderr as `UNKNOWN ROUTE` and answered 404, so a gap
//! shows at once. Out of process (the `stub_atlassian` example), `GET /__stub/requests`,
//! `GET /__stub/comments/{key}` and `GET /__stub/pages` return the same records as JSON (no
//! auth, not recorded, never faulted).

#![allow(dead_code, clippy::needless_pass_by_value)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the stub received, as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string, `""` when there was none.
    pub query: String,
    /// The `Authorization` header as received (e.g. `Bearer alice-pat`).
    pub authorization: Option<String>,
    /// The user the credential resolved to (`alice`), if any.
    pub user: Option<String>,
    pub body: String,
    /// The status the stub answered with.
    pub status: u16,
    /// False when no route matched (answered 404 and logged as `UNKNOWN ROUTE`).
    pub known: bool,
}

impl Recorded {
    /// A decoded query parameter (the first one of that name).
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// The body as JSON (`Value::Null` when it is empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// `"GET /rest/api/2/myself"`, for compact assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn to_json(&self) -> Value {
        json!({"method": self.method, "path": self.path, "query": self.query, "authorization": self.authorization,
            "user": self.user, "body": self.body, "status": self.status, "known": self.known})
    }
}

/// A comment as the stub stores it.
#[derive(Debug, Clone)]
pub struct StubComment {
    pub id: String,
    /// Username of the author (`alice`).
    pub author: String,
    /// The body as posted (Jira wiki markup, which mcp-atlassian converts from Markdown).
    pub body: String,
    pub created: String,
}

/// A Confluence page as the stub stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubPage {
    pub id: String,
    /// Space key (`PAY`).
    pub space: String,
    pub title: String,
    /// The body in storage format (XHTML), as last written.
    pub body: String,
    /// 1 when created, one more on every update.
    pub version: u32,
    /// Username of whoever created the page (`alice`).
    pub author: String,
    /// Username of whoever wrote the current version.
    pub updated_by: String,
    /// When the current version was written (`2026-03-09T17:20:00.000Z`).
    pub when: String,
    /// When the page was created.
    pub created: String,
    /// The parent page's id, if it has one.
    pub parent_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StubUser {
    pub name: String,
    pub key: String,
    pub display_name: String,
    pub email: String,
}

#[derive(Debug)]
struct StubState {
    base: String,
    /// PAT -> user.
    users: Mutex<HashMap<String, StubUser>>,
    requests: Mutex<Vec<Recorded>>,
    /// Issue key -> comments, oldest first.
    comments: Mutex<HashMap<String, Vec<StubComment>>>,
    next_comment_id: Mutex<u64>,
    /// Confluence pages, in creation order.
    pages: Mutex<Vec<StubPage>>,
    next_page_id: Mutex<u64>,
    /// While true, every Atlassian route answers 503.
    outage: Mutex<bool>,
    /// While set, writes answer this status and write nothing.
    write_status: Mutex<Option<u16>>,
}

#[derive(Debug, Clone)]
pub struct StubAtlassian {
    /// Base URL for both `JIRA_URL` and `CONFLUENCE_URL`, e.g. `http://127.0.0.1:40000`.
    pub base: String,
    state: Arc<StubState>,
}

impl StubAtlassian {
    /// Starts the stub on a free loopback port with Alice and Bob.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts the stub on this address (`127.0.0.1:0` for any free port).
    pub async fn start_on(addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let users = HashMap::from([
            ("alice-pat".to_owned(), user("alice", "JIRAUSER10100", "Alice Example")),
            ("bob-pat".to_owned(), user("bob", "JIRAUSER10101", "Bob Example")),
        ]);
        let state = Arc::new(StubState {
            base: base.clone(),
            users: Mutex::new(users),
            requests: Mutex::default(),
            comments: Mutex::new(seed_comments()),
            next_comment_id: Mutex::new(10230),
            pages: Mutex::new(seed_pages()),
            next_page_id: Mutex::new(98400),
            outage: Mutex::new(false),
            write_status: Mutex::new(None),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, state }
    }

    /// Adds (or replaces) a user known by this PAT.
    pub fn add_user(&self, pat: &str, name: &str, display_name: &str) {
        let key = format!("JIRAUSER{}", 10200 + self.state.users.lock().unwrap().len());
        self.state.users.lock().unwrap().insert(pat.to_owned(), user(name, &key, display_name));
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Requests other than GET/HEAD (comment posts, page creates and updates), including those
    /// answered with an error (an outage, a refused write: see [`Recorded::status`]).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method != "GET" && r.method != "HEAD").collect()
    }

    /// Requests no route matched (each was answered 404 and logged as `UNKNOWN ROUTE`).
    pub fn unknown(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| !r.known).collect()
    }

    /// Requests whose path is exactly this one.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// The distinct `Authorization` headers seen, in order of first appearance.
    pub fn authorizations(&self) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for auth in self.requests().into_iter().filter_map(|r| r.authorization) {
            if !seen.contains(&auth) {
                seen.push(auth);
            }
        }
        seen
    }

    /// The comments of an issue, oldest first (seeded ones plus any posted).
    pub fn comments(&self, key: &str) -> Vec<StubComment> {
        self.state.comments.lock().unwrap().get(key).cloned().unwrap_or_default()
    }

    /// Forgets the recorded requests (not the comments or pages).
    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Every Confluence page, seeded ones first, then in creation order.
    pub fn all_pages(&self) -> Vec<StubPage> {
        self.state.pages.lock().unwrap().clone()
    }

    /// The pages of this space with this exact title (Confluence allows one; a list so a
    /// test can assert there is exactly one).
    pub fn pages_titled(&self, space: &str, title: &str) -> Vec<StubPage> {
        self.all_pages().into_iter().filter(|p| p.space == space && p.title == title).collect()
    }

    /// The page with this id, if there is one.
    pub fn page(&self, id: &str) -> Option<StubPage> {
        self.all_pages().into_iter().find(|p| p.id == id)
    }

    /// While on, every Atlassian route answers `503 Service Unavailable` (recorded as usual).
    pub fn set_outage(&self, on: bool) {
        *self.state.outage.lock().unwrap() = on;
    }

    /// While `Some(status)`, the writes (add comment, create page, update page) answer that
    /// status with an Atlassian-shaped error body and write nothing; `None` lets them through.
    pub fn set_write_status(&self, status: Option<u16>) {
        *self.state.write_status.lock().unwrap() = status;
    }
}

fn user(name: &str, key: &str, display_name: &str) -> StubUser {
    StubUser {
        name: name.to_owned(),
        key: key.to_owned(),
        display_name: display_name.to_owned(),
        email: format!("{name}@example.com"),
    }
}

// ---------------------------------------------------------------------------------------
// Routing

#[derive(Debug)]
enum Route {
    JiraMyself,
    JiraServerInfo,
    JiraFields,
    JiraIssue(String),
    JiraComments(String),
    JiraAddComment(String),
    JiraSearch,
    JiraUser,
    ConfluenceCurrentUser,
    ConfluenceContent(String),
    ConfluenceContentList,
    ConfluenceCreate,
    ConfluenceUpdate(String),
    ConfluenceHistory(String),
    ConfluenceProperties(String),
    ConfluenceSearch,
    /// Introspection for out-of-process users: not Atlassian, not recorded, no auth.
    StubRequests,
    StubComments(String),
    StubPages,
}

impl Route {
    /// The routes that change something (and that [`StubAtlassian::set_write_status`] refuses).
    fn writes(&self) -> bool {
        matches!(self, Route::JiraAddComment(_) | Route::ConfluenceCreate | Route::ConfluenceUpdate(_))
    }
}

fn route(method: &Method, path: &str) -> Option<Route> {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let put = method == Method::PUT;
    match segments.as_slice() {
        ["rest", "api", "2", "myself"] if get => Some(Route::JiraMyself),
        ["rest", "api", "2", "serverInfo"] if get => Some(Route::JiraServerInfo),
        ["rest", "api", "2", "field"] if get => Some(Route::JiraFields),
        ["rest", "api", "2", "user"] if get => Some(Route::JiraUser),
        ["rest", "api", "2", "search"] if get || post => Some(Route::JiraSearch),
        ["rest", "api", "2", "issue", key] if get => Some(Route::JiraIssue((*key).to_owned())),
        ["rest", "api", "2", "issue", key, "comment"] if get => Some(Route::JiraComments((*key).to_owned())),
        ["rest", "api", "2", "issue", key, "comment"] if post => Some(Route::JiraAddComment((*key).to_owned())),
        ["rest", "api", "user", "current"] if get => Some(Route::ConfluenceCurrentUser),
        ["rest", "api", "content"] if get => Some(Route::ConfluenceContentList),
        ["rest", "api", "content"] if post => Some(Route::ConfluenceCreate),
        ["rest", "api", "content", id] if get && *id != "search" => Some(Route::ConfluenceContent((*id).to_owned())),
        ["rest", "api", "content", id] if put && *id != "search" => Some(Route::ConfluenceUpdate((*id).to_owned())),
        ["rest", "api", "content", id, "history"] if get => Some(Route::ConfluenceHistory((*id).to_owned())),
        ["rest", "api", "content", id, "property"] if get => Some(Route::ConfluenceProperties((*id).to_owned())),
        ["rest", "api", "search"] | ["rest", "api", "content", "search"] if get => Some(Route::ConfluenceSearch),
        ["__stub", "requests"] if get => Some(Route::StubRequests),
        ["__stub", "comments", key] if get => Some(Route::StubComments((*key).to_owned())),
        ["__stub", "pages"] if get => Some(Route::StubPages),
        _ => None,
    }
}

fn is_confluence(path: &str) -> bool {
    !path.starts_with("/rest/api/2/")
}

async fn handle(
    State(state): State<Arc<StubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    match route(&method, &path) {
        Some(Route::StubRequests) => {
            let list: Vec<Value> = state.requests.lock().unwrap().iter().map(Recorded::to_json).collect();
            return axum::Json(list).into_response();
        }
        Some(Route::StubComments(key)) => {
            let comments = state.comments.lock().unwrap().get(&key).cloned().unwrap_or_default();
            let list: Vec<Value> = comments
                .iter()
                .map(|c| json!({"id": c.id, "author": c.author, "body": c.body, "created": c.created}))
                .collect();
            return axum::Json(list).into_response();
        }
        Some(Route::StubPages) => {
            let pages = state.pages.lock().unwrap().clone();
            let list: Vec<Value> = pages
                .iter()
                .map(|p| {
                    json!({"id": p.id, "space": p.space, "title": p.title, "body": p.body, "version": p.version,
                        "author": p.author, "updated_by": p.updated_by, "when": p.when, "created": p.created, "parent_id": p.parent_id})
                })
                .collect();
            return axum::Json(list).into_response();
        }
        _ => {}
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = String::from_utf8_lossy(&body).into_owned();
    let user = authorization.as_deref().and_then(|a| authenticate(&state, a));
    let route = route(&method, &path);

    let outage = *state.outage.lock().unwrap();
    let write_status = *state.write_status.lock().unwrap();

    let response = match (&route, &user) {
        (None, _) => {
            eprintln!(
                "stub_atlassian: UNKNOWN ROUTE {method} {path}{}{query} (answering {})",
                if query.is_empty() { "" } else { "?" },
                if outage { "503, outage" } else { "404" }
            );
            if outage {
                service_unavailable()
            } else {
                let body = json!({"errorMessages": [format!("stub_atlassian has no route for {method} {path}")], "errors": {}});
                (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
            }
        }
        _ if outage => service_unavailable(),
        (Some(_), None) => unauthorized(&path),
        (Some(route), Some(_)) if route.writes() && write_status.is_some() => {
            refused_write(&path, write_status.unwrap_or(403))
        }
        (Some(route), Some(user)) => {
            let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            answer(&state, route, user, &params, &body)
        }
    };
    state.requests.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path,
        query,
        authorization,
        user: user.map(|u| u.name),
        body,
        status: response.status().as_u16(),
        known: route.is_some(),
    });
    response
}

/// `Bearer <pat>` (how mcp-atlassian sends a PAT), or `Basic` with a known PAT as password.
fn authenticate(state: &StubState, header: &str) -> Option<StubUser> {
    let users = state.users.lock().unwrap();
    let (scheme, credential) = header.split_once(' ')?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => users.get(credential.trim()).cloned(),
        "basic" => {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD.decode(credential.trim()).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (name, pat) = decoded.split_once(':')?;
            users.get(pat).filter(|u| u.name == name || u.email == name).cloned()
        }
        _ => None,
    }
}

fn unauthorized(path: &str) -> Response {
    if is_confluence(path) {
        let body = json!({"statusCode": 401, "data": {"authorized": false, "valid": true, "errors": [], "successful": false},
            "message": "This request requires authentication", "reason": "Unauthorized"});
        (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
    } else {
        let body = json!({"errorMessages": ["You are not authenticated. Authentication required to perform this operation."], "errors": {}});
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        response.headers_mut().insert("www-authenticate", "OAuth realm=\"stub-atlassian\"".parse().unwrap());
        response
    }
}

/// What a proxy in front of a down Jira/Confluence answers: 503 with an HTML page.
fn service_unavailable() -> Response {
    let page = "<html><head><title>503 Service Unavailable</title></head><body><h1>Service Unavailable</h1>\
<p>The server is temporarily unable to service your request. Please try again later.</p></body></html>";
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, page).into_response();
    response.headers_mut().insert("content-type", "text/html; charset=iso-8859-1".parse().unwrap());
    response.headers_mut().insert("retry-after", "5".parse().unwrap());
    response
}

/// A write refused with `status` (403 by default), shaped like Jira's or Confluence's errors.
fn refused_write(path: &str, status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let reason = code.canonical_reason().unwrap_or("Error");
    if is_confluence(path) {
        let message = if code == StatusCode::FORBIDDEN {
            "User not permitted to create or edit content in this space".to_owned()
        } else {
            format!("{status} {reason}")
        };
        confluence_error(code, &message)
    } else {
        let message = if code == StatusCode::FORBIDDEN {
            "You do not have the permission to comment on this issue.".to_owned()
        } else {
            format!("{status} {reason}")
        };
        (code, axum::Json(json!({"errorMessages": [message], "errors": {}}))).into_response()
    }
}

/// Confluence's error body.
fn confluence_error(code: StatusCode, message: &str) -> Response {
    let body = json!({"statusCode": code.as_u16(),
        "data": {"authorized": code != StatusCode::FORBIDDEN, "valid": true, "errors": [], "successful": false},
        "message": message, "reason": code.canonical_reason().unwrap_or("Error")});
    (code, axum::Json(body)).into_response()
}

fn not_found_content(id: &str) -> Response {
    confluence_error(StatusCode::NOT_FOUND, &format!("No content found with id: ContentId{{id={id}}}"))
}

fn not_found_issue(key: &str) -> Response {
    let body = json!({"errorMessages": ["Issue Does Not Exist"], "errors": {}});
    eprintln!("stub_atlassian: issue {key} does not exist (404)");
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn answer(state: &StubState, route: &Route, me: &StubUser, params: &HashMap<String, String>, body: &str) -> Response {
    let base = &state.base;
    match route {
        Route::JiraMyself => {
            let mut u = jira_user(base, me);
            u["locale"] = json!("en_GB");
            u["groups"] = json!({"size": 2, "items": []});
            u["applicationRoles"] = json!({"size": 1, "items": []});
            u["expand"] = json!("groups,applicationRoles");
            axum::Json(u).into_response()
        }
        Route::JiraServerInfo => axum::Json(json!({
            "baseUrl": base, "version": "9.12.4", "versionNumbers": [9, 12, 4], "deploymentType": "Server",
            "buildNumber": 9_120_004, "buildDate": "2024-02-06T00:00:00.000+0000", "serverTitle": "Stub Jira"
        }))
        .into_response(),
        Route::JiraFields => axum::Json(fields()).into_response(),
        Route::JiraUser => {
            let wanted = params.get("username").or_else(|| params.get("key")).cloned().unwrap_or_default();
            let found = state.users.lock().unwrap().values().find(|u| u.name == wanted || u.key == wanted).cloned();
            match found {
                Some(u) => axum::Json(jira_user(base, &u)).into_response(),
                None => (
                    StatusCode::NOT_FOUND,
                    axum::Json(
                        json!({"errorMessages": [format!("The user named '{wanted}' does not exist")], "errors": {}}),
                    ),
                )
                    .into_response(),
            }
        }
        Route::JiraIssue(key) => {
            let key = key.to_ascii_uppercase();
            match issue_json(state, &key) {
                Some(issue) => {
                    axum::Json(select_fields(issue, params.get("fields").map(String::as_str))).into_response()
                }
                None => not_found_issue(&key),
            }
        }
        Route::JiraComments(key) => {
            let key = key.to_ascii_uppercase();
            if issue_json(state, &key).is_none() {
                return not_found_issue(&key);
            }
            axum::Json(comment_page(state, &key)).into_response()
        }
        Route::JiraAddComment(key) => {
            let key = key.to_ascii_uppercase();
            if issue_json(state, &key).is_none() {
                return not_found_issue(&key);
            }
            let posted: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let Some(text) = posted["body"].as_str().filter(|t| !t.trim().is_empty()) else {
                let error = json!({"errorMessages": [], "errors": {"comment": "Comment body can not be empty!"}});
                return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
            };
            let id = {
                let mut next = state.next_comment_id.lock().unwrap();
                *next += 1;
                next.to_string()
            };
            let comment = StubComment {
                id,
                author: me.name.clone(),
                body: text.to_owned(),
                created: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
            };
            state.comments.lock().unwrap().entry(key.clone()).or_default().push(comment.clone());
            (StatusCode::CREATED, axum::Json(comment_json(state, &key, &comment))).into_response()
        }
        Route::JiraSearch => {
            // GET carries jql/startAt/maxResults/fields as query parameters, POST as JSON.
            let posted: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let get = |name: &str| -> Option<String> {
                params.get(name).cloned().or_else(|| match &posted[name] {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
                    _ => None,
                })
            };
            let jql = get("jql").unwrap_or_default();
            let start: usize = get("startAt").and_then(|s| s.parse().ok()).unwrap_or(0);
            let max: usize = get("maxResults").and_then(|s| s.parse().ok()).unwrap_or(50);
            let fields = get("fields");
            let matching: Vec<Value> = ISSUE_KEYS
                .iter()
                .filter_map(|key| issue_json(state, key))
                .filter(|issue| jql_matches(&jql, issue, me))
                .collect();
            let total = matching.len();
            let issues: Vec<Value> = matching
                .into_iter()
                .skip(start)
                .take(max)
                .map(|issue| select_fields(issue, fields.as_deref()))
                .collect();
            axum::Json(json!({"expand": "schema,names", "startAt": start, "maxResults": max, "total": total, "issues": issues}))
                .into_response()
        }
        Route::ConfluenceCurrentUser => axum::Json(confluence_user(base, me)).into_response(),
        Route::ConfluenceContent(id) => match find_page(state, id) {
            Some(page) => axum::Json(page_json(state, &page, params.get("expand").map(String::as_str))).into_response(),
            None => not_found_content(id),
        },
        // `get_page_by_title`: `?spaceKey=&title=&type=page&expand=`.
        Route::ConfluenceContentList => {
            let start: usize = params.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
            let limit: usize = params.get("limit").and_then(|s| s.parse().ok()).unwrap_or(25);
            let space = params.get("spaceKey");
            let title = params.get("title");
            let kind = params.get("type").map_or("page", String::as_str);
            let pages = state.pages.lock().unwrap().clone();
            let matching: Vec<&StubPage> = pages
                .iter()
                .filter(|_| kind == "page")
                .filter(|p| space.is_none_or(|s| p.space.eq_ignore_ascii_case(s)))
                .filter(|p| title.is_none_or(|t| p.title.eq_ignore_ascii_case(t.trim())))
                .collect();
            let expand = params.get("expand").map(String::as_str);
            let results: Vec<Value> =
                matching.iter().skip(start).take(limit).map(|p| page_json(state, p, expand)).collect();
            axum::Json(json!({"results": results, "start": start, "limit": limit, "size": results.len(),
                "_links": {"base": base, "context": "", "self": format!("{base}/rest/api/content")}}))
            .into_response()
        }
        Route::ConfluenceCreate => create_page(state, me, body),
        Route::ConfluenceUpdate(id) => update_page(state, me, id, body),
        Route::ConfluenceHistory(id) => match find_page(state, id) {
            Some(page) => axum::Json(history_json(state, &page)).into_response(),
            None => not_found_content(id),
        },
        // mcp-atlassian asks for content properties (page appearance/emoji); the pages have none.
        Route::ConfluenceProperties(id) => {
            if find_page(state, id).is_none() {
                return not_found_content(id);
            }
            axum::Json(json!({"results": [], "start": 0, "limit": 10, "size": 0,
                "_links": {"base": base, "context": "", "self": format!("{base}/rest/api/content/{id}/property")}}))
            .into_response()
        }
        Route::StubRequests | Route::StubComments(_) | Route::StubPages => StatusCode::NOT_FOUND.into_response(), // answered in handle()
        Route::ConfluenceSearch => {
            let cql = params.get("cql").cloned().unwrap_or_default();
            let start: usize = params.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
            let limit: usize = params.get("limit").and_then(|s| s.parse().ok()).unwrap_or(25);
            let pages = state.pages.lock().unwrap().clone();
            let matching: Vec<&StubPage> = pages.iter().filter(|p| cql_matches(&cql, p)).collect();
            let total = matching.len();
            let results: Vec<Value> =
                matching.iter().skip(start).take(limit).map(|p| search_result(state, p)).collect();
            axum::Json(json!({
                "results": results, "start": start, "limit": limit, "size": results.len(), "totalSize": total,
                "cqlQuery": cql, "searchDuration": 12,
                "_links": {"base": base, "context": ""}
            }))
            .into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Jira data

const ISSUE_KEYS: [&str; 4] = ["PAY-1", "PAY-7", "PAY-8", "PAY-9"];

fn jira_user(base: &str, u: &StubUser) -> Value {
    json!({
        "self": format!("{base}/rest/api/2/user?username={}", u.name),
        "key": u.key,
        "name": u.name,
        "emailAddress": u.email,
        "avatarUrls": {
            "48x48": format!("{base}/secure/useravatar?ownerId={}&avatarId=10122", u.name),
            "24x24": format!("{base}/secure/useravatar?size=small&ownerId={}&avatarId=10122", u.name),
            "16x16": format!("{base}/secure/useravatar?size=xsmall&ownerId={}&avatarId=10122", u.name),
            "32x32": format!("{base}/secure/useravatar?size=medium&ownerId={}&avatarId=10122", u.name)
        },
        "displayName": u.display_name,
        "active": true,
        "deleted": false,
        "timeZone": "Europe/Berlin"
    })
}

fn person(base: &str, name: &str) -> Value {
    let (key, display) = match name {
        "alice" => ("JIRAUSER10100", "Alice Example"),
        "bob" => ("JIRAUSER10101", "Bob Example"),
        _ => ("JIRAUSER10102", "Carol Example"),
    };
    jira_user(base, &user(name, key, display))
}

fn status(base: &str, name: &str) -> Value {
    let (id, category) = match name {
        "Open" => ("1", json!({"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"})),
        "In Progress" => ("3", json!({"id": 4, "key": "indeterminate", "colorName": "yellow", "name": "In Progress"})),
        "Blocked" => ("10001", json!({"id": 4, "key": "indeterminate", "colorName": "yellow", "name": "In Progress"})),
        _ => ("10002", json!({"id": 3, "key": "done", "colorName": "green", "name": "Done"})),
    };
    let mut category = category;
    category["self"] = json!(format!("{base}/rest/api/2/statuscategory/{}", category["id"]));
    json!({
        "self": format!("{base}/rest/api/2/status/{id}"),
        "description": "",
        "iconUrl": format!("{base}/images/icons/statuses/generic.png"),
        "name": name,
        "id": id,
        "statusCategory": category
    })
}

fn issue_type(base: &str, name: &str) -> Value {
    let id = match name {
        "Epic" => "10000",
        "Bug" => "10004",
        "Story" => "10001",
        _ => "10002",
    };
    json!({
        "self": format!("{base}/rest/api/2/issuetype/{id}"),
        "id": id,
        "description": "",
        "iconUrl": format!("{base}/secure/viewavatar?size=xsmall&avatarId=10303&avatarType=issuetype"),
        "name": name,
        "subtask": false,
        "avatarId": 10303
    })
}

fn priority(base: &str, name: &str) -> Value {
    let id = match name {
        "Highest" => "1",
        "High" => "2",
        "Medium" => "3",
        _ => "4",
    };
    json!({"self": format!("{base}/rest/api/2/priority/{id}"), "iconUrl": format!("{base}/images/icons/priorities/{}.svg", name.to_ascii_lowercase()), "name": name, "id": id})
}

fn project(base: &str) -> Value {
    json!({
        "self": format!("{base}/rest/api/2/project/10200"),
        "id": "10200",
        "key": "PAY",
        "name": "Payments",
        "projectTypeKey": "software",
        "avatarUrls": {"48x48": format!("{base}/secure/projectavatar?avatarId=10324")}
    })
}

fn issue_id(key: &str) -> String {
    let n: u32 = key.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (10300 + n).to_string()
}

/// The short form Jira puts in an issue link.
fn linked_issue(base: &str, key: &str, summary: &str, status_name: &str, prio: &str, kind: &str) -> Value {
    json!({
        "id": issue_id(key),
        "key": key,
        "self": format!("{base}/rest/api/2/issue/{}", issue_id(key)),
        "fields": {
            "summary": summary,
            "status": status(base, status_name),
            "priority": priority(base, prio),
            "issuetype": issue_type(base, kind)
        }
    })
}

fn blocks_type(base: &str) -> Value {
    json!({"id": "10000", "name": "Blocks", "inward": "is blocked by", "outward": "blocks",
        "self": format!("{base}/rest/api/2/issueLinkType/10000")})
}

fn relates_type(base: &str) -> Value {
    json!({"id": "10003", "name": "Relates", "inward": "relates to", "outward": "relates to",
        "self": format!("{base}/rest/api/2/issueLinkType/10003")})
}

const PAY7_SUMMARY: &str = "Payment retries fail";
const PAY9_SUMMARY: &str = "Upgrade payment gateway SDK to v5 (per-attempt idempotency keys)";
const PAY8_SUMMARY: &str = "Make retry backoff configurable per merchant";

/// All fields of an issue (comments from the state), before `fields=` selection.
fn issue_json(state: &StubState, key: &str) -> Option<Value> {
    let base = state.base.as_str();
    let mut fields = match key {
        "PAY-1" => json!({
            "summary": "Payments reliability Q2",
            "issuetype": issue_type(base, "Epic"),
            "status": status(base, "In Progress"),
            "priority": priority(base, "High"),
            "assignee": person(base, "carol"),
            "reporter": person(base, "carol"),
            "creator": person(base, "carol"),
            "labels": ["payments", "reliability"],
            "components": [],
            "versions": [],
            "fixVersions": [{"self": format!("{base}/rest/api/2/version/10410"), "id": "10410", "name": "2026.4", "archived": false, "released": false}],
            "created": "2026-01-12T08:30:00.000+0000",
            "updated": "2026-03-09T16:02:11.000+0000",
            "description": "Cut failed card payments in half this quarter: retries, backoff, gateway upgrade.",
            "issuelinks": [],
            "customfield_10101": "Payments reliability",
        }),
        "PAY-7" => json!({
            "summary": PAY7_SUMMARY,
            "issuetype": issue_type(base, "Bug"),
            "status": status(base, "Blocked"),
            "priority": priority(base, "High"),
            "assignee": person(base, "alice"),
            "reporter": person(base, "bob"),
            "creator": person(base, "bob"),
            "labels": ["payments", "retries", "customer-impact"],
            "components": [{"self": format!("{base}/rest/api/2/component/10500"), "id": "10500", "name": "Retry worker"}],
            "versions": [{"self": format!("{base}/rest/api/2/version/10400"), "id": "10400", "name": "2026.3", "archived": false, "released": true}],
            "fixVersions": [{"self": format!("{base}/rest/api/2/version/10410"), "id": "10410", "name": "2026.4", "archived": false, "released": false}],
            "created": "2026-03-02T09:14:07.000+0000",
            "updated": "2026-03-10T11:42:55.000+0000",
            "description": "Since release 2026.3, automatic retries of soft-declined card payments fail: the gateway \
        answers {{409 Conflict: duplicate idempotency key}} and the payment stays *failed*. About 3% of card \
        payments are affected (~1,200 a day).\n\nh3. Steps to reproduce\n# Pay with test card 4000 0000 0000 0119 \
        (soft decline)\n# Wait for the retry worker (runs every 5 minutes)\n# The retry is rejected with 409\n\nh3. \
        Cause\nThe retry worker reuses the idempotency key of the first attempt. Gateway SDK v4 sends one key per \
        payment, so a retry looks like a duplicate.\n\nh3. Blocked by\nPAY-9 (upgrade the gateway SDK to v5, which \
        supports a fresh idempotency key per attempt). Nothing can be fixed here until PAY-9 is done.",
            "issuelinks": [
                {"id": "10601", "self": format!("{base}/rest/api/2/issueLink/10601"), "type": blocks_type(base),
                 "inwardIssue": linked_issue(base, "PAY-9", PAY9_SUMMARY, "Open", "Highest", "Task")},
                {"id": "10602", "self": format!("{base}/rest/api/2/issueLink/10602"), "type": relates_type(base),
                 "outwardIssue": linked_issue(base, "PAY-8", PAY8_SUMMARY, "Done", "Medium", "Story")}
            ],
            "customfield_10100": "PAY-1",
            "customfield_10106": 5.0,
        }),
        "PAY-8" => json!({
            "summary": PAY8_SUMMARY,
            "issuetype": issue_type(base, "Story"),
            "status": status(base, "Done"),
            "priority": priority(base, "Medium"),
            "assignee": person(base, "alice"),
            "reporter": person(base, "carol"),
            "creator": person(base, "carol"),
            "labels": ["payments", "retries"],
            "components": [{"self": format!("{base}/rest/api/2/component/10500"), "id": "10500", "name": "Retry worker"}],
            "versions": [],
            "fixVersions": [{"self": format!("{base}/rest/api/2/version/10400"), "id": "10400", "name": "2026.3", "archived": false, "released": true}],
            "created": "2026-02-03T10:00:00.000+0000",
            "updated": "2026-02-27T15:20:41.000+0000",
            "resolution": {"self": format!("{base}/rest/api/2/resolution/10000"), "id": "10000", "name": "Done", "description": ""},
            "resolutiondate": "2026-02-27T15:20:41.000+0000",
            "description": "Merchants want their own retry schedule. Backoff is now read from the merchant settings (default 5, 30, 120 minutes).",
            "issuelinks": [
                {"id": "10602", "self": format!("{base}/rest/api/2/issueLink/10602"), "type": relates_type(base),
                 "inwardIssue": linked_issue(base, "PAY-7", PAY7_SUMMARY, "Blocked", "High", "Bug")}
            ],
            "customfield_10100": "PAY-1",
            "customfield_10106": 3.0,
        }),
        "PAY-9" => json!({
            "summary": PAY9_SUMMARY,
            "issuetype": issue_type(base, "Task"),
            "status": status(base, "Open"),
            "priority": priority(base, "Highest"),
            "assignee": person(base, "bob"),
            "reporter": person(base, "alice"),
            "creator": person(base, "alice"),
            "labels": ["payments", "dependency"],
            "components": [{"self": format!("{base}/rest/api/2/component/10501"), "id": "10501", "name": "Gateway"}],
            "versions": [],
            "fixVersions": [{"self": format!("{base}/rest/api/2/version/10410"), "id": "10410", "name": "2026.4", "archived": false, "released": false}],
            "created": "2026-03-03T13:05:12.000+0000",
            "updated": "2026-03-10T09:15:30.000+0000",
            "duedate": "2026-04-10",
            "description": "Gateway SDK v5 sends a fresh idempotency key per attempt. Waiting for the vendor's v5.0 \
        release (announced for 2026-04-03), then upgrade, run the contract tests and roll out behind the \
        {{gateway.sdk.v5}} flag.",
            "issuelinks": [
                {"id": "10601", "self": format!("{base}/rest/api/2/issueLink/10601"), "type": blocks_type(base),
                 "outwardIssue": linked_issue(base, "PAY-7", PAY7_SUMMARY, "Blocked", "High", "Bug")}
            ],
            "customfield_10100": "PAY-1",
        }),
        _ => return None,
    };
    let id = issue_id(key);
    fields["project"] = project(base);
    fields["watches"] =
        json!({"self": format!("{base}/rest/api/2/issue/{key}/watchers"), "watchCount": 2, "isWatching": false});
    fields["subtasks"] = json!([]);
    fields["attachment"] = json!([]);
    for optional in
        ["resolution", "resolutiondate", "duedate", "customfield_10100", "customfield_10101", "customfield_10106"]
    {
        if fields.get(optional).is_none() {
            fields[optional] = Value::Null;
        }
    }
    fields["comment"] = comment_page(state, key);
    Some(json!({
        "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
        "id": id,
        "self": format!("{base}/rest/api/2/issue/{id}"),
        "key": key,
        "fields": fields
    }))
}

/// Keeps only the fields asked for with `fields=` (`*all`/`*navigable` or none: all of them).
fn select_fields(mut issue: Value, wanted: Option<&str>) -> Value {
    let wanted: Vec<&str> = wanted.unwrap_or("").split(',').map(str::trim).filter(|f| !f.is_empty()).collect();
    let all = wanted.is_empty() || wanted.iter().any(|f| *f == "*all" || *f == "*navigable");
    if let Some(fields) = issue["fields"].as_object_mut() {
        if all {
            for excluded in wanted.iter().filter_map(|f| f.strip_prefix('-')) {
                fields.remove(excluded);
            }
        } else {
            fields.retain(|name, _| wanted.contains(&name.as_str()));
        }
    }
    issue
}

fn seed_comments() -> HashMap<String, Vec<StubComment>> {
    let c = |id: &str, author: &str, created: &str, body: &str| StubComment {
        id: id.to_owned(),
        author: author.to_owned(),
        body: body.to_owned(),
        created: created.to_owned(),
    };
    HashMap::from([
        (
            "PAY-7".to_owned(),
            vec![
                c(
                    "10201",
                    "bob",
                    "2026-03-02T10:02:44.000+0000",
                    "Seen in production since the 2026.3 rollout; support has 40+ tickets. Logs show {{409 duplicate idempotency key}} on every retry.",
                ),
                c(
                    "10215",
                    "alice",
                    "2026-03-04T14:31:09.000+0000",
                    "Root cause found: the retry worker has to send a new idempotency key per attempt, and SDK v4 cannot. \
I linked PAY-9 (SDK v5 upgrade) as blocking this. I'll finish the worker change once PAY-9 is done.",
                ),
                c(
                    "10227",
                    "bob",
                    "2026-03-10T11:42:55.000+0000",
                    "Vendor confirmed SDK v5.0 for 2026-04-03. PAY-9 is planned right after, so PAY-7 should be unblocked in the week of 2026-04-06.",
                ),
            ],
        ),
        (
            "PAY-9".to_owned(),
            vec![c("10220", "bob", "2026-03-05T09:12:00.000+0000", "Asked the vendor for a release date of v5.0.")],
        ),
    ])
}

fn comment_json(state: &StubState, key: &str, c: &StubComment) -> Value {
    let base = state.base.as_str();
    let author = state
        .users
        .lock()
        .unwrap()
        .values()
        .find(|u| u.name == c.author)
        .map(|u| jira_user(base, u))
        .unwrap_or_else(|| person(base, &c.author));
    json!({
        "self": format!("{base}/rest/api/2/issue/{}/comment/{}", issue_id(key), c.id),
        "id": c.id,
        "author": author,
        "body": c.body,
        "updateAuthor": author,
        "created": c.created,
        "updated": c.created
    })
}

fn comment_page(state: &StubState, key: &str) -> Value {
    let comments = state.comments.lock().unwrap().get(key).cloned().unwrap_or_default();
    let list: Vec<Value> = comments.iter().map(|c| comment_json(state, key, c)).collect();
    json!({"comments": list, "maxResults": comments.len(), "total": comments.len(), "startAt": 0})
}

fn fields() -> Value {
    let system = |id: &str, name: &str, kind: &str| {
        json!({"id": id, "name": name, "custom": false, "orderable": true, "navigable": true, "searchable": true,
            "clauseNames": [id], "schema": {"type": kind, "system": id}})
    };
    let custom = |n: u32, name: &str, kind: &str, plugin: &str| {
        json!({"id": format!("customfield_{n}"), "name": name, "custom": true, "orderable": true, "navigable": true,
            "searchable": true, "clauseNames": [format!("cf[{n}]"), name],
            "schema": {"type": kind, "custom": plugin, "customId": n}})
    };
    json!([
        system("summary", "Summary", "string"),
        system("description", "Description", "string"),
        system("issuetype", "Issue Type", "issuetype"),
        system("status", "Status", "status"),
        system("priority", "Priority", "priority"),
        system("assignee", "Assignee", "user"),
        system("reporter", "Reporter", "user"),
        system("creator", "Creator", "user"),
        system("labels", "Labels", "array"),
        system("components", "Component/s", "array"),
        system("versions", "Affects Version/s", "array"),
        system("fixVersions", "Fix Version/s", "array"),
        system("created", "Created", "datetime"),
        system("updated", "Updated", "datetime"),
        system("duedate", "Due Date", "date"),
        system("resolution", "Resolution", "resolution"),
        system("resolutiondate", "Resolved", "datetime"),
        system("project", "Project", "project"),
        system("issuelinks", "Linked Issues", "array"),
        system("comment", "Comment", "comments-page"),
        system("subtasks", "Sub-Tasks", "array"),
        system("attachment", "Attachment", "array"),
        system("watches", "Watchers", "watches"),
        custom(10100, "Epic Link", "any", "com.pyxis.greenhopper.jira:gh-epic-link"),
        custom(10101, "Epic Name", "string", "com.pyxis.greenhopper.jira:gh-epic-label"),
        custom(10102, "Epic Status", "option", "com.pyxis.greenhopper.jira:gh-epic-status"),
        custom(10104, "Sprint", "array", "com.pyxis.greenhopper.jira:gh-sprint"),
        custom(10106, "Story Points", "number", "com.atlassian.jira.plugin.system.customfieldtypes:float"),
    ])
}

// ---------------------------------------------------------------------------------------
// A little JQL: `OR` of `AND`s of `field op value`, `ORDER BY` ignored. Clauses the stub
// does not understand are logged and match everything.

fn jql_matches(jql: &str, issue: &Value, me: &StubUser) -> bool {
    let lower = jql.to_ascii_lowercase();
    let cut = lower.find("order by").unwrap_or(jql.len());
    let jql = jql[..cut].trim();
    if jql.is_empty() {
        return true;
    }
    split_words(jql, "or")
        .iter()
        .any(|group| split_words(group, "and").iter().all(|clause| clause_matches(clause, issue, me)))
}

/// Splits on a keyword outside quotes, case-insensitively, dropping parentheses.
fn split_words(text: &str, word: &str) -> Vec<String> {
    let cleaned: String = text.chars().filter(|c| *c != '(' && *c != ')').collect();
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let tokens: Vec<&str> = cleaned.split(' ').collect();
    for token in tokens {
        if token.matches('"').count() % 2 == 1 {
            quoted = !quoted;
        }
        if !quoted && token.eq_ignore_ascii_case(word) {
            parts.push(std::mem::take(&mut current));
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(token);
        }
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect()
}

fn unquote(v: &str) -> String {
    v.trim().trim_matches('"').trim_matches('\'').to_owned()
}

fn clause_matches(clause: &str, issue: &Value, me: &StubUser) -> bool {
    let ops = ["!=", "!~", ">=", "<=", "=", "~", " not in ", " in ", " is not ", " is ", ">", "<"];
    let lower = clause.to_ascii_lowercase();
    let Some((pos, op)) = ops.iter().filter_map(|op| lower.find(op).map(|p| (p, *op))).min_by_key(|(p, _)| *p) else {
        eprintln!("stub_atlassian: JQL clause not understood, matching all: {clause}");
        return true;
    };
    let field = unquote(&clause[..pos]).to_ascii_lowercase();
    let value = clause[pos + op.len()..].trim();
    let values: Vec<String> =
        if op.trim().ends_with("in") { value.split(',').map(unquote).collect() } else { vec![unquote(value)] };
    let f = &issue["fields"];
    let actual: Vec<String> = match field.as_str() {
        "project" => vec!["PAY".into(), "Payments".into(), "10200".into()],
        "key" | "issue" | "issuekey" | "id" => vec![issue["key"].as_str().unwrap_or("").to_owned()],
        "status" => vec![f["status"]["name"].as_str().unwrap_or("").to_owned()],
        "statuscategory" => vec![f["status"]["statusCategory"]["name"].as_str().unwrap_or("").to_owned()],
        "issuetype" | "type" => vec![f["issuetype"]["name"].as_str().unwrap_or("").to_owned()],
        "priority" => vec![f["priority"]["name"].as_str().unwrap_or("").to_owned()],
        "assignee" => vec![f["assignee"]["name"].as_str().unwrap_or("").to_owned()],
        "reporter" => vec![f["reporter"]["name"].as_str().unwrap_or("").to_owned()],
        "labels" => f["labels"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect(),
        "component" => f["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .map(str::to_owned)
            .collect(),
        "fixversion" => f["fixVersions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .map(str::to_owned)
            .collect(),
        "epic link" | "cf[10100]" | "parent" | "parentepic" => {
            let key = issue["key"].as_str().unwrap_or("").to_owned();
            let epic = f["customfield_10100"].as_str().unwrap_or("").to_owned();
            if field == "parentepic" { vec![epic, key] } else { vec![epic] }
        }
        "text" | "summary" | "description" | "comment" => {
            let haystack = match field.as_str() {
                "summary" => f["summary"].as_str().unwrap_or("").to_owned(),
                "description" => f["description"].as_str().unwrap_or("").to_owned(),
                "comment" => f["comment"]["comments"].to_string(),
                _ => format!("{} {} {}", f["summary"], f["description"], f["comment"]["comments"]),
            };
            let haystack = haystack.to_ascii_lowercase();
            let words: Vec<String> =
                values[0].to_ascii_lowercase().split_whitespace().map(|w| w.trim_matches('*').to_owned()).collect();
            let hit = words.iter().all(|w| haystack.contains(w.as_str()));
            return if op.starts_with('!') { !hit } else { hit };
        }
        "resolution" => vec![f["resolution"]["name"].as_str().unwrap_or("Unresolved").to_owned()],
        "created" | "updated" | "duedate" | "resolved" => return true, // dates: not modelled
        _ => {
            eprintln!("stub_atlassian: JQL field not modelled, matching all: {clause}");
            return true;
        }
    };
    let wanted: Vec<String> = values
        .iter()
        .map(|v| {
            let v = v.to_ascii_lowercase();
            if v == "currentuser" || v == "currentuser()" { me.name.clone() } else { v }
        })
        .map(|v| if v == "empty" || v == "null" { String::new() } else { v })
        .collect();
    let hit = actual.iter().any(|a| wanted.contains(&a.to_ascii_lowercase()))
        || (actual.is_empty() && wanted.iter().any(String::is_empty));
    match op.trim() {
        "!=" | "not in" | "is not" => !hit,
        "=" | "in" | "is" | "~" => hit,
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------
// Confluence data

/// The spaces there are: key -> name.
fn space_name(key: &str) -> Option<&'static str> {
    match key {
        "PAY" => Some("Payments"),
        _ => None,
    }
}

fn seed_pages() -> Vec<StubPage> {
    let page = |id: &str, title: &str, author: &str, version: u32, when: &str, body: &str| StubPage {
        id: id.to_owned(),
        space: "PAY".to_owned(),
        title: title.to_owned(),
        body: body.to_owned(),
        version,
        author: author.to_owned(),
        updated_by: author.to_owned(),
        when: when.to_owned(),
        created: "2026-01-20T10:00:00.000Z".to_owned(),
        parent_id: None,
    };
    vec![
        page(
            "98305",
            "Payments runbook: card payment retries",
            "alice",
            7,
            "2026-03-09T17:20:00.000Z",
            "<h2>How retries work</h2><p>Soft-declined card payments are retried by the retry worker \
at 5, 30 and 120 minutes (per merchant, see PAY-8).</p><h2>Known problem</h2><p>Since 2026.3 every retry \
fails with <code>409 duplicate idempotency key</code> (PAY-7). The fix needs gateway SDK v5 (PAY-9). Until \
then, support re-runs failed payments by hand from the admin console.</p>",
        ),
        page(
            "98306",
            "Gateway SDK v5 migration plan",
            "bob",
            3,
            "2026-03-10T08:45:00.000Z",
            "<p>Vendor release of SDK v5.0: 2026-04-03. Steps: upgrade (PAY-9), contract tests, roll out \
behind <code>gateway.sdk.v5</code>, then the retry worker change (PAY-7).</p>",
        ),
    ]
}

fn find_page(state: &StubState, id: &str) -> Option<StubPage> {
    state.pages.lock().unwrap().iter().find(|p| p.id == id).cloned()
}

fn now_confluence() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn confluence_user(base: &str, u: &StubUser) -> Value {
    json!({
        "type": "known",
        "username": u.name,
        "userKey": format!("8a7f80836f0c0a7d016f0c{}", u.key.trim_start_matches("JIRAUSER")),
        "profilePicture": {"path": "/images/icons/profilepics/default.svg", "width": 48, "height": 48, "isDefault": true},
        "displayName": u.display_name,
        "_links": {"base": base, "context": "", "self": format!("{base}/rest/api/user?key={}", u.key)},
        "_expandable": {"status": ""}
    })
}

/// A user by name: one the stub knows by token, else a seeded person.
fn confluence_person(state: &StubState, name: &str) -> Value {
    let known = state.users.lock().unwrap().values().find(|u| u.name == name).cloned();
    confluence_user(&state.base, &known.unwrap_or_else(|| person_user(name)))
}

fn webui(p: &StubPage) -> String {
    let title: String = url::form_urlencoded::byte_serialize(p.title.as_bytes()).collect();
    format!("/display/{}/{title}", p.space)
}

fn space_json(base: &str, key: &str) -> Value {
    json!({"id": 131_073, "key": key, "name": space_name(key).unwrap_or(key), "type": "global",
        "_links": {"webui": format!("/display/{key}"), "self": format!("{base}/rest/api/space/{key}")}})
}

/// The page's parents, the root first, as Confluence lists `ancestors`.
fn ancestors(state: &StubState, p: &StubPage) -> Vec<Value> {
    let base = &state.base;
    let pages = state.pages.lock().unwrap().clone();
    let mut chain = Vec::new();
    let mut parent = p.parent_id.clone();
    while let Some(id) = parent {
        let Some(up) = pages.iter().find(|q| q.id == id) else { break };
        if chain.len() > pages.len() {
            break;
        }
        chain.push(json!({"id": up.id, "type": "page", "status": "current", "title": up.title,
            "_links": {"webui": webui(up), "self": format!("{base}/rest/api/content/{}", up.id)}}));
        parent = up.parent_id.clone();
    }
    chain.reverse();
    chain
}

fn page_json(state: &StubState, p: &StubPage, expand: Option<&str>) -> Value {
    let base = state.base.as_str();
    let expand: Vec<&str> = expand.unwrap_or("").split(',').collect();
    let creator = confluence_person(state, &p.author);
    let by = confluence_person(state, &p.updated_by);
    let mut page = json!({
        "id": p.id,
        "type": "page",
        "status": "current",
        "title": p.title,
        "space": space_json(base, &p.space),
        "history": {"latest": true, "createdBy": creator, "createdDate": p.created},
        "version": {"by": by, "when": p.when, "message": "", "number": p.version, "minorEdit": false},
        "ancestors": ancestors(state, p),
        "extensions": {"position": "none"},
        "_links": {
            "webui": webui(p),
            "edit": format!("/pages/resumedraft.action?draftId={}", p.id),
            "tinyui": format!("/x/{}", p.id),
            "base": base,
            "context": "",
            "self": format!("{base}/rest/api/content/{}", p.id)
        },
        "_expandable": {"children": "", "descendants": "", "container": ""}
    });
    if expand.iter().any(|e| e.starts_with("body")) {
        page["body"] = json!({"storage": {"value": p.body, "representation": "storage"}});
        if expand.contains(&"body.view") {
            page["body"]["view"] = json!({"value": p.body, "representation": "view"});
        }
    } else {
        page["_expandable"]["body"] = json!("");
    }
    if expand.contains(&"metadata.labels") {
        page["metadata"] = json!({"labels": {"results": [{"prefix": "global", "name": "payments", "id": "4915203"}], "start": 0, "limit": 200, "size": 1}});
    }
    page
}

/// `GET /rest/api/content/{id}/history`: what `update_page` reads the version from.
fn history_json(state: &StubState, p: &StubPage) -> Value {
    let base = state.base.as_str();
    json!({
        "latest": true,
        "createdBy": confluence_person(state, &p.author),
        "createdDate": p.created,
        "lastUpdated": {"by": confluence_person(state, &p.updated_by), "when": p.when, "message": "",
                        "number": p.version, "minorEdit": false},
        "_links": {"base": base, "context": "", "self": format!("{base}/rest/api/content/{}/history", p.id)},
        "_expandable": {"previousVersion": "", "contributors": "", "nextVersion": ""}
    })
}

/// The posted body's value: `body.storage` (what mcp-atlassian sends), else `body.wiki`/`editor`.
fn posted_body(posted: &Value) -> Option<String> {
    ["storage", "wiki", "editor"].iter().find_map(|r| posted["body"][r]["value"].as_str()).map(str::to_owned)
}

/// The parent named by `ancestors` (the last one, as Confluence takes it), if any.
fn posted_parent(posted: &Value) -> Option<String> {
    let last = posted["ancestors"].as_array()?.last()?;
    match &last["id"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn duplicate_title(space: &str, title: &str) -> Response {
    eprintln!("stub_atlassian: a page titled {title:?} already exists in {space} (400)");
    confluence_error(
        StatusCode::BAD_REQUEST,
        "A page with this title already exists: A page already exists with the same TITLE in this space",
    )
}

/// What is wrong with a new parent, if anything: it must exist, be in this space, and not be
/// the page itself or below it.
fn parent_problem(pages: &[StubPage], space: &str, parent: &str, page: Option<&str>) -> Option<Response> {
    let Some(found) = pages.iter().find(|p| p.id == parent) else {
        return Some(not_found_content(parent));
    };
    if found.space != space {
        return Some(confluence_error(StatusCode::BAD_REQUEST, "The parent page must be in the same space"));
    }
    if let Some(page) = page {
        let mut up = Some(found.id.clone());
        while let Some(id) = up {
            if id == page {
                return Some(confluence_error(StatusCode::BAD_REQUEST, "A page cannot be its own ancestor"));
            }
            up = pages.iter().find(|p| p.id == id).and_then(|p| p.parent_id.clone());
        }
    }
    None
}

/// `POST /rest/api/content`: `{type, title, space: {key}, body: {storage: {value}}, ancestors?}`.
fn create_page(state: &StubState, me: &StubUser, body: &str) -> Response {
    let Ok(posted) = serde_json::from_str::<Value>(body) else {
        return confluence_error(StatusCode::BAD_REQUEST, "Could not parse the request body as JSON");
    };
    if posted["type"].as_str().is_some_and(|t| t != "page") {
        return confluence_error(StatusCode::BAD_REQUEST, "The stub creates pages only (type \"page\")");
    }
    let Some(space) = posted["space"]["key"].as_str() else {
        return confluence_error(StatusCode::BAD_REQUEST, "A space key is required to create content");
    };
    if space_name(space).is_none() {
        return confluence_error(StatusCode::NOT_FOUND, &format!("No space with key : {space}"));
    }
    let title = posted["title"].as_str().unwrap_or("").trim().to_owned();
    if title.is_empty() {
        return confluence_error(StatusCode::BAD_REQUEST, "Title cannot be empty");
    }
    let parent = posted_parent(&posted);
    let page = {
        let mut pages = state.pages.lock().unwrap();
        if pages.iter().any(|p| p.space == space && p.title.eq_ignore_ascii_case(&title)) {
            return duplicate_title(space, &title);
        }
        if let Some(parent) = &parent
            && let Some(refused) = parent_problem(&pages, space, parent, None)
        {
            return refused;
        }
        let id = {
            let mut next = state.next_page_id.lock().unwrap();
            *next += 1;
            next.to_string()
        };
        let page = StubPage {
            id,
            space: space.to_owned(),
            title,
            body: posted_body(&posted).unwrap_or_default(),
            version: 1,
            author: me.name.clone(),
            updated_by: me.name.clone(),
            when: now_confluence(),
            created: now_confluence(),
            parent_id: parent,
        };
        pages.push(page.clone());
        page
    };
    axum::Json(page_json(state, &page, Some("body.storage,version,space,history"))).into_response()
}

/// `PUT /rest/api/content/{id}`: `{id, type, title, version: {number}, body?, ancestors?}`;
/// the version must be the current one + 1, as in Confluence.
fn update_page(state: &StubState, me: &StubUser, id: &str, body: &str) -> Response {
    let Ok(posted) = serde_json::from_str::<Value>(body) else {
        return confluence_error(StatusCode::BAD_REQUEST, "Could not parse the request body as JSON");
    };
    let page = {
        let mut pages = state.pages.lock().unwrap();
        let Some(index) = pages.iter().position(|p| p.id == id) else {
            return not_found_content(id);
        };
        let current = pages[index].clone();
        let Some(number) = posted["version"]["number"].as_u64() else {
            return confluence_error(
                StatusCode::BAD_REQUEST,
                "Must supply an incremented version when updating Content. No version supplied.",
            );
        };
        if number != u64::from(current.version) + 1 {
            eprintln!("stub_atlassian: page {id} updated with version {number}, current is {} (409)", current.version);
            return confluence_error(
                StatusCode::CONFLICT,
                &format!("Version must be incremented on update. Current version is: {}", current.version),
            );
        }
        let title = posted["title"].as_str().map_or(current.title.clone(), |t| t.trim().to_owned());
        if title.is_empty() {
            return confluence_error(StatusCode::BAD_REQUEST, "Title cannot be empty");
        }
        if pages.iter().any(|p| p.id != id && p.space == current.space && p.title.eq_ignore_ascii_case(&title)) {
            return duplicate_title(&current.space, &title);
        }
        let parent = posted_parent(&posted);
        if let Some(parent) = &parent
            && let Some(refused) = parent_problem(&pages, &current.space, parent, Some(id))
        {
            return refused;
        }
        let page = &mut pages[index];
        page.title = title;
        if let Some(body) = posted_body(&posted) {
            page.body = body;
        }
        if parent.is_some() {
            page.parent_id = parent;
        }
        page.version = current.version + 1;
        page.updated_by = me.name.clone();
        page.when = now_confluence();
        page.clone()
    };
    axum::Json(page_json(state, &page, Some("body.storage,version,space,history"))).into_response()
}

fn person_user(name: &str) -> StubUser {
    match name {
        "alice" => user("alice", "JIRAUSER10100", "Alice Example"),
        "bob" => user("bob", "JIRAUSER10101", "Bob Example"),
        _ => user(name, "JIRAUSER10102", "Carol Example"),
    }
}

fn search_result(state: &StubState, p: &StubPage) -> Value {
    let excerpt: String = strip_tags(&p.body).chars().take(160).collect();
    json!({
        "content": page_json(state, p, None),
        "title": p.title,
        "excerpt": excerpt,
        "url": webui(p),
        "resultGlobalContainer": {"title": space_name(&p.space).unwrap_or(&p.space), "displayUrl": format!("/display/{}", p.space)},
        "breadcrumbs": [],
        "entityType": "content",
        "iconCssClass": "aui-icon content-type-page",
        "lastModified": p.when,
        "friendlyLastModified": "Mar 10, 2026",
        "score": 1.0
    })
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(ch),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A little CQL: `OR` of `AND`s, `ORDER BY` ignored; `type`, `space`, `id`, `parent`,
/// `title = "exact"`, `title ~ "words"` (of the title), `text`/`siteSearch ~ "words"` (of title
/// and body); `!=`/`!~` negate. Other clauses are logged and match everything.
fn cql_matches(cql: &str, p: &StubPage) -> bool {
    let lower = cql.to_ascii_lowercase();
    let cut = lower.find("order by").unwrap_or(cql.len());
    let cql = cql[..cut].trim();
    if cql.is_empty() {
        return true;
    }
    split_words(cql, "or").iter().any(|group| {
        split_words(group, "and").iter().all(|clause| {
            let lower = clause.to_ascii_lowercase();
            let Some(pos) = lower.find(['=', '~']) else { return true };
            let negated = lower[..pos].ends_with('!');
            let exact = lower[pos..].starts_with('=');
            let field = lower[..pos].trim().trim_end_matches('!').trim();
            let value = unquote(&clause[pos + 1..]).to_ascii_lowercase();
            let words = |haystack: String| {
                let haystack = haystack.to_ascii_lowercase();
                value.split_whitespace().map(|w| w.trim_matches('*')).all(|w| haystack.contains(w))
            };
            let hit = match field {
                "type" => value == "page",
                "space" | "space.key" => value == p.space.to_ascii_lowercase(),
                "id" | "content" => value == p.id,
                "parent" => p.parent_id.as_deref() == Some(value.as_str()),
                "title" if exact => value == p.title.to_ascii_lowercase(),
                "title" => words(p.title.clone()),
                "text" | "sitesearch" => words(format!("{} {}", p.title, strip_tags(&p.body))),
                _ => {
                    eprintln!("stub_atlassian: CQL clause not modelled, matching all: {clause}");
                    return true;
                }
            };
            hit != negated
        })
    })
}
