//! Reader of `cases.json`, the machine-readable list of the hostile-guest corpus in this
//! directory. Shared (with `#[path]`) by the in-process tests (`crates/platform/tests/hostile.rs`),
//! the end-to-end tests (`crates/e2e/tests/e2e/hostile.rs`) and `cargo xtask bench soak`; it only
//! needs `serde_json`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A request to send: method and path (with `{name}` already replaced by the function's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, e.g. `/reentrant-handler/x`, `/api/wasi-poll-huge/input`, `/exec/nano-fuel`.
    pub path: String,
}

/// A well-behaved function that must keep answering while the hostile ones run.
#[derive(Debug, Clone)]
pub struct Good {
    /// Its name.
    pub name: String,
    /// Its source, when the corpus has one (boot functions of the image may have none here).
    pub file: Option<PathBuf>,
    /// Whether every real server has it from boot (`answer`, `http-server-demo`).
    pub boot: bool,
    /// How to call it.
    pub request: CallSpec,
    /// The status it answers.
    pub status: u16,
    /// Its exact body.
    pub body: String,
}

/// One hostile case.
#[derive(Debug, Clone)]
pub struct Case {
    /// The function name it is deployed under.
    pub name: String,
    /// Its WAT source.
    pub file: PathBuf,
    /// `http`, `wasi` or `nanoprocess`.
    pub kind: String,
    /// What it does, in a few words.
    pub what: String,
    /// Deploy query (limits), e.g. `timeout-ms=100`; empty for the defaults.
    pub deploy: String,
    /// Status the deploy answers: 201, or 400 when the deploy itself must be refused.
    pub deploy_status: u16,
    /// A substring of the refused deploy's body.
    pub deploy_error: Option<String>,
    /// The request, when the deploy succeeds.
    pub request: Option<CallSpec>,
    /// The status the request answers.
    pub status: Option<u16>,
    /// A substring of the error body.
    pub error: Option<String>,
    /// The exact body of a successful answer.
    pub body: Option<String>,
    /// Strings (lower-case) that must not appear in the response head on the wire.
    pub absent: Vec<String>,
    /// The stats label the failure is counted under (`trap`, `timeout`, `memory`, ...).
    pub outcome: Option<String>,
    /// Whether guest code runs (then `/stats` shows fuel used).
    pub ran: bool,
    /// The deadline (`timeout-ms`) that must stop it, if that is what stops it.
    pub deadline_ms: Option<u64>,
    /// Upper bound of the deploy and of the request natively, in milliseconds.
    pub max_ms: u64,
}

impl Case {
    /// The source bytes.
    pub fn source(&self) -> Result<Vec<u8>, String> {
        read(&self.file)
    }

    /// The query of the deploy request, if any.
    pub fn deploy_query(&self) -> Option<&str> {
        (!self.deploy.is_empty()).then_some(self.deploy.as_str())
    }

    /// `/_admin/functions/{name}[?{deploy}]`.
    pub fn deploy_target(&self) -> String {
        match self.deploy_query() {
            Some(query) => format!("/_admin/functions/{}?{query}", self.name),
            None => format!("/_admin/functions/{}", self.name),
        }
    }

    /// Whether the deploy succeeds (and a request follows).
    pub fn deploys(&self) -> bool {
        (200..300).contains(&self.deploy_status)
    }

    /// What is wrong with the time a call took, given the case's deadline: a call that ends
    /// before it was stopped did not run into its deadline.
    pub fn deadline_problem(&self, elapsed: std::time::Duration) -> Option<String> {
        let deadline = self.deadline_ms?;
        (elapsed < std::time::Duration::from_millis(deadline))
            .then(|| format!("stopped after {elapsed:?}, before its {deadline} ms deadline"))
    }

