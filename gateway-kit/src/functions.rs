//! The user's local functions: `--function NAME=COMMAND` and the functions file.
//!
//! ```toml
//! [functions.files]
//! command = "python3 -m http.server {port} --bind 127.0.0.1"
//!
//! [functions.greeter]
//! command = "node"
//! args = ["greeter.js"]           # appended to the words of `command`
//! env = { GREETING = "hello" }
//! port_env = "HTTP_PORT"          # the variable the process reads its port from (PORT)
//! readiness_path = "/healthz"     # ready once GET answers, not merely once the port opens
//! idle = "5m"                     # stopped after 5 minutes without a request in flight
//! ```
//!
//! `{port}` as a whole word of `command` or `args` becomes the port; the port is always in the
//! port variable too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tower_scale_from_zero::providers::ProcessSpec;
use tower_scale_from_zero::FunctionId;

/// One local function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionDef {
    name: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    port_env: String,
    readiness_path: Option<String>,
    idle: Option<Duration>,
}

impl FunctionDef {
    /// `NAME=COMMAND`, as `--function` takes it.
    pub fn from_flag(flag: &str) -> Result<Self, String> {
        let Some((name, command)) = flag.split_once('=') else {
            return Err(format!(
                "expected NAME=COMMAND, e.g. files='python3 -m http.server {{port}}', got {flag:?}"
            ));
        };
        Self::new(name.trim(), command, &[])
    }

    fn new(name: &str, command: &str, more_args: &[String]) -> Result<Self, String> {
        FunctionId::new(name, "local").map_err(|e| format!("function name {name:?}: {e}"))?;
        let words = shlex::split(command)
            .ok_or_else(|| format!("function {name}: unbalanced quotes in {command:?}"))?;
        let Some((program, args)) = words.split_first() else {
            return Err(format!("function {name}: the command is empty"));
        };
        Ok(Self {
            name: name.to_owned(),
            program: program.clone(),
            args: args.iter().chain(more_args).cloned().collect(),
            env: Vec::new(),
            port_env: "PORT".into(),
            readiness_path: None,
            idle: None,
        })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its own idle period, if it has one.
    pub fn idle(&self) -> Option<Duration> {
        self.idle
    }

    /// Checks that the program exists and is executable (looked up in `PATH` when it has no
    /// slash), so a typo is an error at start-up, not a 502 at the first request.
    pub fn check_command(&self) -> Result<(), String> {
        let program = Path::new(&self.program);
        let found = if self.program.contains('/') {
            is_executable(program).then(|| program.to_path_buf())
        } else {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(program))
                    .find(|candidate| is_executable(candidate))
            })
        };
        match found {
            Some(_) => Ok(()),
            None if self.program.contains('/') => Err(format!(
                "function {}: {} is not an executable file",
                self.name, self.program
            )),
            None => Err(format!(
                "function {}: command {:?} not found in PATH",
                self.name, self.program
            )),
        }
    }

    /// How the process provider runs it; `idle` applies when it has no idle period of its own.
    pub fn spec(&self, idle: Option<Duration>) -> ProcessSpec {
        let mut spec = ProcessSpec::new(&self.program).port_env(&self.port_env);
        for arg in &self.args {
            spec = if arg == "{port}" {
                spec.arg_port()
            } else {
                spec.arg(arg)
            };
        }
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        if let Some(path) = &self.readiness_path {
            spec = spec.http_probe(path);
        }
        match self.idle.or(idle) {
            Some(idle) => spec.scale_to_zero_after(idle),
            None => spec,
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    functions: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    port_env: Option<String>,
    readiness_path: Option<String>,
    idle: Option<String>,
}

/// The functions of the TOML file at `path`. Errors name the file and the line.
pub fn load_file(path: &Path) -> Result<Vec<FunctionDef>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the functions file {}: {e}", path.display()))?;
    parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The functions of a functions file's `text`.
pub fn parse_file(text: &str) -> Result<Vec<FunctionDef>, String> {
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start].matches('\n').count() + 1);
        let reason = e.message().trim().to_owned();
        match line {
            Some(line) => format!("line {line}: {reason}"),
            None => reason,
        }
    })?;
    let mut functions = Vec::new();
    for (name, entry) in file.functions {
        let at = |reason: String| match header_line(text, &name) {
            Some(line) => format!("line {line}: {reason}"),
            None => reason,
        };
        let mut function = FunctionDef::new(&name, &entry.command, &entry.args).map_err(at)?;
        function.env = entry.env.into_iter().collect();
        if let Some(var) = entry.port_env {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return Err(at(format!(
                    "function {name}: port_env {var:?} is not a variable name"
                )));
            }
            function.port_env = var;
        }
        if let Some(path) = entry.readiness_path {
            if !path.starts_with('/') {
                return Err(at(format!(
                    "function {name}: readiness_path {path:?} must start with /"
                )));
            }
            function.readiness_path = Some(path);
        }
        if let Some(idle) = entry.idle {
            let idle = crate::cli::positive_duration(&idle).map_err(|_| {
                at(format!(
                    "function {name}: idle {idle:?} is not a duration above zero (e.g. 5m)"
                ))
            })?;
            function.idle = Some(idle);
        }
        functions.push(function);
    }
    if functions.is_empty() {
        return Err("no [functions.NAME] table".into());
    }
    Ok(functions)
}

