//! The CRD YAML in `crds/` is what `promptops crds` prints from the Rust types.

use std::process::Command;

#[test]
fn committed_crds_match_the_rust_types() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/promptops.dev.yaml")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_promptops")).arg("crds").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let generated = String::from_utf8(output.stdout).unwrap();
    assert!(
        generated == committed,
        "crds/promptops.dev.yaml is out of date with src/controller/resources.rs; \
         run `cargo run -- crds > crds/promptops.dev.yaml` and commit the result"
    );
    for needle in ["name: prompts.promptops.dev", "name: promptjobs.promptops.dev", "- pjob", "- pmt", "- promptops"] {
        assert!(generated.contains(needle), "{needle} missing");
    }
}
