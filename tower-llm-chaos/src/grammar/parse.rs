//! Parsing the text form: faults, status options, profile clauses.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};

use super::values::{decode, decode_text, parse_count, parse_duration, parse_rate, parse_u64};
use super::{ParseError, FAULTS, MAX_NESTING, OPTIONS};
use crate::fault::{ErrorReply, ErrorShape, Fault, RetryAfter};
use crate::profile::{FaultProfile, ScheduledFault};

pub(crate) fn parse_fault(text: &str) -> Result<Fault, ParseError> {
    parse_fault_at(text, 0)
}

fn parse_fault_at(text: &str, depth: usize) -> Result<Fault, ParseError> {
    let text = text.trim();
    let (name, args) = match text.split_once(':') {
        Some((name, args)) => (name.trim(), Some(args)),
        None => (text, None),
    };
    let fault = match name {
        "" => {
            return Err(ParseError::new(
                text,
                format!("expected a fault: one of {FAULTS}"),
            ))
        }
        "healthy" => no_args(name, args, Fault::Healthy)?,
        "hang" => no_args(name, args, Fault::Hang)?,
        "reset" => no_args(name, args, Fault::ResetBeforeHeaders)?,
        "no-done" => no_args(name, args, Fault::NoDone)?,
        "first-event-error" => no_args(name, args, Fault::FirstEventError)?,
        "context-length-exceeded" => no_args(name, args, Fault::ContextLengthExceeded)?,
        "content-policy-violation" => no_args(name, args, Fault::ContentPolicyViolation)?,
        "latency" => Fault::Latency(one_arg(name, args, "<duration>", parse_duration)?),
        "slow-first-token" => {
            Fault::SlowFirstToken(one_arg(name, args, "<duration>", parse_duration)?)
        }
        "cut-after" => Fault::CutAfter(one_arg(name, args, "<n>", parse_count)?),
        "stall-after" => Fault::Stall {
            after: one_arg(name, args, "<n>", parse_count)?,
        },
        "malformed-event" => Fault::MalformedEvent {
            at: one_arg(name, args, "<n>", parse_count)?,
        },
        "status" => Fault::Status(parse_status(args)?),
        "flapping" => {
            let usage = "expected `flapping:<duration>:<fault>`";
            let args = args.ok_or_else(|| ParseError::new(text, usage))?;
            let (down_for, inner) = args
                .split_once(':')
                .ok_or_else(|| ParseError::new(text, usage))?;
            if depth >= MAX_NESTING {
                return Err(ParseError::new(
                    text,
                    format!("`flapping` nested more than {MAX_NESTING} deep"),
                ));
            }
            Fault::flapping(parse_duration(down_for)?, parse_fault_at(inner, depth + 1)?)
        }
        "fraction" => {
            let usage = "expected `fraction:<rate>[:seed=<n>]:<fault>`";
            let args = args.ok_or_else(|| ParseError::new(text, usage))?;
            let (rate, rest) = args
                .split_once(':')
                .ok_or_else(|| ParseError::new(text, usage))?;
            let per_mille = parse_rate(rate)?;
            // No fault's name contains `=`, so `seed=` here cannot be the start of the fault.
            let (seed, inner) = match rest.trim_start().strip_prefix("seed") {
                Some(seed) if seed.trim_start().starts_with('=') => {
                    let (seed, inner) = seed
                        .trim_start()
                        .trim_start_matches('=')
                        .split_once(':')
                        .ok_or_else(|| ParseError::new(text, usage))?;
                    (parse_u64(seed, "seed")?, inner)
                }
                _ => (0, rest),
            };
            if depth >= MAX_NESTING {
                return Err(ParseError::new(
                    text,
                    format!("`fraction` nested more than {MAX_NESTING} deep"),
                ));
            }
            Fault::fraction(per_mille, parse_fault_at(inner, depth + 1)?).with_seed(seed)
        }
        other => {
            return Err(ParseError::new(
                other,
                format!("unknown fault; expected one of {FAULTS}"),
            ))
        }
    };
    Ok(fault)
}

