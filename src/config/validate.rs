//! Checks a parsed config set as a whole: names, ranges, and references across files.
//! Works on values only; it never reads files or the environment.

use std::collections::{BTreeMap, BTreeSet};

use http::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::interpolate::references_env;
use super::issue::{ConfigFile, ConfigIssue};
use super::model::{
    AuthSettings, Config, LocalLogin, McpAuth, PAYLOAD_PLACEHOLDERS, PromptsFile, ResponseFormat, ServiceConfig,
};
use crate::template;

/// Header names that carry credentials; their values must come from `${env:…}`.
const SECRET_HEADER_WORDS: &[&str] = &["authorization", "cookie", "token", "secret", "key", "password", "credential"];

/// Headers promptops sets itself; a config that overrides them would break requests.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

pub type HeadersFile = BTreeMap<String, BTreeMap<String, String>>;
pub type PayloadsFile = BTreeMap<String, Value>;

/// Finds credentials written inline, on the raw (not yet interpolated) document.
pub fn inline_secrets(file: ConfigFile, raw: &Value) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let inline = |value: &Value| value.as_str().is_some_and(|s| !s.is_empty() && !references_env(s));
    match file {
        ConfigFile::Header => {
            for (endpoint, headers) in raw.as_object().into_iter().flatten() {
                for (name, value) in headers.as_object().into_iter().flatten() {
                    if is_secret_header(name) && inline(value) {
                        issues.push(ConfigIssue::new(
                            file,
                            format!("{endpoint}.{name}"),
                            "credentials must not be written inline: reference an environment variable, e.g. \"Bearer ${env:LLM_API_KEY}\"",
                        ));
                    }
                }
            }
        }
        ConfigFile::Config => {
            for (server, def) in raw.get("mcp_servers").and_then(Value::as_object).into_iter().flatten() {
                if let Some(value) = def.get("auth").and_then(|a| a.get("value"))
                    && inline(value)
                {
                    issues.push(ConfigIssue::new(
                        file,
                        format!("mcp_servers.{server}.auth.value"),
                        "credentials must not be written inline: reference an environment variable with ${env:NAME}",
                    ));
                }
            }
            if let Some(secret) = raw.pointer("/auth/oidc/client_secret")
                && inline(secret)
            {
                issues.push(ConfigIssue::new(
                    file,
                    "auth.oidc.client_secret",
                    "credentials must not be written inline: reference an environment variable with ${env:NAME}",
                ));
            }
        }
        ConfigFile::Payload | ConfigFile::Prompts => {}
    }
    issues
}

/// Validates the typed files against each other and builds the [`Config`] they describe.
pub fn validate(
    service: ServiceConfig,
    headers: HeadersFile,
    payloads: PayloadsFile,
    prompts: PromptsFile,
) -> Result<Config, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    check_service(&service, &mut issues);
    let headers = check_headers(&service, headers, &mut issues);
    check_payloads(&service, &payloads, &mut issues);
    check_prompts(&service, &prompts, &mut issues);
    if issues.is_empty() { Ok(Config { service, headers, payloads, prompts }) } else { Err(issues) }
}

