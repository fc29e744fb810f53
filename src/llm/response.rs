//! Reading an LLM's answer: where text, tool calls, finish reason and usage sit in each
//! chunk (OpenAI's places, or a company LLM's JSON pointers), and how chunks are framed.

use serde_json::Value;

use crate::config::model::{CustomResponse, Framing, ResponseFormat};

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
}
