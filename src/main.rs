//! The `promptops` binary: parse the command line, hand over to the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    promptops::cli::run(promptops::cli::Cli::parse()).await
}