fn check_service(service: &ServiceConfig, issues: &mut Vec<ConfigIssue>) {
    let file = ConfigFile::Config;
    let mut issue = |path: String, message: String| issues.push(ConfigIssue::new(file, path, message));
    if service.endpoints.is_empty() {
        issue("endpoints".into(), "at least one endpoint is required".into());
    } else if !service.endpoints.contains_key(&service.default_endpoint) {
        issue(
            "default_endpoint".into(),
            format!("names endpoint {:?}, which is not defined in endpoints", service.default_endpoint),
        );
    }
    for (name, endpoint) in &service.endpoints {
        let path = format!("endpoints.{name}");
        if !crate::text::is_slug(name) {
            issue(path.clone(), crate::text::slug_message("an endpoint name"));
        }
        if let Err(message) = check_http_url(&endpoint.url) {
            issue(format!("{path}.url"), message);
        }
        let t = &endpoint.timeouts;
        for (field, value) in
            [("connect", t.connect), ("first_token", t.first_token), ("idle", t.idle), ("total", t.total)]
        {
            if value.is_zero() {
                issue(format!("{path}.timeouts.{field}"), "must be longer than zero".into());
            }
        }
        if endpoint.max_concurrency == 0 {
            issue(format!("{path}.max_concurrency"), "must be at least 1".into());
        }
        if let ResponseFormat::Custom(custom) = &endpoint.response {
            let pointers = [
                ("text", Some(&custom.text)),
                ("tool_calls", custom.tool_calls.as_ref()),
                ("finish_reason", custom.finish_reason.as_ref()),
                ("prompt_tokens", custom.prompt_tokens.as_ref()),
                ("completion_tokens", custom.completion_tokens.as_ref()),
            ];
            for (field, pointer) in pointers {
                if let Some(pointer) = pointer
                    && !pointer.is_empty()
                    && !pointer.starts_with('/')
                {
                    issue(
                        format!("{path}.response.{field}"),
                        format!("{pointer:?} is not a JSON pointer (it starts with /)"),
                    );
                }
            }
        }
        let r = &endpoint.retry;
        if r.max_attempts == 0 {
            issue(format!("{path}.retry.max_attempts"), "must be at least 1 (1 means no retries)".into());
        }
        if r.initial_backoff > r.max_backoff {
            issue(format!("{path}.retry.initial_backoff"), "must not be longer than max_backoff".into());
        }
        for (i, status) in r.on_status.iter().enumerate() {
            if !(400..=599).contains(status) {
                issue(
                    format!("{path}.retry.on_status[{i}]"),
                    format!("{status} is not an HTTP error status (400-599)"),
                );
            }
        }
    }
    if service.agent.max_steps == 0 {
        issue("agent.max_steps".into(), "must be at least 1".into());
    }
    if service.agent.approval_timeout.is_zero() {
        issue("agent.approval_timeout".into(), "must be longer than zero".into());
    }
    if service.agent.max_result_chars < 100 {
        issue("agent.max_result_chars".into(), "must be at least 100".into());
    }
    check_auth(&service.auth, &mut issue);
    let maintenance = &service.maintenance;
    for (task, schedule) in [
        ("retention", &maintenance.retention.schedule),
        ("sessions", &maintenance.sessions.schedule),
        ("optimize", &maintenance.optimize.schedule),
        ("backup", &maintenance.backup.schedule),
    ] {
        if let Some(problem) = crate::maintenance::schedule_problem(schedule) {
            issue(format!("maintenance.{task}.schedule"), problem);
        }
    }
    if maintenance.backup.keep == 0 {
        issue("maintenance.backup.keep".into(), "must be at least 1".into());
    }
    let delivery = &service.delivery;
    if delivery.max_attempts == 0 {
        issue("delivery.max_attempts".into(), "must be at least 1".into());
    }
    for (field, value) in [("retry_backoff", delivery.retry_backoff), ("timeout", delivery.timeout)] {
        if value.is_zero() {
            issue(format!("delivery.{field}"), "must be longer than zero".into());
        }
    }
    for (i, host) in delivery.webhook_allow.iter().enumerate() {
        if host.trim().is_empty() || host.contains(['/', ':', ' ']) && host.parse::<std::net::IpAddr>().is_err() {
            issue(format!("delivery.webhook_allow[{i}]"), format!("{host:?} is not a host name or IP address"));
        }
    }
    let limits = &service.limits;
    for (field, value) in [
        ("requests_per_minute", u64::from(limits.requests_per_minute)),
        ("concurrent_generations", u64::from(limits.concurrent_generations)),
        ("max_message_chars", limits.max_message_chars as u64),
    ] {
        if value == 0 {
            issue(format!("limits.{field}"), "must be at least 1".into());
        }
    }
    for (name, server) in &service.mcp_servers {
        let path = format!("mcp_servers.{name}");
        if !crate::text::is_slug(name) {
            issue(path.clone(), crate::text::slug_message("an MCP server name"));
        }
        if let Err(message) = check_http_url(&server.url) {
            issue(format!("{path}.url"), message);
        }
        if server.timeout.is_zero() {
            issue(format!("{path}.timeout"), "must be longer than zero".into());
        }
        if let McpAuth::StaticHeader { name: header, value } = &server.auth
            && let Err(message) = header_pair(header, value)
        {
            issue(format!("{path}.auth"), message);
        }
        for (field, duration) in [("cache_ttl", server.cache_ttl), ("idle_timeout", server.idle_timeout)] {
            if duration.is_zero() {
                issue(format!("{path}.{field}"), "must be longer than zero".into());
            }
        }
        let selection = &server.tools;
        let lists = [
            ("allow", Some(&selection.allow)),
            ("deny", Some(&selection.deny)),
            ("default", selection.default.as_ref()),
            ("write_patterns", Some(&selection.write_patterns)),
        ];
        for (field, list) in lists {
            for (i, pattern) in list.into_iter().flatten().enumerate() {
                if !crate::text::is_tool_pattern(pattern) {
                    issue(format!("{path}.tools.{field}[{i}]"), crate::text::tool_pattern_message(pattern));
                }
            }
        }
    }
}

