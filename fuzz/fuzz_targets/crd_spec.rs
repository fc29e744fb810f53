//! A Prompt or PromptJob spec as the API server hands it to the controller (first byte even:
//! Prompt, odd: PromptJob), read and checked as the reconciler does. Invariant: no panic;
//! a spec that is accepted also survives a round trip through JSON with the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use promptops::controller::resources::{PromptJobSpec, PromptSpec};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn check<S: Serialize + DeserializeOwned>(json: &[u8], problem: fn(&S) -> Option<(&'static str, String)>) {
    let Ok(spec) = serde_json::from_slice::<S>(json) else { return };
    let verdict = problem(&spec);
    let again: S = serde_json::from_value(serde_json::to_value(&spec).expect("a spec serialises"))
        .expect("a spec reads back what it wrote");
    assert_eq!(problem(&again), verdict);
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, json)) = data.split_first() else { return };
    if kind % 2 == 0 {
        check::<PromptSpec>(json, |spec| spec.problem("fuzz"))
    } else {
        check::<PromptJobSpec>(json, PromptJobSpec::problem)
    }
});
