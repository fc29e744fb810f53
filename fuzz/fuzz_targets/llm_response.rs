//! An LLM's answer as the client reads it: the framing (SSE, NDJSON or one JSON body) and
//! the mapping (OpenAI's places, or a company's JSON pointers given in the input) chosen by
//! the first byte, chunk sizes by the second part, then the body, cut into those chunks.
//! Invariant: no panic, bounded tool calls, and the answer's text is exactly the text
//! pieces streamed out, in order.
#![no_main]

use futures_util::StreamExt as _;
use libfuzzer_sys::fuzz_target;
use promptops::config::model::{CustomResponse, Framing, ResponseFormat};
use promptops::llm::response::{Answer, Frame, MAX_TOOL_CALLS, Mapping, frames};
use promptops_fuzz::{chunks, parts};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let [sizes, pointers, body] = parts::<3>(rest);
    let framing = [Framing::Sse, Framing::Ndjson, Framing::Json][usize::from(mode % 3)];
    let format = if mode & 0x80 == 0 {
        ResponseFormat::Openai
    } else {
        // Pointers for a company shape: text, tool calls, finish reason, tokens, done marker.
        let pointers = String::from_utf8_lossy(pointers);
        let mut lines = pointers.lines().map(str::to_owned);
        ResponseFormat::Custom(CustomResponse {
            framing,
            text: lines.next().unwrap_or_default(),
            tool_calls: lines.next(),
            finish_reason: lines.next(),
            prompt_tokens: lines.next(),
            completion_tokens: lines.next(),
            done_marker: lines.next(),
        })
    };
    let mapping = Mapping::new(&format, framing != Framing::Json);
    let mut answer = Answer::default();
    let mut streamed = String::new();
    let mut take = |value: &Value, answer: &mut Answer| match answer.take(&mapping, value) {
        Ok(text) => {
            streamed.push_str(text.as_deref().unwrap_or(""));
            true
        }
        Err(_) => false,
    };
    if mapping.framing == Framing::Json {
        if let Ok(value) = serde_json::from_slice::<Value>(body) {
            take(&value, &mut answer);
        }
    } else {
        let pieces: Vec<Result<Vec<u8>, String>> = chunks(body, sizes).into_iter().map(|c| Ok(c.to_vec())).collect();
        let mut stream = Box::pin(frames(&mapping, futures_util::stream::iter(pieces)));
        futures_executor::block_on(async {
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Frame::Chunk(value)) if take(&value, &mut answer) => {}
                    Ok(Frame::Chunk(_) | Frame::Done) | Err(_) => break,
                }
            }
        });
    }
    let completion = answer.completion();
    assert!(completion.tool_calls.len() <= MAX_TOOL_CALLS);
    assert_eq!(completion.text, streamed);
});
