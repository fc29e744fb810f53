//! Validation of a config set: every rule names the file, the JSON path and the reason.

use std::collections::HashMap;

use promptops::config::RawConfigSet;

use crate::helpers::{example_config, write_files};

/// Validates the example config with `edit` applied to the named file's JSON.
async fn check_with(
    file: &str,
    edit: impl FnOnce(&mut serde_json::Value),
    env: &[(&str, &str)],
) -> Result<(), Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let mut files = example_config();
    let (_, content) = files.iter_mut().find(|(name, _)| *name == file).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(content).unwrap();
    edit(&mut value);
    *content = value.to_string();
    write_files(dir.path(), &files);
    let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    RawConfigSet::read(dir.path())
        .await
        .parse(&env)
        .map(|_| ())
        .map_err(|e| e.issues.iter().map(ToString::to_string).collect())
}

async fn problems(file: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<String> {
    check_with(file, edit, &[]).await.expect_err("the set should be rejected")
}

#[tokio::test]
async fn the_example_config_is_valid_with_nothing_set() {
    check_with("config.json", |_| {}, &[]).await.unwrap();
}

#[tokio::test]
async fn environment_references_take_values_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &example_config());
    let env: HashMap<String, String> =
        [("PROMPTOPS_LLM_BASE_URL", "https://llm.corp.example/v1"), ("PROMPTOPS_LLM_API_KEY", "sk-live-123")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    let config = RawConfigSet::read(dir.path()).await.parse(&env).unwrap();
    assert_eq!(config.service.endpoints["local"].url.as_str(), "https://llm.corp.example/v1/chat/completions");
    let (name, value) = &config.headers["local"][0];
    assert_eq!(name, "authorization");
    assert_eq!(value, "Bearer sk-live-123");
    assert!(value.is_sensitive());
    assert!(!format!("{config:?}").contains("sk-live-123"), "Debug must not show header values");
    assert_eq!(config.service.mcp_servers["atlassian"].url.as_str(), "http://127.0.0.1:9000/mcp");
}

#[tokio::test]
async fn a_missing_variable_without_default_names_the_variable_and_the_path() {
    let errors = problems("config.json", |c| {
        c["endpoints"]["local"]["url"] = "${env:CORP_LLM_URL}/chat".into();
    })
    .await;
    assert_eq!(
        errors,
        [
            "config.json: endpoints.local.url: environment variable CORP_LLM_URL is not set and the reference gives no default (use ${env:CORP_LLM_URL:-default})"
        ]
    );
}

