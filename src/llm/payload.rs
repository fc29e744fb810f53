//! Fills an endpoint's payload template: each `"{{name}}"` string becomes the JSON value
//! given for it; an object member whose placeholder has no value is left out.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::template::whole_placeholder;

/// Values for the placeholders of one request.
#[derive(Debug, Clone, Default)]
pub struct PayloadValues(HashMap<&'static str, Value>);

impl PayloadValues {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, name: &'static str, value: Value) -> Self {
        self.0.insert(name, value);
        self
    }
}

/// The request body for `template` with `values` filled in.
pub fn render(template: &Value, values: &PayloadValues) -> Value {
    fill(template, values).unwrap_or(Value::Null)
}

/// `None` when `value` is a placeholder without a value.
fn fill(value: &Value, values: &PayloadValues) -> Option<Value> {
    match value {
        Value::String(s) => match whole_placeholder(s) {
            Some(name) => values.0.get(name).cloned(),
            None => Some(value.clone()),
        },
        Value::Array(items) => {
            Some(Value::Array(items.iter().map(|v| fill(v, values).unwrap_or(Value::Null)).collect()))
        }
        Value::Object(members) => {
            let filled: Map<String, Value> =
                members.iter().filter_map(|(k, v)| fill(v, values).map(|v| (k.clone(), v))).collect();
            Some(Value::Object(filled))
        }
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn placeholders_become_typed_values_and_missing_ones_vanish() {
        let template = json!({
            "model": "{{model}}",
            "messages": "{{messages}}",
            "tools": "{{tools}}",
            "stream": "{{stream}}",
            "temperature": 0.2,
            "nested": {"opts": ["{{stream}}", "{{max_tokens}}"]},
        });
        let values = PayloadValues::new()
            .set("model", json!("smollm2"))
            .set("messages", json!([{"role": "user", "content": "hi"}]))
            .set("stream", json!(true));
        assert_eq!(
            render(&template, &values),
            json!({
                "model": "smollm2",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": true,
                "temperature": 0.2,
                "nested": {"opts": [true, null]},
            })
        );
    }
}
