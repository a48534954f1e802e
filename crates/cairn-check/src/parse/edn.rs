//! Just enough EDN for one flat map a line: `{:k v, :k v}` with keyword, string, integer and
//! `nil` values.

/// A value in a flat EDN map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// `:name` (without the colon).
    Keyword(String),
    /// `"text"`, unescaped.
    Str(String),
    /// An integer.
    Int(i64),
    /// `nil`.
    Nil,
}

/// Parses `{:k v, ...}` into its entries, in order (keys without their colon).
pub(crate) fn parse_map(text: &str) -> Result<Vec<(String, Value)>, String> {
    let mut chars = text.trim().chars().peekable();
    if chars.next() != Some('{') {
        return Err("expected '{'".into());
    }
    let mut entries = Vec::new();
    loop {
        skip_separators(&mut chars);
        match chars.peek() {
            Some('}') => {
                chars.next();
                break;
            }
            None => return Err("unterminated map".into()),
            _ => {}
        }
        let key = match value(&mut chars)? {
            Value::Keyword(k) => k,
            other => return Err(format!("map key {other:?} is not a keyword")),
        };
        skip_separators(&mut chars);
        let v = value(&mut chars)?;
        entries.push((key, v));
    }
    skip_separators(&mut chars);
    match chars.next() {
        None => Ok(entries),
        Some(c) => Err(format!("unexpected {c:?} after the map")),
    }
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn skip_separators(chars: &mut Chars<'_>) {
    while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
}

fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '}' | '{' | '"')
}

fn atom(chars: &mut Chars<'_>) -> String {
    let mut text = String::new();
    while let Some(c) = chars.next_if(|c| !is_delimiter(*c)) {
        text.push(c);
    }
    text
}

fn value(chars: &mut Chars<'_>) -> Result<Value, String> {
    match chars.peek() {
        Some(':') => {
            chars.next();
            let name = atom(chars);
            if name.is_empty() {
                return Err("empty keyword".into());
            }
            Ok(Value::Keyword(name))
        }
        Some('"') => {
            chars.next();
            string(chars).map(Value::Str)
        }
        Some(_) => {
            let text = atom(chars);
            match text.as_str() {
                "nil" => Ok(Value::Nil),
                "" => Err("expected a value".into()),
                _ => text
                    .parse()
                    .map(Value::Int)
                    .map_err(|_| format!("unknown value {text:?}")),
            }
        }
        None => Err("expected a value".into()),
    }
}

fn string(chars: &mut Chars<'_>) -> Result<String, String> {
    let mut text = String::new();
    loop {
        match chars.next() {
            Some('"') => return Ok(text),
            Some('\\') => match chars.next() {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('r') => text.push('\r'),
                Some(c @ ('"' | '\\')) => text.push(c),
                other => return Err(format!("bad escape {other:?}")),
            },
            Some(c) => text.push(c),
            None => return Err("unterminated string".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_map, Value};

    #[test]
    fn flat_maps() {
        let entries = parse_map(r#"{:process 12, :type :ok, :key "a \"b\"", :value nil}"#).unwrap();
        assert_eq!(
            entries,
            vec![
                ("process".into(), Value::Int(12)),
                ("type".into(), Value::Keyword("ok".into())),
                ("key".into(), Value::Str("a \"b\"".into())),
                ("value".into(), Value::Nil),
            ]
        );
        assert_eq!(parse_map("{}").unwrap(), vec![]);
        assert!(parse_map("{:a 1").is_err());
        assert!(parse_map("{:a}").is_err());
        assert!(parse_map("{1 2}").is_err());
        assert!(parse_map("{:a \"x}").is_err());
        assert!(parse_map("{:a 1} x").is_err());
    }
}
