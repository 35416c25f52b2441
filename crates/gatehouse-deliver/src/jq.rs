//! jq programs for route filters and transforms: compiled once from config
//! with the `jaq` crates, run on each event's JSON body.
//!
//! Programs run in a sandbox of sorts: `env` yields `{}` (the gateway's
//! environment holds secrets), `debug` and `stderr` log nothing (a body must
//! never reach a log), and `halt` ends the program with an error instead of
//! ending the process.

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{compile, data, Ctx, Vars};
use jaq_json::{Num, Val};
use serde_json::Value;

/// The data a filter runs on: JSON values, no extra context.
type Data = data::JustLut<Val>;

/// Native filters left out; each is replaced by a harmless definition in
/// [`SANDBOX_DEFS`].
const HIDDEN_NATIVES: [&str; 4] = ["env", "debug_empty", "stderr_empty", "halt"];

/// Replacements for the natives in [`HIDDEN_NATIVES`].
const SANDBOX_DEFS: &str = r#"
def env: {};
def debug_empty: empty;
def stderr_empty: empty;
def halt($code): error("the program called halt(\($code))");
"#;

/// Longest error text kept: runtime errors quote values from the body.
const MAX_ERROR_LEN: usize = 300;

/// A compiled jq program.
pub struct Program {
    filter: jaq_core::Filter<Data>,
    text: String,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Program").field(&self.text).finish()
    }
}

/// Compiles a jq program. The error says what is wrong and where (line
/// and column in the program), for `check-config`.
pub fn compile(text: &str) -> Result<Program, String> {
    if text.trim().is_empty() {
        return Err("the jq program is empty".into());
    }
    let sandbox: Vec<_> = load::parse(SANDBOX_DEFS, |p| p.defs())
        .ok_or_else(|| "internal error: the sandbox definitions do not parse".to_string())?;
    // Definitions see only those before them: the sandbox goes before the
    // standard library, whose `debug`, `stderr` and `halt_error` use it.
    let defs = jaq_core::defs()
        .chain(sandbox)
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs::<Data>()
        .chain(jaq_std::funs::<Data>())
        .chain(jaq_json::funs::<Data>())
        .filter(|(name, _, _)| !HIDDEN_NATIVES.contains(name));
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(&arena, File { code: text, path: () })
        .map_err(|errors| describe_load_errors(text, errors))?;
    let filter = jaq_core::Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(describe_compile_errors)?;
    Ok(Program {
        filter,
        text: text.to_string(),
    })
}

impl Program {
    /// The program as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Runs the program on `input` and returns every output, or the first
    /// runtime error. Programs that yield without end never return: use
    /// [`Program::first`] where one output is enough. (Object keys come out
    /// sorted, as `serde_json` keeps them; the delivery path uses
    /// [`Input`], which keeps the body's order.)
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, String> {
        self.outputs(to_val(input))
            .map(|output| output.map(|value| from_val(&value)))
            .collect()
    }

    /// The program's first output on `input` (`None` when it yields
    /// nothing), or the runtime error met before it.
    pub fn first(&self, input: &Input) -> Result<Option<Output>, String> {
        self.outputs(input.0.clone())
            .next()
            .transpose()
            .map(|value| value.map(Output))
    }

    fn outputs(&self, input: Val) -> impl Iterator<Item = Result<Val, String>> + '_ {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        self.filter
            .id
            .run((ctx, input))
            .map(|output| output.map_err(describe_exception))
    }
}

/// A JSON body parsed for jq, object keys in their original order and
/// numbers as written. Not `Send`: parse and run on one thread.
#[derive(Clone, Debug)]
pub struct Input(Val);

impl Input {
    /// Parses a body; the error says why it is not JSON.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        check_depth(body)?;
        jaq_json::read::parse_single(body).map(Self).map_err(|e| e.to_string())
    }
}

/// Deepest nesting of arrays and objects accepted (serde_json's limit): a
/// deeper body could exhaust the stack of the recursive parser.
const MAX_DEPTH: usize = 128;