/// The longest clock difference the ID token checks tolerate.
const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

fn check_auth(auth: &AuthSettings, issue: &mut impl FnMut(String, String)) {
    let Some(oidc) = &auth.oidc else {
        if auth.local == LocalLogin::Off {
            issue("auth.local".into(), "\"off\" needs auth.oidc: nobody could sign in".into());
        }
        return;
    };
    match Url::parse(&oidc.issuer) {
        Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url)) => {
            if url.query().is_some() || url.fragment().is_some() {
                issue("auth.oidc.issuer".into(), "an issuer has no query or fragment".into());
            }
        }
        Ok(_) => issue("auth.oidc.issuer".into(), "must be an https URL (http only on loopback)".into()),
        Err(e) => issue("auth.oidc.issuer".into(), format!("not a URL: {e}")),
    }
    if oidc.client_id.trim().is_empty() {
        issue("auth.oidc.client_id".into(), "must not be empty".into());
    }
    if !oidc.scopes.iter().any(|s| s == "openid") {
        issue("auth.oidc.scopes".into(), "must include \"openid\"".into());
    }
    for (field, value) in [("username_claim", &oidc.username_claim), ("groups_claim", &oidc.groups_claim)] {
        if value.trim().is_empty() {
            issue(format!("auth.oidc.{field}"), "must not be empty".into());
        }
    }
    if oidc.label.trim().is_empty() || oidc.label.chars().count() > 60 {
        issue("auth.oidc.label".into(), "must be 1 to 60 characters".into());
    }
    if oidc.clock_skew > MAX_CLOCK_SKEW {
        issue("auth.oidc.clock_skew".into(), "may be at most 5m".into());
    }
    if oidc.timeout.is_zero() {
        issue("auth.oidc.timeout".into(), "must be longer than zero".into());
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn check_headers(
    service: &ServiceConfig,
    headers: HeadersFile,
    issues: &mut Vec<ConfigIssue>,
) -> BTreeMap<String, Vec<(HeaderName, HeaderValue)>> {
    let mut built = BTreeMap::new();
    for (endpoint, pairs) in headers {
        if !service.endpoints.contains_key(&endpoint) {
            issues.push(ConfigIssue::new(
                ConfigFile::Header,
                endpoint.as_str(),
                format!(
                    "headers for unknown endpoint {endpoint:?} (config.json defines: {})",
                    crate::text::list(service.endpoints.keys())
                ),
            ));
            continue;
        }
        let mut list = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            match header_pair(&name, &value) {
                Ok(pair) => list.push(pair),
                Err(message) => {
                    issues.push(ConfigIssue::new(ConfigFile::Header, format!("{endpoint}.{name}"), message));
                }
            }
        }
        built.insert(endpoint, list);
    }
    built
}