fn no_args(name: &str, args: Option<&str>, fault: Fault) -> Result<Fault, ParseError> {
    match args {
        None => Ok(fault),
        Some(args) => Err(ParseError::new(
            args.trim(),
            format!("`{name}` takes no arguments"),
        )),
    }
}

fn one_arg<T>(
    name: &str,
    args: Option<&str>,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let args = args.ok_or_else(|| ParseError::new(name, format!("expected `{name}:{what}`")))?;
    if let Some((_, extra)) = args.split_once(':') {
        return Err(ParseError::new(
            extra.trim(),
            format!("unexpected argument; `{name}` takes one: `{name}:{what}`"),
        ));
    }
    parse(args)
}

fn parse_status(args: Option<&str>) -> Result<ErrorReply, ParseError> {
    let args = args.ok_or_else(|| ParseError::new("status", "expected `status:<code>`"))?;
    let mut parts = args.split(':');
    let code_text = parts.next().unwrap_or_default().trim();
    let code: u16 = code_text
        .parse()
        .map_err(|_| ParseError::new(code_text, "expected an HTTP status code"))?;
    if !(200..=999).contains(&code) {
        return Err(ParseError::new(code_text, "status must be in 200..=999"));
    }
    let mut reply = ErrorReply::new(code);
    let mut seen = Seen::default();
    for option in parts {
        reply = status_option(reply, option.trim(), &mut seen)?;
    }
    Ok(reply)
}

/// The options of a `status:` fault given so far (each but `header` may appear once).
#[derive(Default)]
struct Seen {
    delay: bool,
    shape: bool,
    code: bool,
    message: bool,
}

/// Apply one `<option>=<value>` of a `status:` fault to `reply`.
fn status_option(
    mut reply: ErrorReply,
    option: &str,
    seen: &mut Seen,
) -> Result<ErrorReply, ParseError> {
    let (key, value) = option.split_once('=').ok_or_else(|| {
        ParseError::new(
            option,
            format!("expected `<option>=<value>` with one of {OPTIONS}"),
        )
    })?;
    let key = key.trim();
    let once = |seen: &mut bool| {
        if std::mem::replace(seen, true) {
            Err(ParseError::new(option, "given twice"))
        } else {
            Ok(())
        }
    };
    match key {
        "retry-after" => {
            once(&mut seen.delay)?;
            reply = reply.retry_after(RetryAfter::Seconds(parse_u64(value, "seconds")?));
        }
        "retry-after-ms" => {
            once(&mut seen.delay)?;
            reply = reply.retry_after(RetryAfter::Millis(parse_u64(value, "milliseconds")?));
        }
        "retry-after-date" => {
            once(&mut seen.delay)?;
            reply = reply.retry_after(parse_date(value)?);
        }
        "shape" => {
            once(&mut seen.shape)?;
            let value = value.trim();
            let shape = ErrorShape::ALL
                .into_iter()
                .find(|s| s.as_str() == value)
                .ok_or_else(|| {
                    ParseError::new(
                        value,
                        "unknown shape; expected openai, anthropic, gemini, groq or openrouter",
                    )
                })?;
            reply = reply.shape(shape);
        }
        "code" => {
            once(&mut seen.code)?;
            reply = reply.code(decode_text(value)?);
        }
        "message" => {
            once(&mut seen.message)?;
            reply = reply.message(decode_text(value)?);
        }
        "header" => {
            let (name, value) = value
                .split_once('=')
                .ok_or_else(|| ParseError::new(option, "expected `header=<name>=<value>`"))?;
            let name_bytes = decode(name.trim())?;
            let name = HeaderName::from_bytes(&name_bytes)
                .map_err(|_| ParseError::new(name.trim(), "not a valid header name"))?;
            let value_bytes = decode(value.trim())?;
            let value = HeaderValue::from_bytes(&value_bytes)
                .map_err(|_| ParseError::new(value.trim(), "not a valid header value"))?;
            reply = reply.header(name, value);
        }
        other => {
            return Err(ParseError::new(
                other,
                format!("unknown status option; expected one of {OPTIONS}"),
            ))
        }
    }
    Ok(reply)
}