    /// What is wrong with `GET /stats/{name}` after the one call: it counts one invocation,
    /// one error of the expected outcome, and fuel exactly when the guest ran.
    pub fn stats_problems(&self, stats: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        if stats["invocations"].as_u64() != Some(1) {
            problems.push(format!("stats: {stats}"));
        }
        if let Some(outcome) = &self.outcome
            && stats["errors"][outcome.as_str()].as_u64() != Some(1)
        {
            problems.push(format!("stats do not count one {outcome:?}: {stats}"));
        }
        let fuel = stats["fuel_used"].as_u64().unwrap_or(0);
        if self.ran != (fuel > 0) {
            problems.push(format!(
                "stats: fuel_used {fuel}, but the guest {} run",
                if self.ran { "did" } else { "did not" }
            ));
        }
        problems
    }
}

/// The whole corpus.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The directory of `cases.json`.
    pub dir: PathBuf,
    /// Reference functions.
    pub good: Vec<Good>,
    /// Hostile cases, in manifest order.
    pub cases: Vec<Case>,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn text(value: &Value, key: &str) -> Result<String, String> {
    value[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{key:?} missing or not a string in {value}"))
}

fn opt_text(value: &Value, key: &str) -> Option<String> {
    value[key].as_str().map(str::to_string)
}

fn number(value: &Value, key: &str) -> Result<u64, String> {
    value[key]
        .as_u64()
        .ok_or_else(|| format!("{key:?} missing or not a number in {value}"))
}

fn status(value: &Value, key: &str) -> Result<u16, String> {
    u16::try_from(number(value, key)?).map_err(|_| format!("{key:?} is not a status in {value}"))
}

fn call_spec(value: &Value, name: &str) -> Result<CallSpec, String> {
    Ok(CallSpec {
        method: text(value, "method")?,
        path: text(value, "path")?.replace("{name}", name),
    })
}

impl Corpus {
    /// Reads `dir/cases.json`.
    pub fn load(dir: &Path) -> Result<Corpus, String> {
        let path = dir.join("cases.json");
        let manifest: Value = serde_json::from_slice(&read(&path)?)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let mut good = Vec::new();
        for entry in manifest["good"].as_array().into_iter().flatten() {
            let name = text(entry, "name")?;
            good.push(Good {
                file: opt_text(entry, "file").map(|f| dir.join(f)),
                boot: entry["boot"].as_bool().unwrap_or(false),
                request: call_spec(&entry["request"], &name)?,
                status: status(entry, "status")?,
                body: text(entry, "body")?,
                name,
            });
        }
        let mut cases = Vec::new();
        for entry in manifest["cases"]
            .as_array()
            .ok_or_else(|| format!("{} has no \"cases\" list", path.display()))?
        {
            let name = text(entry, "name")?;
            let deploy_status = status(entry, "deploy_status")?;
            let request = match entry.get("request") {
                Some(request) => Some(call_spec(request, &name)?),
                None => None,
            };
            let case = Case {
                file: dir.join(text(entry, "file")?),
                kind: text(entry, "kind")?,
                what: text(entry, "what")?,
                deploy: opt_text(entry, "deploy").unwrap_or_default(),
                deploy_status,
                deploy_error: opt_text(entry, "deploy_error"),
                status: match request {
                    Some(_) => Some(status(entry, "status")?),
                    None => None,
                },
                request,
                error: opt_text(entry, "error"),
                body: opt_text(entry, "body"),
                absent: entry["absent"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
                    .collect(),
                outcome: opt_text(entry, "outcome"),
                ran: entry["ran"].as_bool().unwrap_or(true),
                deadline_ms: entry["deadline_ms"].as_u64(),
                max_ms: number(entry, "max_ms")?,
                name,
            };
            if case.deploys() != case.request.is_some() {
                return Err(format!(
                    "case {}: a request is given exactly when the deploy succeeds",
                    case.name
                ));
            }
            cases.push(case);
        }
        Ok(Corpus {
            dir: dir.to_path_buf(),
            good,
            cases,
        })
    }

    /// The case named `name`.
    pub fn case(&self, name: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.name == name)
    }
}
