//! Jepsen's etcd register logs: `INFO  jepsen.util - PROCESS  :TYPE  :F  VALUE` a line.
//!
//! `:invoke` starts an operation of PROCESS; the next line of that process ends it. `:ok`
//! gives its result; `:fail :cas` is a compare that did not match; `:info` and anything
//! `:timed-out` are unknown outcomes, as is an operation with no ending line. Another `:fail`
//! means the operation did not happen, so it is left out.

use crate::error::ParseError;
use crate::history::History;
use crate::models::{RegisterInput, RegisterOutput};
use crate::recorder::Recorder;

/// What the `:F` and value fields of a line say.
enum Event {
    Read(Option<i64>),
    Write(i64),
    Cas(i64, i64),
    TimedOut,
}

/// Parses a Jepsen etcd log into a register history.
pub fn parse_jepsen(text: &str) -> Result<History<RegisterInput, RegisterOutput>, ParseError> {
    let mut recorder = Recorder::new();
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let body = line.split_once(" - ").map_or(line, |(_, body)| body).trim();
        if body.is_empty() {
            continue;
        }
        let mut fields = body.split_whitespace();
        let (Some(process), Some(kind), Some(f)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(ParseError::syntax(
                number,
                "expected PROCESS :TYPE :F VALUE",
            ));
        };
        let value = fields.collect::<Vec<_>>().join(" ");
        let client: u64 = process
            .parse()
            .map_err(|_| ParseError::syntax(number, format!("bad process {process:?}")))?;
        let event = parse_event(f, &value).map_err(|reason| ParseError::syntax(number, reason))?;
        let history_error = |source| ParseError::History {
            line: number,
            source,
        };
        if kind == ":invoke" {
            let input = match event {
                Event::Read(_) => RegisterInput::Read,
                Event::Write(v) => RegisterInput::Write(v),
                Event::Cas(from, to) => RegisterInput::Cas { from, to },
                Event::TimedOut => return Err(ParseError::syntax(number, "invoke of a timeout")),
            };
            recorder.invoke(client, input).map_err(history_error)?;
            continue;
        }
        match recorder.in_flight(client) {
            Some(input) if same_function(input, &event) => {}
            Some(_) => {
                return Err(ParseError::syntax(
                    number,
                    "ends an operation of another kind",
                ));
            }
            None => {
                return Err(ParseError::syntax(
                    number,
                    "ends an operation never invoked",
                ));
            }
        }
        match (kind, event) {
            (":info", _) | (":fail", Event::TimedOut) => recorder.complete_unknown(client),
            (":ok", Event::Read(seen)) => recorder.complete(client, RegisterOutput::Read(seen)),
            (":ok", Event::Write(_)) => recorder.complete(client, RegisterOutput::Write),
            (":ok", Event::Cas(..)) => {
                recorder.complete(client, RegisterOutput::Cas { succeeded: true })
            }
            (":fail", Event::Cas(..)) => {
                recorder.complete(client, RegisterOutput::Cas { succeeded: false })
            }
            (":fail", _) => recorder.discard(client).map(|_| ()),
            (":ok", Event::TimedOut) => {
                return Err(ParseError::syntax(number, ":ok with a timeout"));
            }
            (other, _) => {
                return Err(ParseError::syntax(
                    number,
                    format!("unknown type {other:?}"),
                ));
            }
        }
        .map_err(history_error)?;
    }
    Ok(recorder.finish())
}

/// Whether an ending event is of the same function as the input in flight.
fn same_function(input: &RegisterInput, event: &Event) -> bool {
    matches!(
        (input, event),
        (_, Event::TimedOut)
            | (RegisterInput::Read, Event::Read(_))
            | (RegisterInput::Write(_), Event::Write(_))
            | (RegisterInput::Cas { .. }, Event::Cas(..))
    )
}

fn parse_event(f: &str, value: &str) -> Result<Event, String> {
    if value == ":timed-out" {
        return match f {
            ":read" | ":write" | ":cas" => Ok(Event::TimedOut),
            _ => Err(format!("unknown function {f:?}")),
        };
    }
    match f {
        ":read" => match value {
            "nil" | "" => Ok(Event::Read(None)),
            v => int(v).map(|v| Event::Read(Some(v))),
        },
        ":write" => int(value).map(Event::Write),
        ":cas" => {
            let inner = value
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .ok_or_else(|| format!("bad cas value {value:?}"))?;
            match inner.split_whitespace().collect::<Vec<_>>()[..] {
                [from, to] => Ok(Event::Cas(int(from)?, int(to)?)),
                _ => Err(format!("bad cas value {value:?}")),
            }
        }
        _ => Err(format!("unknown function {f:?}")),
    }
}

fn int(text: &str) -> Result<i64, String> {
    text.parse().map_err(|_| format!("bad integer {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::parse_jepsen;
    use crate::history::Outcome;
    use crate::models::{RegisterInput as I, RegisterOutput as O};

    #[test]
    fn parses_every_kind_of_line() {
        let log = "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n\
                   INFO  jepsen.util - 1\t:invoke\t:cas\t[3 0]\n\
                   INFO  jepsen.util - 2   :invoke :write  4\n\
                   INFO  jepsen.util - 0\t:ok\t:read\t3\n\
                   INFO  jepsen.util - 1\t:fail\t:cas\t[3 0]\n\
                   INFO  jepsen.util - 2   :info   :write  :timed-out\n\
                   INFO  jepsen.util - 3\t:invoke\t:write\t1\n\
                   \n";
        let history = parse_jepsen(log).unwrap();
        let ops = history.ops();
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[0].input, I::Read);
        assert_eq!(
            ops[0].outcome,
            Outcome::Returned {
                at: 3,
                output: O::Read(Some(3))
            }
        );
        assert_eq!(ops[1].input, I::Cas { from: 3, to: 0 });
        assert_eq!(ops[1].output(), Some(&O::Cas { succeeded: false }));
        assert_eq!(ops[2].input, I::Write(4));
        assert!(ops[2].is_unknown());
        assert_eq!((ops[3].client, ops[3].call), (3, 5));
        assert!(ops[3].is_unknown());
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(parse_jepsen("INFO  jepsen.util - 0 :ok :read 1").is_err());
        assert!(parse_jepsen("INFO  jepsen.util - x :invoke :read nil").is_err());
        assert!(parse_jepsen("INFO  jepsen.util - 0 :invoke :cas [1]").is_err());
        let busy =
            "INFO  jepsen.util - 0 :invoke :read nil\nINFO  jepsen.util - 0 :invoke :read nil";
        let err = parse_jepsen(busy).unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }
}
