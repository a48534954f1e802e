//! Key-value histories, one EDN map an event:
//! `{:process P, :type :invoke|:ok|:fail|:info, :f :get|:put|:append, :key "K", :value V}`.
//!
//! `:ok` ends the process's operation with its result (a get's `:value` is the whole string,
//! `nil` read as `""`); `:info` ends it with an unknown outcome, as does the end of the file;
//! `:fail` means it did not happen, so it is left out.

use super::edn::{parse_map, Value};
use crate::error::ParseError;
use crate::history::History;
use crate::models::{KvInput, KvOutput};
use crate::recorder::Recorder;

/// Parses a key-value history.
pub fn parse_kv(text: &str) -> Result<History<KvInput, KvOutput>, ParseError> {
    let mut recorder = Recorder::new();
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event = Event::parse(line).map_err(|reason| ParseError::syntax(number, reason))?;
        let history_error = |source| ParseError::History {
            line: number,
            source,
        };
        if event.kind == "invoke" {
            let input = match event.f.as_str() {
                "get" => KvInput::Get { key: event.key },
                "put" => KvInput::Put {
                    key: event.key,
                    value: event.value.unwrap_or_default(),
                },
                "append" => KvInput::Append {
                    key: event.key,
                    value: event.value.unwrap_or_default(),
                },
                other => {
                    return Err(ParseError::syntax(number, format!("unknown :f {other:?}")));
                }
            };
            recorder
                .invoke(event.client, input)
                .map_err(history_error)?;
            continue;
        }
        let Some(input) = recorder.in_flight(event.client) else {
            return Err(ParseError::syntax(
                number,
                "ends an operation never invoked",
            ));
        };
        let same = matches!(
            (input, event.f.as_str()),
            (KvInput::Get { .. }, "get")
                | (KvInput::Put { .. }, "put")
                | (KvInput::Append { .. }, "append")
        );
        if !same || input.key() != event.key {
            return Err(ParseError::syntax(
                number,
                "ends an operation of another kind or key",
            ));
        }
        match event.kind.as_str() {
            "ok" => {
                let output = match event.f.as_str() {
                    "get" => KvOutput::Get(event.value.unwrap_or_default()),
                    "put" => KvOutput::Put,
                    _ => KvOutput::Append,
                };
                recorder.complete(event.client, output)
            }
            "info" => recorder.complete_unknown(event.client),
            "fail" => recorder.discard(event.client).map(|_| ()),
            other => {
                return Err(ParseError::syntax(
                    number,
                    format!("unknown :type {other:?}"),
                ));
            }
        }
        .map_err(history_error)?;
    }
    Ok(recorder.finish())
}

/// The fields of one line.
struct Event {
    client: u64,
    kind: String,
    f: String,
    key: String,
    value: Option<String>,
}

impl Event {
    fn parse(line: &str) -> Result<Event, String> {
        let (mut client, mut kind, mut f, mut key, mut value) = (None, None, None, None, None);
        for (name, v) in parse_map(line)? {
            match (name.as_str(), v) {
                ("process", Value::Int(p)) if p >= 0 => client = Some(p as u64),
                ("type", Value::Keyword(k)) => kind = Some(k),
                ("f", Value::Keyword(k)) => f = Some(k),
                ("key", Value::Str(k)) => key = Some(k),
                ("key", Value::Int(k)) => key = Some(k.to_string()),
                ("value", Value::Str(s)) => value = Some(s),
                ("value", Value::Int(i)) => value = Some(i.to_string()),
                ("value", Value::Nil) => {}
                (name, v) => return Err(format!("unexpected :{name} {v:?}")),
            }
        }
        Ok(Event {
            client: client.ok_or("no :process")?,
            kind: kind.ok_or("no :type")?,
            f: f.ok_or("no :f")?,
            key: key.ok_or("no :key")?,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_kv;
    use crate::models::{KvInput, KvOutput};

    #[test]
    fn parses_events() {
        let text = r#"{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}
{:process 1, :type :invoke, :f :get, :key "0", :value nil}
{:process 0, :type :ok, :f :append, :key "0", :value "x 0 0 y"}
{:process 1, :type :ok, :f :get, :key "0", :value ""}
{:process 2, :type :invoke, :f :put, :key "1", :value "v"}
"#;
        let history = parse_kv(text).unwrap();
        let ops = history.ops();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            ops[0].input,
            KvInput::Append {
                key: "0".into(),
                value: "x 0 0 y".into()
            }
        );
        assert_eq!(ops[0].return_time(), Some(2));
        assert_eq!(ops[1].output(), Some(&KvOutput::Get(String::new())));
        assert!(ops[2].is_unknown());
    }

    #[test]
    fn rejects_mismatched_events() {
        let text = r#"{:process 0, :type :invoke, :f :get, :key "0", :value nil}
{:process 0, :type :ok, :f :get, :key "1", :value ""}"#;
        assert!(parse_kv(text).is_err());
        assert!(parse_kv(r#"{:process 0, :type :ok, :f :get, :key "0"}"#).is_err());
        assert!(parse_kv(r#"{:process 0, :f :get, :key "0"}"#).is_err());
    }
}
