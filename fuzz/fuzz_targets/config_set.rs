//! The config set as the reloader reads it: four files (NUL-separated in the input) and an
//! environment (`NAME=value` lines, the fifth part) for `${env:…}` interpolation. Invariant:
//! no panic; a refused set always says at least one thing to fix, and never prints the
//! value of a variable it substituted (a value the files themselves spell out may be
//! quoted back: it is the operator's own text).
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use promptops::config::RawConfigSet;
use promptops_fuzz::parts;

fuzz_target!(|data: &[u8]| {
    let [config, header, payload, prompts, env] = parts::<5>(data);
    let env_len = env.len();
    let env: HashMap<String, String> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let set = RawConfigSet::from_contents(
        Path::new("/fuzz/config"),
        [config.to_vec(), header.to_vec(), payload.to_vec(), prompts.to_vec()],
    );
    if let Err(error) = set.parse(&env) {
        assert!(!error.issues.is_empty(), "a refused set says why");
        let shown = error.to_string();
        let files = String::from_utf8_lossy(&data[..data.len() - env_len]);
        let secrets = env.values().filter(|v| v.len() >= 12 && v.starts_with("SECRET") && !files.contains(v.as_str()));
        for value in secrets {
            assert!(!shown.contains(value.as_str()), "an error shows a variable's value: {shown}");
        }
    }
});