#[tokio::test]
async fn unknown_fields_are_rejected_with_their_path() {
    let errors = problems("config.json", |c| {
        c["endpoints"]["local"]["timeouts"]["conect"] = "5s".into();
    })
    .await;
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("config.json: endpoints.local.timeouts.conect: unknown field `conect`"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn wrong_types_and_bad_durations_are_rejected_with_their_path() {
    let errors = problems("config.json", |c| {
        c["endpoints"]["local"]["timeouts"]["connect"] = "soon".into();
    })
    .await;
    assert!(errors[0].starts_with("config.json: endpoints.local.timeouts.connect: "), "{errors:?}");

    let errors = problems("prompts.json", |p| {
        p["prompts"]["blockers"]["variables"][0]["required"] = "yes".into();
    })
    .await;
    assert!(errors[0].starts_with("prompts.json: prompts.blockers.variables[0].required: invalid type"), "{errors:?}");
}

#[tokio::test]
async fn credentials_written_inline_are_refused() {
    let errors = problems("header.json", |h| {
        h["local"]["Authorization"] = "Bearer sk-live-123".into();
    })
    .await;
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("header.json: local.Authorization: credentials must not be written inline"),
        "{errors:?}"
    );
    assert!(!errors[0].contains("sk-live-123"));

    let errors = problems("config.json", |c| {
        c["mcp_servers"]["atlassian"]["auth"] =
            serde_json::json!({"type": "static_header", "name": "X-Api-Key", "value": "abc"});
    })
    .await;
    assert!(
        errors[0].starts_with("config.json: mcp_servers.atlassian.auth.value: credentials must not be written inline"),
        "{errors:?}"
    );

    // Harmless headers may be literal.
    check_with("header.json", |h| h["local"]["X-Team"] = "payments".into(), &[]).await.unwrap();
}

#[tokio::test]
async fn cross_file_references_must_resolve() {
    let errors = problems("config.json", |c| c["default_endpoint"] = "corp".into()).await;
    assert_eq!(errors, ["config.json: default_endpoint: names endpoint \"corp\", which is not defined in endpoints"]);

    let errors = problems("header.json", |h| h["corp"] = serde_json::json!({"X-Team": "a"})).await;
    assert_eq!(errors, ["header.json: corp: headers for unknown endpoint \"corp\" (config.json defines: local)"]);

    let errors = problems("payload.json", |p| {
        p.as_object_mut().unwrap().remove("local");
    })
    .await;
    assert_eq!(
        errors,
        ["payload.json: no request template for endpoint \"local\" (defined in config.json endpoints.local)"]
    );

    let errors = problems("prompts.json", |p| p["prompts"]["blockers"]["endpoint"] = "gpt".into()).await;
    assert_eq!(
        errors,
        ["prompts.json: prompts.blockers.endpoint: names endpoint \"gpt\", which config.json does not define (local)"]
    );
}

#[tokio::test]
async fn payload_templates_use_only_known_whole_value_placeholders() {
    let errors = problems("payload.json", |p| p["local"]["user"] = "{{username}}".into()).await;
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("payload.json: local.user: unknown placeholder {{username}}; known: messages, tools"),
        "{errors:?}"
    );

    let errors = problems("payload.json", |p| p["local"]["model"] = "corp-{{model}}".into()).await;
    assert!(
        errors[0].starts_with("payload.json: local.model: a placeholder must be the whole string value"),
        "{errors:?}"
    );

    let errors = problems("payload.json", |p| {
        p["local"].as_object_mut().unwrap().remove("messages");
    })
    .await;
    assert_eq!(errors, ["payload.json: local: the template must place \"{{messages}}\" exactly once (found 0)"]);

    // Nested placements are fine: a company LLM with its own body shape.
    check_with(
        "payload.json",
        |p| {
            p["local"] = serde_json::json!({"input": {"chat": "{{messages}}", "options": {"stream": "{{stream}}"}}});
        },
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn prompt_variables_must_match_the_template() {
    let errors = problems("prompts.json", |p| {
        p["prompts"]["blockers"]["template"] = "Blockers of {{project}} for {{team}}".into();
    })
    .await;
    assert_eq!(errors, ["prompts.json: prompts.blockers.template: uses {{team}}, which is not declared in variables"]);

    let errors = problems("prompts.json", |p| {
        p["prompts"]["blockers"]["template"] = "All blockers".into();
    })
    .await;
    assert_eq!(
        errors,
        ["prompts.json: prompts.blockers.variables: declares \"project\", which the template never uses"]
    );

    let errors = problems("prompts.json", |p| {
        p["prompts"]["blockers"]["variables"][0]["default"] = "PAY".into();
    })
    .await;
    assert_eq!(
        errors,
        ["prompts.json: prompts.blockers.variables[0].default: a required variable cannot have a default"]
    );
}

#[tokio::test]
async fn ranges_and_names_are_checked() {
    let errors = problems("config.json", |c| {
        let local = &mut c["endpoints"]["local"];
        local["url"] = "ftp://llm/v1".into();
        local["retry"]["max_attempts"] = 0.into();
        local["retry"]["on_status"] = serde_json::json!([503, 200]);
        local["timeouts"]["idle"] = "0s".into();
    })
    .await;
    assert_eq!(
        errors,
        [
            "config.json: endpoints.local.url: scheme \"ftp\" is not supported; use http or https",
            "config.json: endpoints.local.timeouts.idle: must be longer than zero",
            "config.json: endpoints.local.retry.max_attempts: must be at least 1 (1 means no retries)",
            "config.json: endpoints.local.retry.on_status[1]: 200 is not an HTTP error status (400-599)",
        ]
    );

    let errors = problems("prompts.json", |p| {
        let blockers = p["prompts"]["blockers"].clone();
        p["prompts"]["Open Blockers"] = blockers;
    })
    .await;
    assert!(
        errors[0].starts_with("prompts.json: prompts.Open Blockers: a prompt name must be lower-case"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn every_broken_file_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = example_config();
    files[0].1 = "{".into();
    files.remove(2);
    write_files(dir.path(), &files);
    let error = RawConfigSet::read(dir.path()).await.parse(&HashMap::new()).unwrap_err();
    let text = error.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("config.json: invalid JSON: EOF while parsing an object at line 1 column 1"),
        "{text}"
    );
    assert!(lines[1].starts_with("payload.json: missing: expected at "), "{text}");
}
