//! The tests' stub Jira Server/DC + Confluence as a program, for the browser tests and for
//! running mcp-atlassian by hand: `cargo run --example stub_atlassian` prints the base URL
//! (for `JIRA_URL` and `CONFLUENCE_URL`) on the first line of stdout, then one line on stderr
//! per request. Users: `alice-pat` (alice), `bob-pat` (bob); see tests/support/stub_atlassian.rs.
//! `STUB_ATLASSIAN_ADDR` picks the address (default `127.0.0.1:0`, any free port).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/support/stub_atlassian.rs"]
mod stub_atlassian;

use std::io::Write as _;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let addr = std::env::var("STUB_ATLASSIAN_ADDR").unwrap_or_else(|_| "127.0.0.1:0".to_owned());
    let stub = stub_atlassian::StubAtlassian::start_on(&addr).await;
    println!("{}", stub.base);
    std::io::stdout().flush().unwrap();
    // Log each request as it arrives (the stub records them; print the new ones).
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let requests = stub.requests();
        for r in &requests[seen..] {
            let query = if r.query.is_empty() { String::new() } else { format!("?{}", r.query) };
            let auth = r.authorization.as_deref().unwrap_or("-");
            eprintln!("stub_atlassian: {} {}{} [{}] -> {}", r.method, r.path, query, auth, r.status);
        }
        seen = requests.len();
    }
}
