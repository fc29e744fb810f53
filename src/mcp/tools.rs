//! Which tools an answer may use: a server's allow/deny lists, the default set (read-only
//! unless configured), a prompt's own list, and whether a tool writes (MCP annotations
//! first, name patterns otherwise). Writes wait for the user's approval.

use serde_json::{Value, json};
use wildmatch::WildMatch;

use crate::config::model::ToolSelection;

/// One tool as the agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    pub server: String,
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    /// Changes something: needs the user's approval.
    pub writes: bool,
    /// Usable at all under the server's allow/deny lists.
    pub allowed: bool,
    /// Offered when the prompt names no tools.
    pub default: bool,
}

impl ToolInfo {
    pub fn new(server: &str, tool: &rmcp::model::Tool, selection: &ToolSelection) -> Self {
        let name = tool.name.to_string();
        let annotations = tool.annotations.as_ref();
        let writes = match (annotations.and_then(|a| a.read_only_hint), annotations.and_then(|a| a.destructive_hint)) {
            (Some(true), _) => false,
            (_, Some(true)) => true,
            _ => matches_any(&selection.write_patterns, &name),
        };
        let allowed = matches_any(&selection.allow, &name) && !matches_any(&selection.deny, &name);
        let default = allowed
            && match &selection.default {
                Some(list) => matches_any(list, &name),
                None => !writes,
            };
        Self {
            server: server.to_owned(),
            description: tool.description.as_deref().unwrap_or_default().to_owned(),
            input_schema: Value::Object((*tool.input_schema).clone()),
            name,
            writes,
            allowed,
            default,
        }
    }

    /// The tool in OpenAI's `tools` shape.
    pub fn definition(&self) -> Value {
        json!({"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.input_schema,
        }})
    }
}

/// True when `name` matches one of `patterns` (`*` matches any run of characters).
pub fn matches_any(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| WildMatch::new(p).matches(name))
}

/// The tools offered to the LLM: those a prompt names, or every server's default set.
pub fn select<'a>(tools: impl IntoIterator<Item = &'a ToolInfo>, prompt_tools: Option<&[String]>) -> Vec<ToolInfo> {
    tools
        .into_iter()
        .filter(|t| t.allowed)
        .filter(|t| match prompt_tools {
            Some(patterns) => matches_any(patterns, &t.name),
            None => t.default,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn tool(name: &str, read_only: Option<bool>, destructive: Option<bool>) -> rmcp::model::Tool {
        let mut tool = rmcp::model::Tool::new(name.to_owned(), "does things", Arc::new(serde_json::Map::new()));
        if read_only.is_some() || destructive.is_some() {
            let mut annotations = rmcp::model::ToolAnnotations::default();
            annotations.read_only_hint = read_only;
            annotations.destructive_hint = destructive;
            tool.annotations = Some(annotations);
        }
        tool
    }

    #[test]
    fn annotations_win_over_name_patterns() {
        let selection = ToolSelection::default();
        assert!(!ToolInfo::new("s", &tool("jira_get_issue", None, None), &selection).writes);
        assert!(ToolInfo::new("s", &tool("jira_add_comment", None, None), &selection).writes);
        assert!(!ToolInfo::new("s", &tool("jira_add_comment", Some(true), None), &selection).writes);
        assert!(ToolInfo::new("s", &tool("jira_lookup", None, Some(true)), &selection).writes);
    }

    #[test]
    fn the_default_set_is_read_only_unless_configured_and_deny_wins() {
        let read = ToolInfo::new("s", &tool("jira_get_issue", None, None), &ToolSelection::default());
        let write = ToolInfo::new("s", &tool("jira_add_comment", None, None), &ToolSelection::default());
        assert!(read.default && !write.default);
        let names: Vec<String> = select([&read, &write], None).into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["jira_get_issue"]);
        let prompt = vec!["jira_*".to_owned()];
        assert_eq!(select([&read, &write], Some(&prompt)).len(), 2, "a prompt can name write tools");

        let selection = ToolSelection {
            deny: vec!["*delete*".into()],
            default: Some(vec!["jira_get_issue".into(), "jira_add_comment".into()]),
            ..ToolSelection::default()
        };
        assert!(ToolInfo::new("s", &tool("jira_add_comment", None, None), &selection).default);
        let denied = ToolInfo::new("s", &tool("jira_delete_issue", None, None), &selection);
        assert!(!denied.allowed);
        assert!(select([&denied], Some(&prompt)).is_empty());
    }
}
