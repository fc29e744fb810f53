//! Reading an LLM's answer: how a streamed body is cut into chunks (SSE or NDJSON), where
//! text, tool calls, finish reason and usage sit in each chunk (OpenAI's places, or a
//! company LLM's JSON pointers), and how the chunks add up to one answer. Everything here
//! is untrusted input from the endpoint: nothing in it may panic or allocate without bound.

use std::fmt::Display;

use eventsource_stream::Eventsource as _;
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use serde::Serialize;
use serde_json::Value;

use crate::config::model::{CustomResponse, Framing, ResponseFormat};

/// Most tool calls one answer may ask for; a chunk naming a higher index is malformed.
pub const MAX_TOOL_CALLS: usize = 128;

/// One finished tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text).
    pub arguments: String,
}

/// Token counts as the endpoint reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// A complete answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    /// Attempts it took (1 = no retry).
    pub attempts: u32,
}

/// Where the parts of an answer are, for one request.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub framing: Framing,
    text: String,
    tool_calls: Option<String>,
    finish_reason: Option<String>,
    prompt_tokens: Option<String>,
    completion_tokens: Option<String>,
    done_marker: Option<String>,
}

impl Mapping {
    pub fn new(format: &ResponseFormat, stream: bool) -> Self {
        match format {
            ResponseFormat::Openai if stream => Self {
                framing: Framing::Sse,
                text: "/choices/0/delta/content".into(),
                tool_calls: Some("/choices/0/delta/tool_calls".into()),
                finish_reason: Some("/choices/0/finish_reason".into()),
                prompt_tokens: Some("/usage/prompt_tokens".into()),
                completion_tokens: Some("/usage/completion_tokens".into()),
                done_marker: Some("[DONE]".into()),
            },
            ResponseFormat::Openai => Self {
                framing: Framing::Json,
                text: "/choices/0/message/content".into(),
                tool_calls: Some("/choices/0/message/tool_calls".into()),
                finish_reason: Some("/choices/0/finish_reason".into()),
                prompt_tokens: Some("/usage/prompt_tokens".into()),
                completion_tokens: Some("/usage/completion_tokens".into()),
                done_marker: None,
            },
            ResponseFormat::Custom(CustomResponse {
                framing,
                text,
                tool_calls,
                finish_reason,
                prompt_tokens,
                completion_tokens,
                done_marker,
            }) => Self {
                framing: *framing,
                text: text.clone(),
                tool_calls: tool_calls.clone(),
                finish_reason: finish_reason.clone(),
                prompt_tokens: prompt_tokens.clone(),
                completion_tokens: completion_tokens.clone(),
                done_marker: done_marker.clone(),
            },
        }
    }

    pub fn is_done_marker(&self, data: &str) -> bool {
        self.done_marker.as_deref().is_some_and(|m| data.trim() == m)
    }

    /// What one chunk (or the whole JSON body) says.
    pub fn read(&self, chunk: &Value) -> Chunk {
        let at = |pointer: &Option<String>| pointer.as_deref().and_then(|p| chunk.pointer(p));
        Chunk {
            text: chunk.pointer(&self.text).and_then(Value::as_str).map(str::to_owned),
            tool_calls: at(&self.tool_calls).and_then(Value::as_array).cloned().unwrap_or_default(),
            finish_reason: at(&self.finish_reason).and_then(Value::as_str).map(str::to_owned),
            prompt_tokens: at(&self.prompt_tokens).and_then(Value::as_u64),
            completion_tokens: at(&self.completion_tokens).and_then(Value::as_u64),
        }
    }
}

/// The parts found in one chunk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    pub text: Option<String>,
    /// Tool-call deltas in OpenAI's shape: `{index, id?, function: {name?, arguments?}}`.
    pub tool_calls: Vec<Value>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// One piece of a streamed body.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON chunk.
    Chunk(Value),
    /// The endpoint's end marker (`[DONE]` for OpenAI).
    Done,
}

/// Why a streamed body could not be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The transport failed or the framing itself was broken.
    #[error("{0}")]
    Interrupted(String),
    /// A frame that is not JSON.
    #[error("{0}")]
    Malformed(String),
}

/// The frames of a streamed body (`Sse` or `Ndjson`; a `Json` body is one value, read
/// whole). Blank events and lines are skipped.
pub fn frames<S, B, E>(
    mapping: &Mapping,
    body: S,
) -> impl Stream<Item = Result<Frame, FrameError>> + Send + use<S, B, E>
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: Display + Send + 'static,
{
    let mapping = mapping.clone();
    let pieces = match mapping.framing {
        Framing::Sse => body
            .eventsource()
            .map(|event| event.map(|event| event.data).map_err(|e| FrameError::Interrupted(e.to_string())))
            .boxed(),
        Framing::Ndjson | Framing::Json => ndjson_lines(body).boxed(),
    };
    pieces.try_filter_map(move |data| {
        let frame = mapping.frame(&data);
        async move { frame }
    })
}