/// Refuses bodies nested deeper than [`MAX_DEPTH`], in one pass over the
/// bytes that skips string contents.
fn check_depth(body: &[u8]) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                (false, _) => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("nested more than {MAX_DEPTH} levels deep"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// One output of a program.
#[derive(Clone, Debug)]
pub struct Output(Val);

impl Output {
    /// Anything but `false` and `null`, as jq's `select` decides.
    pub fn is_truthy(&self) -> bool {
        !matches!(self.0, Val::Null | Val::Bool(false))
    }

    /// Whether it is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self.0, Val::Null)
    }

    /// Compact JSON text, object keys in the program's order.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        write_json(&mut out, &self.0);
        out
    }

    /// As a serde_json value (object keys sorted).
    pub fn to_value(&self) -> Value {
        from_val(&self.0)
    }
}

/// Writes `value` as compact JSON: byte strings as (lossy) text, non-finite
/// numbers as `null` (as jq prints them), non-string keys as their JSON text.
fn write_json(out: &mut Vec<u8>, value: &Val) {
    let string = |out: &mut Vec<u8>, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        out.extend_from_slice(Value::from(text.as_ref()).to_string().as_bytes());
    };
    match value {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Num(Num::Dec(text)) if serde_json::from_str::<serde_json::Number>(text).is_ok() => {
            out.extend_from_slice(text.as_bytes())
        }
        // jaq prints big integers in full, which serde_json cannot hold.
        Val::Num(Num::BigInt(_)) => out.extend_from_slice(value.to_string().as_bytes()),
        Val::Num(n) => out.extend_from_slice(number(n).to_string().as_bytes()),
        Val::TStr(bytes) | Val::BStr(bytes) => string(out, bytes),
        Val::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Val::Obj(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match key {
                    Val::TStr(bytes) | Val::BStr(bytes) => string(out, bytes),
                    other => string(out, from_val(other).to_string().as_bytes()),
                }
                out.push(b':');
                write_json(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Whether a filter's output lets the event through: anything but `false`
/// and `null`, as jq's `select` decides.
pub fn is_truthy(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Bool(false))
}

fn describe_exception(exception: jaq_core::Exn<'_, Val>) -> String {
    let text = match exception.get_err() {
        // jq shows a string error as its text, and any other value as JSON.
        Ok(error) => match error.into_val() {
            Val::TStr(bytes) | Val::BStr(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            other => format!("{other} (not a string)"),
        },
        Err(other) => match other.get_halt() {
            Ok(code) => format!("the program called halt({code})"),
            Err(_) => "the program stopped with an internal jq error".to_string(),
        },
    };
    truncate(text, MAX_ERROR_LEN)
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Where `part` (a slice of `whole`) starts, as "line L, column C".
fn position(whole: &str, part: &str) -> String {
    let start = whole.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    if at < start || at > start + whole.len() {
        return "in a definition it uses".into();
    }
    let offset = at - start;
    let before = &whole[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("at line {line}, column {column}")
}

/// What was found at an error position: the token, or the end of the program.
fn found(part: &str) -> String {
    let token: String = part.chars().take(20).collect();
    if token.trim().is_empty() {
        "the end of the program".into()
    } else {
        format!("{:?}", token.split_whitespace().next().unwrap_or(""))
    }
}

fn describe_load_errors(text: &str, errors: load::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (_file, error) in errors {
        match error {
            load::Error::Io(items) => {
                for (path, message) in items {
                    messages.push(format!("cannot load module {path:?}: {message}"));
                }
            }
            load::Error::Lex(items) => {
                for (expected, at) in items {
                    let expected = match expected {
                        load::lex::Expect::Delim(open) => match open {
                            "(" => "a closing parenthesis",
                            "[" => "a closing bracket",
                            "{" => "a closing brace",
                            _ => "a closing quote",
                        },
                        load::lex::Expect::Digit => "a digit",
                        load::lex::Expect::Ident => "an identifier",
                        load::lex::Expect::Escape => "a string escape sequence",
                        load::lex::Expect::Unicode => "a 4-digit hexadecimal code point",
                        // The enum is non-exhaustive; anything newer is a token.
                        _ => "a token",
                    };
                    messages.push(format!(
                        "syntax error {}: expected {expected}, found {}",
                        position(text, at),
                        found(at)
                    ));
                }
            }
            load::Error::Parse(items) => {
                for (expected, at) in items {
                    messages.push(format!(
                        "syntax error {}: expected {}, found {}",
                        position(text, at),
                        expected.as_str(),
                        found(at)
                    ));
                }
            }
        }
    }
    if messages.is_empty() {
        "the jq program does not parse".into()
    } else {
        messages.join("; ")
    }
}

fn describe_compile_errors(errors: compile::Errors<&str, ()>) -> String {
    let messages: Vec<String> = errors
        .into_iter()
        .flat_map(|(_file, undefined)| undefined)
        .map(|(name, kind)| match kind {
            compile::Undefined::Filter(arity) => format!("undefined filter {name}/{arity}"),
            other => format!("undefined {} {name}", other.as_str()),
        })
        .collect();
    if messages.is_empty() {
        "the jq program does not compile".into()
    } else {
        messages.join("; ")
    }
}

/// A serde_json value as a jaq value.
fn to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::utf8_str(s.clone()),
        Value::Array(items) => items.iter().map(to_val).collect(),
        Value::Object(map) => Val::obj(map.iter().map(|(k, v)| (Val::utf8_str(k.clone()), to_val(v))).collect()),
    }
}

/// A jaq value as a serde_json value. Byte strings become (lossy) strings,
/// non-finite numbers `null` (as jq prints them), and non-string object keys
/// their JSON text.
fn from_val(value: &Val) -> Value {
    match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => number(n),
        Val::TStr(bytes) | Val::BStr(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        Val::Arr(items) => Value::Array(items.iter().map(from_val).collect()),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(bytes) | Val::BStr(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                        other => from_val(other).to_string(),
                    };
                    (key, from_val(v))
                })
                .collect(),
        ),
    }
}

