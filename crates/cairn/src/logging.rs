//! JSON log lines shaped like etcd's zap output (`level`, `ts`, `caller`, `msg`, then fields),
//! so tools that read etcd's logs, and harnesses waiting for its milestone lines, read ours.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Where log lines go.
pub enum Output {
    /// Standard error (etcd's `default`).
    Stderr,
    /// Standard output.
    Stdout,
    /// An appended file.
    File(std::fs::File),
}

struct JsonLayer {
    outputs: Mutex<Vec<Output>>,
    max_level: Level,
}

#[derive(Default)]
struct Fields {
    msg: String,
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::String(value.to_string()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.msg = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
        } else {
            self.rest.insert(field.name().replace('_', "-"), value);
        }
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "debug",
    }
}

impl<S: Subscriber> Layer<S> for JsonLayer {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        // raft-rs logs every message send at debug; keep those out of info-level logs.
        *meta.level() <= self.max_level
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        line.insert("level".into(), level_name(meta.level()).into());
        line.insert("ts".into(), timestamp().into());
        let caller = match (meta.file(), meta.line()) {
            (Some(f), Some(l)) => format!("{}:{l}", f.rsplit('/').next().unwrap_or(f)),
            _ => meta.target().to_string(),
        };
        line.insert("caller".into(), caller.into());
        line.insert("msg".into(), fields.msg.into());
        line.extend(fields.rest);
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        let mut outputs = self.outputs.lock().expect("log outputs lock");
        for out in outputs.iter_mut() {
            let _ = match out {
                Output::Stderr => std::io::stderr().write_all(text.as_bytes()),
                Output::Stdout => std::io::stdout().write_all(text.as_bytes()),
                Output::File(f) => f.write_all(text.as_bytes()),
            };
        }
    }
}

/// RFC 3339 UTC with microseconds, as zap's ISO8601 encoder prints.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let micros = now.subsec_micros();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Installs the JSON logger. `level` is etcd's `--log-level`; `outputs` its `--log-outputs`.
pub fn init(level: &str, outputs: &str) -> anyhow::Result<()> {
    let max_level = match level {
        "debug" => Level::DEBUG,
        "info" => Level::INFO,
        "warn" => Level::WARN,
        "error" | "dpanic" | "panic" | "fatal" => Level::ERROR,
        other => anyhow::bail!("--log-level: unknown level {other:?}"),
    };
    let mut outs = Vec::new();
    for o in outputs.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        outs.push(match o {
            "default" | "stderr" => Output::Stderr,
            "stdout" => Output::Stdout,
            path => Output::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("--log-outputs: cannot open {path}: {e}"))?,
            ),
        });
    }
    let layer = JsonLayer {
        outputs: Mutex::new(outs),
        max_level,
    };
    tracing_subscriber::registry().with(layer).init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(civil_from_days(20_513 - 1), (2026, 2, 28));
    }
}
