//! Real MCP servers for the tests, as child processes that die with their guard:
//! mcp-atlassian (PyPI) in front of the stub Jira/Confluence, and server-everything (npm).
//! `scripts/mcp-test-env install` (run by the test command) puts them in the cache.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running MCP server; killed when dropped.
#[derive(Debug)]
pub struct McpProcess {
    child: Child,
    /// Its streamable-HTTP endpoint, e.g. `http://127.0.0.1:41234/mcp`.
    pub url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for McpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl McpProcess {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (to test an outage) without forgetting its URL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that runs a server, as `scripts/mcp-test-env path <which>` prints it.
fn command_for(which: &str) -> Vec<String> {
    static ATLASSIAN: OnceLock<Vec<String>> = OnceLock::new();
    static EVERYTHING: OnceLock<Vec<String>> = OnceLock::new();
    let cell = if which == "atlassian" { &ATLASSIAN } else { &EVERYTHING };
    cell.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mcp-test-env");
        let output = Command::new(script).args(["path", which]).stderr(Stdio::inherit()).output().unwrap();
        assert!(output.status.success(), "scripts/mcp-test-env path {which} failed: run scripts/mcp-test-env install");
        String::from_utf8(output.stdout).unwrap().split_whitespace().map(str::to_owned).collect()
    })
    .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(which: &str, args: &[String], envs: &[(&str, String)], health: &str) -> McpProcess {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join(format!("{which}.log"));
    let command = command_for(which);
    let mut process = Command::new(&command[0]);
    process.args(&command[1..]).args(args).envs(envs.iter().map(|(k, v)| (*k, v.as_str())));
    let file = std::fs::File::create(&log).unwrap();
    let child = process.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
    let port = envs
        .iter()
        .find(|(k, _)| *k == "PORT")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| args.iter().skip_while(|a| *a != "--port").nth(1).cloned().unwrap());
    let mut server = McpProcess { child, url: format!("http://127.0.0.1:{port}/mcp"), log, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("{which} exited with {status} before it was ready:\n{}", server.log());
        }
        let probe = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_ok()
            && ureq_like_get(&format!("http://127.0.0.1:{port}{health}"));
        if probe {
            return server;
        }
        assert!(Instant::now() < deadline, "{which} not ready in 60 s:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal blocking GET that is true when anything answers with an HTTP status line.
fn ureq_like_get(url: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// mcp-atlassian, multi-user, in front of `jira_url` (also used for Confluence).
pub fn start_atlassian(jira_url: &str) -> McpProcess {
    let port = free_port().to_string();
    let args =
        ["--transport", "streamable-http", "--host", "127.0.0.1", "--port", &port, "--path", "/mcp"].map(String::from);
    let envs = [
        ("JIRA_URL", jira_url.to_owned()),
        ("CONFLUENCE_URL", jira_url.to_owned()),
        ("ATLASSIAN_OAUTH_ENABLE", "true".to_owned()),
        ("TOOLSETS", "all".to_owned()),
        ("FASTMCP_CHECK_FOR_UPDATES", "off".to_owned()),
        ("FASTMCP_SHOW_SERVER_BANNER", "false".to_owned()),
    ];
    start("atlassian", &args, &envs, "/healthz")
}

/// server-everything, a second MCP server that has nothing to do with Atlassian.
pub fn start_everything() -> McpProcess {
    let port = free_port().to_string();
    start("everything", &[], &[("PORT", port), ("HOST", "127.0.0.1".to_owned())], "/mcp")
}
