//! The prompt library: reusable prompts with `{{variables}}` from three sources — the
//! platform's prompts.json (named `name`), Prompt resources from Kubernetes
//! (`namespace/name`) and each person's own prompts (`me:name`, private to their owner).
//! One [`Prompt`], one [`validate`] used by config loading, the reconciler and personal
//! prompts alike, one [`render`]; [`PromptLibrary`] finds and lists them for chat, jobs and
//! the pages.

mod library;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{template, text};
pub use library::PromptLibrary;

/// The longest template, in characters.
pub const MAX_TEMPLATE_CHARS: usize = 20_000;
/// The most variables a prompt declares.
pub const MAX_VARIABLES: usize = 50;
/// The longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// A reusable prompt with `{{variables}}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// The text sent as the user's message, `{{name}}` replaced by variable values.
    pub template: String,
    #[serde(default)]
    pub variables: Vec<Variable>,
    /// The endpoint to use instead of the default one.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Tools (names or `*` patterns) offered with this prompt instead of the servers'
    /// default sets; `[]` offers none.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
}

/// One variable of a prompt template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// The name used as `{{name}}` in the template: letters, digits and underscores,
    /// starting with a letter.
    #[schemars(length(max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9_]*$"))]
    pub name: String,
    /// What to fill in, shown next to the field.
    #[serde(default)]
    pub description: String,
    /// Whether a value must be given; a required variable has no default.
    #[serde(default)]
    pub required: bool,
    /// The value used when none is given.
    #[serde(default)]
    pub default: Option<String>,
}

/// Which prompt: its source and its name there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PromptRef {
    /// A prompt of prompts.json, by name.
    File(String),
    /// A Prompt resource: `namespace/name`.
    Resource { namespace: String, name: String },
    /// The caller's own prompt: `me:name`.
    Personal(String),
}

const PERSONAL_PREFIX: &str = "me:";

impl PromptRef {
    /// Reads `name`, `namespace/name` or `me:name`.
    pub fn parse(text: &str) -> Result<Self, PromptError> {
        let text = text.trim();
        let invalid =
            || PromptError::Invalid(format!("{text:?} does not name a prompt (name, namespace/name or me:name)"));
        if let Some(name) = text.strip_prefix(PERSONAL_PREFIX) {
            return if text::is_slug(name) { Ok(Self::Personal(name.to_owned())) } else { Err(invalid()) };
        }
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::Resource { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            Some(_) => Err(invalid()),
            None if !text.is_empty() => Ok(Self::File(text.to_owned())),
            None => Err(invalid()),
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Self::File(_) => Source::File,
            Self::Resource { .. } => Source::Kubernetes,
            Self::Personal(_) => Source::Personal,
        }
    }
}

impl fmt::Display for PromptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(name) => f.write_str(name),
            Self::Resource { namespace, name } => write!(f, "{namespace}/{name}"),
            Self::Personal(name) => write!(f, "{PERSONAL_PREFIX}{name}"),
        }
    }
}

/// Where a prompt comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Kubernetes,
    Personal,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Kubernetes => "kubernetes",
            Self::Personal => "personal",
        }
    }
}

/// A prompt as the library lists it: how to name it, where it comes from, and its fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptInfo {
    /// What chat and jobs name it by (`name`, `namespace/name` or `me:name`).
    pub name: String,
    pub source: Source,
    /// Whether the caller may change it (their own prompts).
    pub editable: bool,
    pub title: String,
    pub description: String,
    pub template: String,
    pub variables: Vec<Variable>,
    pub endpoint: Option<String>,
    pub tools: Option<Vec<String>>,
}

impl PromptInfo {
    /// For one of the caller's own prompts, its name without `me:` (as the page paths take it).
    pub fn own_name(&self) -> Option<&str> {
        self.name.strip_prefix(PERSONAL_PREFIX).filter(|_| self.source == Source::Personal)
    }

