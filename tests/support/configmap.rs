//! Config directories for tests and benchmarks: the example set, numbered variants, and
//! a ConfigMap volume updated step by step the way kubelet's atomic writer does it.

use std::path::{Path, PathBuf};

/// The example config shipped in `config/`, the set every test starts from.
pub fn example_config() -> Vec<(&'static str, String)> {
    vec![
        ("config.json", include_str!("../../config/config.json").to_owned()),
        ("header.json", include_str!("../../config/header.json").to_owned()),
        ("payload.json", include_str!("../../config/payload.json").to_owned()),
        ("prompts.json", include_str!("../../config/prompts.json").to_owned()),
    ]
}

/// The example config with a recognisable system prompt, so a test can tell sets apart.
pub fn config_version(n: usize) -> Vec<(&'static str, String)> {
    let mut files = example_config();
    for (name, content) in &mut files {
        if *name == "prompts.json" {
            let mut prompts: serde_json::Value = serde_json::from_str(content).unwrap();
            prompts["system"] = serde_json::Value::String(format!("system prompt v{n}"));
            *content = serde_json::to_string_pretty(&prompts).unwrap();
        }
    }
    files
}

pub fn write_files(dir: &Path, files: &[(&str, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// A directory laid out and updated exactly as kubelet's atomic writer does for a
/// ConfigMap volume: `name -> ..data/name`, `..data -> ..<timestamp>`; an update writes
/// a new timestamped dir, points `..data_tmp` at it, renames that over `..data`, then
/// deletes the old dir. Files are never written in place.
#[derive(Debug)]
pub struct KubeletDir {
    root: PathBuf,
    current: PathBuf,
    counter: usize,
}

impl KubeletDir {
    pub fn create(root: &Path, files: &[(&str, String)]) -> Self {
        std::fs::create_dir_all(root).unwrap();
        let mut dir = Self { root: root.to_path_buf(), current: PathBuf::new(), counter: 0 };
        let first = dir.write_timestamped(files);
        std::os::unix::fs::symlink(first.file_name().unwrap(), root.join("..data")).unwrap();
        dir.current = first;
        dir.link_names(files);
        dir
    }

    /// One atomic update to `files` (names absent from `files` disappear).
    pub fn swap(&mut self, files: &[(&str, String)]) {
        let next = self.write_timestamped(files);
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(next.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        self.link_names(files);
        for entry in std::fs::read_dir(&self.root).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_link = entry.file_type().unwrap().is_symlink();
            if is_link && !name.starts_with("..") && !files.iter().any(|(f, _)| *f == name) {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        std::fs::remove_dir_all(&self.current).unwrap();
        self.current = next;
    }

    fn write_timestamped(&mut self, files: &[(&str, String)]) -> PathBuf {
        self.counter += 1;
        let dir = self.root.join(format!("..2026_11_26_12_00_00.{:09}", self.counter));
        write_files(&dir, files);
        dir
    }

    fn link_names(&self, files: &[(&str, String)]) {
        for (name, _) in files {
            let link = self.root.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
    }
}
