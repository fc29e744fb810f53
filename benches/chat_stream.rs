//! Benchmark of streaming chat (see the chat issue): time to first token direct vs through
//! promptops, open streams and memory. Written by the benchmark work; prints figures only.
#![allow(clippy::print_stdout)]

fn main() {
    println!("chat_stream: not measured yet");
}