/// The lines of a body, without their line ends; the last line need not end in one.
fn ndjson_lines<S, B, E>(body: S) -> impl Stream<Item = Result<String, FrameError>> + Send
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: Display + Send + 'static,
{
    let body = body.map_err(|e| FrameError::Interrupted(e.to_string())).boxed();
    futures_util::stream::try_unfold((body, Vec::<u8>::new(), false), |(mut body, mut buffer, mut ended)| async move {
        loop {
            if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                return Ok(Some((String::from_utf8_lossy(&line).into_owned(), (body, buffer, ended))));
            }
            if ended {
                let last = (!buffer.is_empty()).then(|| String::from_utf8_lossy(&buffer).into_owned());
                return Ok(last.map(|line| (line, (body, Vec::new(), true))));
            }
            match body.next().await {
                Some(piece) => buffer.extend_from_slice(piece?.as_ref()),
                None => ended = true,
            }
        }
    })
}

impl Mapping {
    /// What one event's data or one line is: a chunk, the end marker, or nothing.
    pub fn frame(&self, data: &str) -> Result<Option<Frame>, FrameError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(None);
        }
        if self.is_done_marker(data) {
            return Ok(Some(Frame::Done));
        }
        serde_json::from_str(data)
            .map(|value| Some(Frame::Chunk(value)))
            .map_err(|e| FrameError::Malformed(format!("{e} in {:?}", clip(data))))
    }
}

/// At most the first 200 characters of `text`, for error messages.
pub fn clip(text: &str) -> &str {
    crate::text::prefix(text, 200).0
}

/// An answer as it builds up, chunk by chunk.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    completion: Completion,
    /// Tool-call fragments by index: (id, name, arguments).
    calls: Vec<(String, String, String)>,
}