fn number(n: &Num) -> Value {
    let from_f64 = |f: f64| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
    match n {
        Num::Int(i) => Value::Number((*i as i64).into()),
        Num::Float(f) => from_f64(*f),
        Num::BigInt(_) | Num::Dec(_) => {
            let text = match n {
                Num::Dec(text) => text.to_string(),
                other => Val::Num(other.clone()).to_string(),
            };
            serde_json::from_str::<serde_json::Number>(&text)
                .map(Value::Number)
                .unwrap_or_else(|_| from_f64(text.parse().unwrap_or(f64::NAN)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(program: &str, input: Value) -> Result<Vec<Value>, String> {
        compile(program).expect("compiles").run(&input)
    }

    #[test]
    fn runs_the_standard_library() {
        let input = json!({"type": "charge.succeeded", "data": {"amount": 1200, "items": [1, 2, 3]}});
        assert_eq!(run(".type", input.clone()), Ok(vec![json!("charge.succeeded")]));
        assert_eq!(
            run(".data.items | map(. * 2) | add", input.clone()),
            Ok(vec![json!(12)])
        );
        assert_eq!(
            run(r#"select(.type | startswith("charge."))"#, input.clone()),
            Ok(vec![input.clone()])
        );
        assert_eq!(
            run("{kind: .type, cents: .data.amount, big: (.data.amount > 1000)}", input),
            Ok(vec![json!({"kind": "charge.succeeded", "cents": 1200, "big": true})])
        );
        assert_eq!(
            run(".[]", json!([1, "a", null])),
            Ok(vec![json!(1), json!("a"), json!(null)])
        );
        assert_eq!(run("1.5 * 2, 0.1 + 0.2", json!(null)).map(|v| v.len()), Ok(2));
    }

    fn first(program: &str, body: &[u8]) -> Result<Option<String>, String> {
        let input = Input::parse(body).expect("JSON");
        compile(program)
            .expect("compiles")
            .first(&input)
            .map(|output| output.map(|o| String::from_utf8(o.to_json()).expect("UTF-8")))
    }

    #[test]
    fn first_stops_after_one_output_and_handles_none() {
        assert_eq!(first("repeat(.)", b"7"), Ok(Some("7".into())));
        assert_eq!(first("empty", b"1"), Ok(None));
    }

    #[test]
    fn bodies_keep_their_key_order_and_numbers() {
        let body = br#"{"zeta": 1.50, "alpha": [true, null, "\u00e9\n"], "big": 123456789012345678901234567890}"#;
        assert_eq!(
            first(".", body),
            Ok(Some(
                r#"{"zeta":1.50,"alpha":[true,null,"é\n"],"big":123456789012345678901234567890}"#.into()
            ))
        );
        assert_eq!(
            first("{z: .zeta, a: .alpha[0], n: (1 / 3)}", body),
            Ok(Some(r#"{"z":1.50,"a":true,"n":0.3333333333333333}"#.into()))
        );
        assert_eq!(first("nan, infinite", b"null"), Ok(Some("null".into())));
    }

    #[test]
    fn bodies_that_are_not_json_or_too_deep_are_refused() {
        assert!(Input::parse(b"a=1&b=2").is_err());
        assert!(Input::parse(b"{\"a\": 1} trailing").is_err());
        assert!(Input::parse(b"").is_err());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(
            Input::parse(deep.as_bytes()).is_err(),
            "refused before the recursive parser sees it"
        );
        assert!(Input::parse(b" {\"ok\": true}\n").is_ok());
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(Input::parse(fine.as_bytes()).is_ok());
        assert!(
            Input::parse(br#"{"s": "[[[[\"[[[[ {{{{"}"#).is_ok(),
            "brackets in strings do not count"
        );
    }

    #[test]
    fn runtime_errors_are_text_and_bounded() {
        let error = run(".a.b", json!({"a": "x"})).expect_err("cannot index a string");
        assert!(error.contains("cannot index"), "{error}");
        let error = run(r#"error("custom")"#, json!(null)).expect_err("error");
        assert_eq!(error, "custom");
        let huge = json!({"a": "y".repeat(5000)});
        let error = run(".a.b", huge).expect_err("error");
        assert!(error.len() <= MAX_ERROR_LEN + 3, "{}", error.len());
    }

    #[test]
    fn sandbox_hides_the_environment_and_never_exits() {
        std::env::set_var("GATEHOUSE_JQ_TEST_SECRET", "s3cr3t");
        assert_eq!(run("env", json!(null)), Ok(vec![json!({})]));
        assert!(compile("$ENV").is_err());
        let error = run("halt", json!(null)).expect_err("halt is an error");
        assert!(error.contains("halt(0)"), "{error}");
        assert!(run("halt_error(3)", json!("x")).is_err());
        assert_eq!(run("debug | stderr | .", json!(1)), Ok(vec![json!(1)]));
    }

    #[test]
    fn compile_errors_say_where_and_what() {
        let error = compile(".a | ").expect_err("incomplete");
        assert!(error.contains("syntax error") && error.contains("column"), "{error}");
        let error = compile("{a: 1").expect_err("unclosed");
        assert!(error.contains("closing brace"), "{error}");
        let error = compile("no_such_filter(1)").expect_err("undefined");
        assert!(error.contains("undefined filter no_such_filter/1"), "{error}");
        let error = compile(".a |\n  $nope").expect_err("undefined variable");
        assert!(error.contains("undefined variable"), "{error}");
        assert!(compile("   ").is_err());
    }

    #[test]
    fn numbers_and_keys_round_trip() {
        assert_eq!(
            run(".", json!(18446744073709551615u64)),
            Ok(vec![json!(18446744073709551615u64)])
        );
        assert_eq!(run(".", json!(-3)), Ok(vec![json!(-3)]));
        assert_eq!(run(".", json!(2.5)), Ok(vec![json!(2.5)]));
        assert_eq!(run("1 / 0 | isinfinite", json!(null)).map(|v| v.len()), Ok(1));
        assert_eq!(run("nan", json!(null)), Ok(vec![Value::Null]));
        assert_eq!(run("{\"x y\": .}", json!("z")), Ok(vec![json!({"x y": "z"})]));
    }

    #[test]
    fn truthiness_matches_select() {
        let output = |body: &[u8]| {
            compile(".")
                .expect("compiles")
                .first(&Input::parse(body).expect("JSON"))
                .expect("runs")
                .expect("output")
        };
        assert!(output(b"0").is_truthy() && output(b"\"\"").is_truthy());
        assert!(!output(b"false").is_truthy() && !output(b"null").is_truthy());
        assert!(output(b"null").is_null());
        assert_eq!(output(b"{\"b\":1,\"a\":2}").to_value(), json!({"a": 2, "b": 1}));
        assert!(is_truthy(&json!(true)));
        assert!(is_truthy(&json!(0)));
        assert!(is_truthy(&json!("")));
        assert!(!is_truthy(&json!(false)));
        assert!(!is_truthy(&Value::Null));
    }

    #[test]
    fn programs_are_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Program>();
        send_sync::<std::sync::Arc<Program>>();
    }
}
