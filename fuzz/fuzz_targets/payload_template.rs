//! An endpoint's payload template (first part) filled with request values (second part, a
//! JSON object of messages, stream, model, tools). Invariant: no panic, and no string value
//! `"{{name}}"` with a value given survives into the request body (object keys are not
//! placeholders and are left as written).
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptops::llm::payload::{PayloadValues, render};
use promptops_fuzz::parts;
use serde_json::Value;

const NAMES: [&str; 4] = ["messages", "stream", "model", "tools"];

/// Every string value in `value`, keys aside.
fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(members) => members.values().for_each(|v| strings(v, out)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [template, values] = parts::<2>(data);
    let Ok(template) = serde_json::from_slice::<Value>(template) else { return };
    let given: Value = serde_json::from_slice(values).unwrap_or(Value::Null);
    let mut values = PayloadValues::new();
    for name in NAMES {
        if let Some(value) = given.get(name) {
            values = values.set(name, value.clone());
        }
    }
    let body = render(&template, &values);
    let mut found = Vec::new();
    strings(&body, &mut found);
    for name in NAMES {
        let placeholder = format!("{{{{{name}}}}}");
        let Some(value) = given.get(name) else { continue };
        let mut inserted = Vec::new();
        strings(value, &mut inserted);
        if !inserted.contains(&placeholder.as_str()) {
            assert!(!found.contains(&placeholder.as_str()), "{placeholder} left in {body}");
        }
    }
});