    pub fn new(reference: &PromptRef, prompt: Prompt) -> Self {
        let source = reference.source();
        Self {
            name: reference.to_string(),
            source,
            editable: source == Source::Personal,
            title: prompt.title,
            description: prompt.description,
            template: prompt.template,
            variables: prompt.variables,
            endpoint: prompt.endpoint,
            tools: prompt.tools,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("there is no prompt named {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the prompt is not valid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Problems(Vec<Problem>),
    #[error("you already have a prompt named {0:?}")]
    Exists(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// One thing wrong with a prompt: where (a path inside the prompt, such as
/// `variables[0].name`) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl Problem {
    /// Whether the problem is in the template or its variables (a Prompt resource's
    /// `InvalidTemplate`) rather than in its other fields.
    pub fn in_template(&self) -> bool {
        self.path == "template" || self.path.starts_with("variables")
    }
}

/// What is wrong with `prompt`, in field order; empty when it is valid. `endpoints` are the
/// config.json endpoints a prompt may name, when known where the prompt is checked (a
/// Prompt resource is checked without them: the endpoint is looked up when it is used).
pub fn validate(prompt: &Prompt, endpoints: Option<&BTreeSet<&str>>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |path: String, message: String| problems.push(Problem { path, message });
    let title = prompt.title.trim();
    if title.is_empty() {
        problem("title".into(), "must not be empty".into());
    } else if title.chars().count() > MAX_TITLE_CHARS {
        problem("title".into(), format!("has more than {MAX_TITLE_CHARS} characters"));
    }
    if let (Some(endpoint), Some(known)) = (&prompt.endpoint, endpoints)
        && !known.contains(endpoint.as_str())
    {
        problem(
            "endpoint".into(),
            format!("names endpoint {endpoint:?}, which config.json does not define ({})", text::list(known.iter())),
        );
    }
    for (i, pattern) in prompt.tools.iter().flatten().enumerate() {
        if !text::is_tool_pattern(pattern) {
            problem(format!("tools[{i}]"), text::tool_pattern_message(pattern));
        }
    }
    if prompt.variables.len() > MAX_VARIABLES {
        problem("variables".into(), format!("declares more than {MAX_VARIABLES} variables"));
    }
    let mut declared = BTreeSet::new();
    for (i, variable) in prompt.variables.iter().enumerate() {
        let path = format!("variables[{i}]");
        if !template::is_valid_name(&variable.name) || variable.name.len() > 64 {
            problem(
                format!("{path}.name"),
                format!(
                    "{:?} is not a valid variable name (letters, digits and _, starting with a letter, at most 64)",
                    variable.name
                ),
            );
        }
        if !declared.insert(variable.name.as_str()) {
            problem(format!("{path}.name"), format!("variable {:?} is declared twice", variable.name));
        }
        if variable.required && variable.default.is_some() {
            problem(format!("{path}.default"), "a required variable cannot have a default".into());
        }
    }
    if prompt.template.trim().is_empty() {
        problem("template".into(), "must not be empty".into());
    } else if prompt.template.chars().count() > MAX_TEMPLATE_CHARS {
        problem("template".into(), format!("has more than {MAX_TEMPLATE_CHARS} characters"));
    }
    match template::placeholders(&prompt.template) {
        Ok(found) => {
            let used: BTreeSet<&str> = found.iter().map(|p| p.name).collect();
            for name in used.difference(&declared) {
                problem("template".into(), format!("uses {{{{{name}}}}}, which is not declared in variables"));
            }
            for name in declared.difference(&used) {
                problem("variables".into(), format!("declares {name:?}, which the template never uses"));
            }
        }
        Err(e) => problem("template".into(), e.to_string()),
    }
    problems
}

/// Fills a prompt's `{{variables}}`: a given value, else the default; a required variable
/// without a value, or a value for a variable the prompt does not have, is an error.
pub fn render(prompt: &Prompt, values: &BTreeMap<String, String>) -> Result<String, PromptError> {
    if let Some(unknown) = values.keys().find(|k| !prompt.variables.iter().any(|v| &v.name == *k)) {
        return Err(PromptError::Invalid(format!("the prompt has no variable {unknown:?}")));
    }
    let mut resolved = BTreeMap::new();
    for variable in &prompt.variables {
        let given = values.get(&variable.name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let value = match (given, &variable.default) {
            (Some(value), _) => value.to_owned(),
            (None, Some(default)) => default.clone(),
            (None, None) if variable.required => {
                return Err(PromptError::Invalid(format!("the prompt needs a value for {}", variable.name)));
            }
            (None, None) => String::new(),
        };
        resolved.insert(variable.name.as_str(), value);
    }
    let placeholders = template::placeholders(&prompt.template).map_err(|e| PromptError::Invalid(e.to_string()))?;
    let mut text = String::with_capacity(prompt.template.len());
    let mut at = 0;
    for placeholder in placeholders {
        text.push_str(&prompt.template[at..placeholder.span.start]);
        text.push_str(resolved.get(placeholder.name).map_or("", String::as_str));
        at = placeholder.span.end;
    }
    text.push_str(&prompt.template[at..]);
    Ok(text)
}

/// Inline prompt text (a job's own): a prompt whose variables are exactly the names given.
pub fn inline(title: &str, text: &str, values: &BTreeMap<String, String>) -> Prompt {
    Prompt {
        title: title.to_owned(),
        description: String::new(),
        template: text.to_owned(),
        variables: values
            .keys()
            .map(|name| Variable { name: name.clone(), description: String::new(), required: false, default: None })
            .collect(),
        endpoint: None,
        tools: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variable(name: &str, required: bool, default: Option<&str>) -> Variable {
        Variable { name: name.into(), description: String::new(), required, default: default.map(Into::into) }
    }

    fn prompt() -> Prompt {
        Prompt {
            title: "t".into(),
            description: String::new(),
            template: "Blockers of {{project}} in a {{tone}} tone.".into(),
            variables: vec![variable("project", true, None), variable("tone", false, Some("calm"))],
            endpoint: None,
            tools: None,
        }
    }

    #[test]
    fn prompts_fill_values_and_defaults_and_refuse_missing_or_unknown_ones() {
        let values = BTreeMap::from([("project".to_owned(), "PAY".to_owned())]);
        assert_eq!(render(&prompt(), &values).unwrap(), "Blockers of PAY in a calm tone.");
        let error = render(&prompt(), &BTreeMap::new()).unwrap_err();
        assert_eq!(error.to_string(), "the prompt needs a value for project");
        let unknown = BTreeMap::from([("team".to_owned(), "x".to_owned())]);
        assert_eq!(render(&prompt(), &unknown).unwrap_err().to_string(), "the prompt has no variable \"team\"");
    }

    #[test]
    fn references_read_back_as_written_and_bad_ones_are_refused() {
        for (text, expected) in [
            ("blockers", PromptRef::File("blockers".into())),
            ("team-a/open", PromptRef::Resource { namespace: "team-a".into(), name: "open".into() }),
            ("me:weekly", PromptRef::Personal("weekly".into())),
        ] {
            let parsed = PromptRef::parse(text).unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(parsed.to_string(), text);
        }
        for bad in ["", "/x", "x/", "a/b/c", "me:", "me:Not A Slug"] {
            assert!(PromptRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// One table: each case changes the valid prompt and names the problems it must give.
    #[test]
    fn validation_names_each_problem_with_its_path() {
        type Change = fn(&mut Prompt);
        let cases: &[(&str, Change, &[&str])] = &[
            ("valid", |_| {}, &[]),
            ("empty title", |p| p.title = " ".into(), &["title: must not be empty"]),
            ("long title", |p| p.title = "x".repeat(201), &["title: has more than 200 characters"]),
            (
                "unknown endpoint",
                |p| p.endpoint = Some("other".into()),
                &["endpoint: names endpoint \"other\", which config.json does not define (local)"],
            ),
            (
                "bad tool pattern",
                |p| p.tools = Some(vec!["jira_*".into(), "no spaces".into()]),
                &[
                    "tools[1]: \"no spaces\" is not a tool name or pattern (letters, digits, '_', '-', '.', and '*' as a wildcard)",
                ],
            ),
            (
                "bad variable name",
                |p| p.variables[1].name = "1tone".into(),
                &[
                    "variables[1].name: \"1tone\" is not a valid variable name (letters, digits and _, starting with a letter, at most 64)",
                    "template: uses {{tone}}, which is not declared in variables",
                    "variables: declares \"1tone\", which the template never uses",
                ],
            ),
            (
                "declared twice",
                |p| p.variables.push(variable("tone", false, None)),
                &["variables[2].name: variable \"tone\" is declared twice"],
            ),
            (
                "required with a default",
                |p| p.variables[0].default = Some("PAY".into()),
                &["variables[0].default: a required variable cannot have a default"],
            ),
            (
                "undeclared placeholder",
                |p| p.template.push_str(" {{team}}"),
                &["template: uses {{team}}, which is not declared in variables"],
            ),
            (
                "unused variable",
                |p| p.variables.push(variable("since", false, None)),
                &["variables: declares \"since\", which the template never uses"],
            ),
            (
                "empty template",
                |p| p.template = "\n".into(),
                &[
                    "template: must not be empty",
                    "variables: declares \"project\", which the template never uses",
                    "variables: declares \"tone\", which the template never uses",
                ],
            ),
            (
                "unclosed placeholder",
                |p| p.template.push_str(" {{x"),
                &["template: `{{` at byte 44 has no closing `}}`"],
            ),
        ];
        let endpoints = BTreeSet::from(["local"]);
        for (name, change, expected) in cases {
            let mut p = prompt();
            change(&mut p);
            let found: Vec<String> = validate(&p, Some(&endpoints)).iter().map(ToString::to_string).collect();
            assert_eq!(found, *expected, "case {name}");
        }
        let mut elsewhere = prompt();
        elsewhere.endpoint = Some("other".into());
        assert!(validate(&elsewhere, None).is_empty(), "without the endpoints, an endpoint is not checked");
    }
}