impl Answer {
    /// Adds what `chunk` says and returns its new text, if any. A tool call with an
    /// index past [`MAX_TOOL_CALLS`] is refused (the answer is unchanged).
    pub fn take(&mut self, mapping: &Mapping, chunk: &Value) -> Result<Option<String>, String> {
        let Chunk { text, tool_calls, finish_reason, prompt_tokens, completion_tokens } = mapping.read(chunk);
        let mut calls = Vec::with_capacity(tool_calls.len());
        for call in &tool_calls {
            let index = match call.get("index").map(Value::as_u64) {
                None => self.calls.len() + calls.len(),
                Some(Some(index)) => usize::try_from(index).unwrap_or(usize::MAX),
                Some(None) => return Err(format!("a tool call's index is not a number: {}", call["index"])),
            };
            if index >= MAX_TOOL_CALLS {
                return Err(format!("a tool call's index is {index}; at most {MAX_TOOL_CALLS} calls are read"));
            }
            calls.push((index, call));
        }
        for (index, call) in calls {
            if self.calls.len() <= index {
                self.calls.resize(index + 1, Default::default());
            }
            let slot = &mut self.calls[index];
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                id.clone_into(&mut slot.0);
            }
            if let Some(function) = call.get("function") {
                // OpenAI sends the name once; llama.cpp repeats it in every chunk; others
                // could split it. Append only what is new.
                if let Some(name) = function.get("name").and_then(Value::as_str)
                    && slot.1 != name
                {
                    slot.1.push_str(name);
                }
                match function.get("arguments") {
                    Some(Value::String(arguments)) => slot.2.push_str(arguments),
                    Some(other @ Value::Object(_)) => slot.2.push_str(&other.to_string()),
                    _ => {}
                }
            }
        }
        if let Some(reason) = finish_reason {
            self.completion.finish_reason = Some(reason);
        }
        let usage = &mut self.completion.usage;
        usage.prompt_tokens = prompt_tokens.or(usage.prompt_tokens);
        usage.completion_tokens = completion_tokens.or(usage.completion_tokens);
        let text = text.filter(|t| !t.is_empty());
        if let Some(text) = &text {
            self.completion.text.push_str(text);
        }
        Ok(text)
    }

    /// Whether any text or tool call has arrived.
    pub fn has_output(&self) -> bool {
        !self.completion.text.is_empty() || !self.calls.is_empty()
    }

    pub fn finish_reason(&self) -> Option<&str> {
        self.completion.finish_reason.as_deref()
    }

    /// The answer so far; tool calls without a name are dropped, missing ids made up.
    pub fn completion(&self) -> Completion {
        let tool_calls = self
            .calls
            .iter()
            .enumerate()
            .filter(|(_, (_, name, _))| !name.is_empty())
            .map(|(i, (id, name, arguments))| ToolCall {
                id: if id.is_empty() { format!("call_{i}") } else { id.clone() },
                name: name.clone(),
                arguments: arguments.clone(),
            })
            .collect();
        Completion { tool_calls, ..self.completion.clone() }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_openai_stream_chunks() {
        let mapping = Mapping::new(&ResponseFormat::Openai, true);
        let chunk = mapping.read(&json!({"choices": [{"delta": {"content": "Hel"}, "finish_reason": null}]}));
        assert_eq!(chunk.text.as_deref(), Some("Hel"));
        let last = mapping.read(&json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}));
        assert_eq!((last.prompt_tokens, last.completion_tokens), (Some(7), Some(3)));
        assert!(mapping.is_done_marker(" [DONE]"));
    }

    #[test]
    fn reads_a_company_shape_through_pointers() {
        let format = ResponseFormat::Custom(CustomResponse {
            framing: Framing::Ndjson,
            text: "/out/text".into(),
            tool_calls: None,
            finish_reason: Some("/out/stop".into()),
            prompt_tokens: None,
            completion_tokens: Some("/meter/tokens".into()),
            done_marker: None,
        });
        let mapping = Mapping::new(&format, true);
        let chunk = mapping.read(&json!({"out": {"text": "a", "stop": "end"}, "meter": {"tokens": 1}}));
        assert_eq!(chunk.text.as_deref(), Some("a"));
        assert_eq!(chunk.finish_reason.as_deref(), Some("end"));
        assert_eq!(chunk.completion_tokens, Some(1));
        assert_eq!(mapping.framing, Framing::Ndjson);
    }

    async fn collect(mapping: &Mapping, pieces: &[&str]) -> Vec<Result<Frame, FrameError>> {
        let body: Vec<Result<Vec<u8>, String>> = pieces.iter().map(|p| Ok(p.as_bytes().to_vec())).collect();
        frames(mapping, futures_util::stream::iter(body)).collect().await
    }

    #[tokio::test]
    async fn sse_events_split_anywhere_are_read_whole() {
        let mapping = Mapping::new(&ResponseFormat::Openai, true);
        let got = collect(&mapping, &["da", "ta: {\"a\"", ":1}\n", "\ndata: [DO", "NE]\n\n"]).await;
        assert_eq!(got, vec![Ok(Frame::Chunk(json!({"a": 1}))), Ok(Frame::Done)]);
    }

    #[tokio::test]
    async fn the_last_ndjson_line_needs_no_line_end() {
        let format = ResponseFormat::Custom(CustomResponse {
            framing: Framing::Ndjson,
            text: "/t".into(),
            tool_calls: None,
            finish_reason: None,
            prompt_tokens: None,
            completion_tokens: None,
            done_marker: None,
        });
        let mapping = Mapping::new(&format, true);
        let got = collect(&mapping, &["{\"t\":1}\n\n{\"t\"", ":2}"]).await;
        assert_eq!(got, vec![Ok(Frame::Chunk(json!({"t": 1}))), Ok(Frame::Chunk(json!({"t": 2})))]);
        assert!(matches!(collect(&mapping, &["nope\n"]).await[..], [Err(FrameError::Malformed(_))]));
    }

    /// A hostile endpoint naming tool call 10^12 once made the client allocate for all of
    /// them; the index is bounded and the chunk refused.
    #[test]
    fn a_tool_call_index_past_the_limit_is_refused_without_allocating() {
        let mapping = Mapping::new(&ResponseFormat::Openai, true);
        let mut answer = Answer::default();
        let call = |index: Value| json!({"choices": [{"delta": {"tool_calls": [{"index": index, "function": {"name": "x"}}]}}]});
        assert!(answer.take(&mapping, &call(json!(1_000_000_000_000u64))).is_err());
        assert!(answer.take(&mapping, &call(json!(u64::MAX))).is_err());
        assert!(answer.take(&mapping, &call(json!("7"))).is_err());
        assert!(!answer.has_output(), "a refused chunk changes nothing");
        answer.take(&mapping, &call(json!(MAX_TOOL_CALLS - 1))).expect("the last allowed index");
        assert_eq!(answer.completion().tool_calls.len(), 1);
    }
}