fn check_payloads(service: &ServiceConfig, payloads: &PayloadsFile, issues: &mut Vec<ConfigIssue>) {
    let file = ConfigFile::Payload;
    for endpoint in service.endpoints.keys() {
        if !payloads.contains_key(endpoint) {
            issues.push(ConfigIssue::new(
                file,
                "",
                format!("no request template for endpoint {endpoint:?} (defined in config.json endpoints.{endpoint})"),
            ));
        }
    }
    for (endpoint, body) in payloads {
        if !service.endpoints.contains_key(endpoint) {
            issues.push(ConfigIssue::new(
                file,
                endpoint.as_str(),
                format!(
                    "template for unknown endpoint {endpoint:?} (config.json defines: {})",
                    crate::text::list(service.endpoints.keys())
                ),
            ));
            continue;
        }
        if !body.is_object() {
            issues.push(ConfigIssue::new(file, endpoint.as_str(), "a request template must be a JSON object"));
            continue;
        }
        let mut used = Vec::new();
        check_payload_value(body, endpoint, &mut used, issues);
        let messages = used.iter().filter(|name| name.as_str() == "messages").count();
        if messages != 1 {
            issues.push(ConfigIssue::new(
                file,
                endpoint.as_str(),
                format!("the template must place \"{{{{messages}}}}\" exactly once (found {messages})"),
            ));
        }
    }
}

fn check_payload_value(value: &Value, path: &str, used: &mut Vec<String>, issues: &mut Vec<ConfigIssue>) {
    match value {
        Value::String(s) if s.contains("{{") => match template::whole_placeholder(s) {
            Some(name) if PAYLOAD_PLACEHOLDERS.iter().any(|(known, _)| *known == name) => used.push(name.to_owned()),
            Some(name) => issues.push(ConfigIssue::new(
                ConfigFile::Payload,
                path,
                format!(
                    "unknown placeholder {{{{{name}}}}}; known: {}",
                    crate::text::list(PAYLOAD_PLACEHOLDERS.iter().map(|(known, _)| *known))
                ),
            )),
            None => issues.push(ConfigIssue::new(
                ConfigFile::Payload,
                path,
                "a placeholder must be the whole string value, e.g. \"{{messages}}\", because it is replaced by a JSON value",
            )),
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_payload_value(item, &format!("{path}[{i}]"), used, issues);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                check_payload_value(item, &format!("{path}.{key}"), used, issues);
            }
        }
        _ => {}
    }
}

fn check_prompts(service: &ServiceConfig, prompts: &PromptsFile, issues: &mut Vec<ConfigIssue>) {
    let file = ConfigFile::Prompts;
    let endpoints: BTreeSet<&str> = service.endpoints.keys().map(String::as_str).collect();
    for (name, prompt) in &prompts.prompts {
        let path = format!("prompts.{name}");
        if !crate::text::is_slug(name) {
            issues.push(ConfigIssue::new(file, path.clone(), crate::text::slug_message("a prompt name")));
        }
        for problem in crate::prompts::validate(prompt, Some(&endpoints)) {
            issues.push(ConfigIssue::new(file, format!("{path}.{}", problem.path), problem.message));
        }
    }
}

fn header_pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let header = HeaderName::try_from(name).map_err(|_| format!("{name:?} is not a valid HTTP header name"))?;
    if RESERVED_HEADERS.contains(&header.as_str()) {
        return Err(format!("{name:?} is set by promptops and cannot be configured"));
    }
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| "the value is not a valid HTTP header value (control characters or line breaks)".to_owned())?;
    value.set_sensitive(true);
    Ok((header, value))
}

fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_HEADER_WORDS.iter().any(|word| name.contains(word))
}

fn check_http_url(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(()),
        "http" | "https" => Err("the URL has no host".into()),
        other => Err(format!("scheme {other:?} is not supported; use http or https")),
    }
}