/// The line of `[functions.NAME]` (or a quoted form of it), for messages.
fn header_line(text: &str, name: &str) -> Option<usize> {
    let forms = [
        format!("[functions.{name}]"),
        format!("[functions.\"{name}\"]"),
        format!("[functions.'{name}']"),
    ];
    text.lines()
        .position(|line| forms.iter().any(|f| line.trim() == f.as_str()))
        .map(|i| i + 1)
}

/// `--functions-file`, if given, and the `--function` flags, in that order; names unique.
pub fn collect(file: Option<&PathBuf>, flags: &[FunctionDef]) -> Result<Vec<FunctionDef>, String> {
    let mut functions = match file {
        Some(path) => load_file(path)?,
        None => Vec::new(),
    };
    functions.extend(flags.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    for function in &functions {
        if !seen.insert(function.name()) {
            return Err(format!("function {} is defined twice", function.name()));
        }
    }
    Ok(functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_is_split_as_a_shell_would_without_running_one() {
        let f =
            FunctionDef::from_flag("files=python3 -m http.server '{port}' --bind \"127.0.0.1\"")
                .unwrap();
        assert_eq!(f.name, "files");
        assert_eq!(f.program, "python3");
        assert_eq!(
            f.args,
            ["-m", "http.server", "{port}", "--bind", "127.0.0.1"]
        );
        assert_eq!(f.port_env, "PORT");
    }

    #[test]
    fn malformed_flags_say_what_is_wrong() {
        for (flag, why) in [
            ("files", "NAME=COMMAND"),
            ("=python3", "function name"),
            ("Bad_Name=python3", "function name"),
            ("files=", "empty"),
            ("files=python3 'unclosed", "quotes"),
        ] {
            let err = FunctionDef::from_flag(flag).unwrap_err();
            assert!(err.contains(why), "{flag}: {err}");
        }
    }

    #[test]
    fn a_file_gives_every_setting() {
        let text = r#"
[functions.greeter]
command = "node greeter.js"
args = ["--port", "{port}"]
env = { GREETING = "hi" }
port_env = "HTTP_PORT"
readiness_path = "/healthz"
idle = "5m"

[functions.files]
command = "python3 -m http.server {port}"
"#;
        let functions = parse_file(text).unwrap();
        let greeter = functions.iter().find(|f| f.name == "greeter").unwrap();
        assert_eq!(greeter.program, "node");
        assert_eq!(greeter.args, ["greeter.js", "--port", "{port}"]);
        assert_eq!(greeter.env, [("GREETING".into(), "hi".into())]);
        assert_eq!(greeter.port_env, "HTTP_PORT");
        assert_eq!(greeter.readiness_path.as_deref(), Some("/healthz"));
        assert_eq!(greeter.idle, Some(Duration::from_secs(300)));
        let files = functions.iter().find(|f| f.name == "files").unwrap();
        assert_eq!(files.idle, None);
    }

    #[test]
    fn a_malformed_file_names_the_line_and_the_reason() {
        for (text, line, why) in [
            (
                "[functions.a]\ncommand = \"x\"\ncomand = \"y\"\n",
                "line 3",
                "unknown field",
            ),
            ("[functions.a]\ncommand = \n", "line 2", "expected"),
            (
                "\n[functions.a]\nargs = []\n",
                "line 2",
                "missing field `command`",
            ),
            (
                "[functions.ok]\ncommand = \"x\"\n\n[functions.Bad]\ncommand = \"x\"\n",
                "line 4",
                "function name",
            ),
            (
                "[functions.a]\ncommand = \"x\"\nidle = \"soon\"\n",
                "line 1",
                "idle",
            ),
            (
                "[functions.a]\ncommand = \"x\"\nreadiness_path = \"healthz\"\n",
                "line 1",
                "must start with /",
            ),
        ] {
            let err = parse_file(text).unwrap_err();
            assert!(err.contains(line) && err.contains(why), "{text:?}: {err}");
        }
        // An empty file has no line to name.
        let err = parse_file("").unwrap_err();
        assert!(err.starts_with("no [functions.NAME]"), "{err}");
    }

    #[test]
    fn a_missing_command_is_found_before_any_request() {
        let missing = FunctionDef::from_flag("a=no-such-command-here --x").unwrap();
        let err = missing.check_command().unwrap_err();
        assert!(
            err.contains("not found in PATH") && err.contains("function a"),
            "{err}"
        );
        let missing = FunctionDef::from_flag("a=/no/such/file").unwrap();
        assert!(missing
            .check_command()
            .unwrap_err()
            .contains("not an executable"));
        assert!(FunctionDef::from_flag("a=sh -c true")
            .unwrap()
            .check_command()
            .is_ok());
    }

    #[test]
    fn a_name_defined_twice_is_refused() {
        let a = FunctionDef::from_flag("a=sh").unwrap();
        let err = collect(None, &[a.clone(), a]).unwrap_err();
        assert!(err.contains("defined twice"), "{err}");
    }
}