fn parse_date(value: &str) -> Result<RetryAfter, ParseError> {
    let value = value.trim();
    let usage = "expected `@<unix seconds>` or `+<duration>`";
    if let Some(delay) = value.strip_prefix('+') {
        return Ok(RetryAfter::DateIn(parse_duration(delay)?));
    }
    let secs = value
        .strip_prefix('@')
        .ok_or_else(|| ParseError::new(value, usage))?;
    let secs: i64 = secs
        .trim()
        .parse()
        .map_err(|_| ParseError::new(value, usage))?;
    let at = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    at.map(RetryAfter::date)
        .ok_or_else(|| ParseError::new(value, "date out of range"))
}

enum Clause {
    Window(ScheduledFault),
    Route(String, Fault),
    Default(Fault),
}

pub(crate) fn parse_profile(text: &str) -> Result<FaultProfile, ParseError> {
    let mut profile = FaultProfile::default();
    let mut default_seen = false;
    for (index, clause) in text.split([';', '\n']).enumerate() {
        let clause = clause.trim();
        if clause.is_empty() {
            continue;
        }
        let number = index + 1;
        match parse_clause(clause).map_err(|e| e.in_clause(number, clause))? {
            Clause::Window(window) => profile.schedule.push(window),
            Clause::Route(model, fault) => {
                if profile.routes.iter().any(|(m, _)| *m == model) {
                    return Err(
                        ParseError::new(&model, "model routed twice").in_clause(number, clause)
                    );
                }
                profile.routes.push((model, fault));
            }
            Clause::Default(fault) => {
                if std::mem::replace(&mut default_seen, true) {
                    return Err(
                        ParseError::new(clause, "default given twice").in_clause(number, clause)
                    );
                }
                profile.default = fault;
            }
        }
    }
    Ok(profile)
}

fn parse_clause(clause: &str) -> Result<Clause, ParseError> {
    if let Some(rest) = clause.strip_prefix("default") {
        if let Some(fault) = rest.trim_start().strip_prefix('=') {
            return Ok(Clause::Default(parse_fault(fault)?));
        }
    }
    if let Some(rest) = clause.strip_prefix("model") {
        if rest.starts_with(char::is_whitespace) {
            let (model, fault) = rest
                .split_once('=')
                .ok_or_else(|| ParseError::new(clause, "expected `model <name>=<fault>`"))?;
            let model = model.trim();
            let name = String::from_utf8(decode(model)?)
                .map_err(|_| ParseError::new(model, "percent escapes are not UTF-8"))?;
            if name.is_empty() {
                return Err(ParseError::new(clause, "expected `model <name>=<fault>`"));
            }
            return Ok(Clause::Route(name, parse_fault(fault)?));
        }
    }
    if let Some((head, fault)) = clause.split_once('=') {
        if !head.contains(':') && head.contains('-') {
            let (from, until) = head.split_once('-').unwrap_or((head, ""));
            let from = match from.trim() {
                "" => Duration::ZERO,
                from => parse_duration(from)?,
            };
            let until = match until.trim() {
                "" => None,
                until => Some(parse_duration(until)?),
            };
            if until.is_some_and(|until| until <= from) {
                return Err(ParseError::new(
                    head.trim(),
                    "the window ends before it starts",
                ));
            }
            let fault = parse_fault(fault)?;
            return Ok(Clause::Window(ScheduledFault { from, until, fault }));
        }
    }
    Ok(Clause::Default(parse_fault(clause)?))
}
