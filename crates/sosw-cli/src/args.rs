//! JSON arguments of the command line: inline, `@FILE` or `-` (stdin), as curl takes them.

use crate::UsageError;
use anyhow::Result;
use serde_json::Value;

/// Whether a JSON argument of this process has read stdin already (it can be read once).
static STDIN_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The text of a JSON argument, as curl reads `--data`: the value itself, `@FILE` the file's contents, `-` (or
/// `@-`) stdin. This is how a payload larger than the OS's argument limit gets in.
pub(crate) fn json_arg_text(flag: &str, value: &str) -> Result<String> {
    use std::io::Read;
    let from_stdin = || -> Result<String> {
        if STDIN_TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(UsageError(format!("`{flag} -`: stdin was already read by another argument")).into());
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UsageError(format!("cannot read `{flag}` from stdin: {e}")))?;
        Ok(text)
    };
    match value {
        "-" | "@-" => from_stdin(),
        _ => match value.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read `{flag}` from the file `{path}`: {e}")).into()),
            None => Ok(value.to_string()),
        },
    }
}

/// Refuses two JSON arguments reading stdin, before either reads it.
pub(crate) fn at_most_one_stdin(args: &[(&str, Option<&str>)]) -> Result<()> {
    let stdin: Vec<&str> = args
        .iter()
        .filter(|(_, v)| matches!(v, Some("-" | "@-")))
        .map(|(flag, _)| *flag)
        .collect();
    if let [first, second, ..] = stdin.as_slice() {
        return Err(UsageError(format!(
            "`{second} -`: stdin was already read by `{first}`; read one of them from a file (`@FILE`)"
        ))
        .into());
    }
    Ok(())
}

/// A JSON argument (`--payload`, `--stats`, `--result`): literal JSON, `@FILE` or `-` (stdin).
pub(crate) fn parse_json_arg(flag: &str, value: &str) -> Result<Value> {
    let text = json_arg_text(flag, value)?;
    serde_json::from_str(&text).map_err(|e| UsageError(format!("`{flag}` is not valid JSON: {e}")).into())
}
