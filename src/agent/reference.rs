//! The reference agent (`megatest agent`): an OpenAI chat-completions tool-calling loop.
//!
//! It reads its task from a prompt file, talks to the model at `MEGATEST_BASE_URL` (megatest's
//! proxy) with the per-agent key `MEGATEST_AGENT_KEY`, and works in its current directory (the
//! session's `project/`). Tools: `read_file`, `write_file`, `edit_file`, `list_dir`,
//! `run_command` (timeout, output cap) and `finish`. Paths must stay inside the workspace.
//!
//! Every model response is printed to stdout as one JSON line (`{"event":"model_response",
//! "usage":{…},"tool_calls":[…]}`), so a transcript can be checked against megatest's ledger.
//!
//! Exit codes: 0 the task finished (`finish` called, or the model stopped calling tools);
//! 3 `max_iterations` reached; 4 the model endpoint failed; 2 bad arguments or environment.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Largest output of one `run_command` kept for the model, in bytes (head and tail kept).
pub const COMMAND_OUTPUT_CAP: usize = 16 * 1024;
/// Default and largest wall-clock timeout of one `run_command`, in seconds.
pub const COMMAND_TIMEOUT_DEFAULT_SECS: u64 = 120;
/// Largest timeout a model may ask one `run_command` for, in seconds.
pub const COMMAND_TIMEOUT_MAX_SECS: u64 = 900;
/// Largest file `read_file` returns, in bytes.
pub const READ_CAP: usize = 256 * 1024;

/// Settings of one agent run.
#[derive(Debug, Clone)]
pub struct AgentArgs {
    /// The task's prompt.
    pub prompt_file: PathBuf,
    /// Model calls before it gives up (`[agent].max_iterations`).
    pub max_iterations: u32,
    /// The proxy's base URL.
    pub base_url: String,
    /// The agent's own key for the proxy (never the provider's).
    pub api_key: String,
    /// The model name to ask for.
    pub model: String,
    /// Its role, named in the system prompt.
    pub role: String,
}

/// Outcome of [`run`], mapped to the exit code by the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentExit {
    /// The model called `finish` (exit 0).
    Finished = 0,
    /// `max_iterations` ran out (exit 3).
    MaxIterations = 3,
    /// The model endpoint failed for good (exit 4).
    ModelFailed = 4,
}

/// The tool schema sent with every request (OpenAI `tools` format).
pub fn tool_definitions() -> Value {
    let path = json!({"type": "string", "description": "path relative to the workspace root"});
    json!([
        {"type": "function", "function": {"name": "read_file", "description": "Read a text file",
            "parameters": {"type": "object", "properties": {"path": path}, "required": ["path"]}}},
        {"type": "function", "function": {"name": "write_file", "description": "Create or overwrite a file, creating parent directories",
            "parameters": {"type": "object", "properties": {"path": path, "content": {"type": "string"}}, "required": ["path", "content"]}}},
        {"type": "function", "function": {"name": "edit_file", "description": "Replace exactly one occurrence of old_text with new_text",
            "parameters": {"type": "object", "properties": {"path": path, "old_text": {"type": "string"}, "new_text": {"type": "string"}}, "required": ["path", "old_text", "new_text"]}}},
        {"type": "function", "function": {"name": "list_dir", "description": "List a directory",
            "parameters": {"type": "object", "properties": {"path": path}, "required": []}}},
        {"type": "function", "function": {"name": "run_command", "description": "Run a shell command in the workspace",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}, "timeout_secs": {"type": "integer"}}, "required": ["command"]}}},
        {"type": "function", "function": {"name": "finish", "description": "Declare the task done, with a summary for the next agent",
            "parameters": {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}}}
    ])
}

/// Run the loop until `finish`, `max_iterations`, or a model failure.
pub async fn run(args: AgentArgs) -> Result<AgentExit> {
    let prompt = std::fs::read_to_string(&args.prompt_file)
        .with_context(|| format!("read prompt file {}", args.prompt_file.display()))?;
    let workspace = std::env::current_dir()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let url = format!("{}/chat/completions", args.base_url.trim_end_matches('/'));
    let mut messages = vec![
        json!({"role": "system", "content": format!(
            "You are the {} agent of a software team. Work only through the tools. \
             Call `finish` with a short summary when the task is done.", args.role)}),
        json!({"role": "user", "content": prompt}),
    ];
    let tools = tool_definitions();
    for iteration in 0..args.max_iterations {
        let body = json!({"model": args.model, "messages": messages, "tools": tools});
        let response = match call_model(&client, &url, &args.api_key, &body).await {
            Ok(response) => response,
            Err(err) => {
                eprintln!("megatest agent: model call failed: {err:#}");
                return Ok(AgentExit::ModelFailed);
            }
        };
        let message = response["choices"][0]["message"].clone();
        let tool_calls = message["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = tool_calls
            .iter()
            .filter_map(|c| c["function"]["name"].as_str())
            .collect();
        println!(
            "{}",
            json!({"event": "model_response", "iteration": iteration, "usage": response["usage"], "tool_calls": names})
        );
        messages.push(message.clone());
        if tool_calls.is_empty() {
            return Ok(AgentExit::Finished);
        }
        let mut finished = false;
        for call in &tool_calls {
            let id = call["id"].as_str().unwrap_or_default().to_string();
            let name = call["function"]["name"].as_str().unwrap_or_default();
            let raw_args = call["function"]["arguments"].as_str().unwrap_or("{}");
            let result = match serde_json::from_str::<Value>(raw_args) {
                Ok(tool_args) => execute_tool(&workspace, name, &tool_args).await,
                Err(err) => Err(anyhow::anyhow!("arguments are not valid JSON: {err}")),
            };
            let (ok, content) = match result {
                Ok(text) => (true, text),
                Err(err) => (false, format!("error: {err:#}")),
            };
            println!(
                "{}",
                json!({"event": "tool_result", "tool": name, "ok": ok})
            );
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            if name == "finish" && ok {
                finished = true;
                // The summary goes to the log: a reviewer's verdict line is read from there.
                let summary = serde_json::from_str::<Value>(raw_args)
                    .ok()
                    .and_then(|a| a["summary"].as_str().map(String::from))
                    .unwrap_or_default();
                println!("{}", json!({"event": "finish", "summary": summary}));
                for line in summary
                    .lines()
                    .filter(|l| l.contains(crate::swarm::review::VERDICT_MARKER))
                {
                    println!("{line}");
                }
            }
        }
        if finished {
            return Ok(AgentExit::Finished);
        }
    }
    eprintln!(
        "megatest agent: max_iterations ({}) reached",
        args.max_iterations
    );
    Ok(AgentExit::MaxIterations)
}

async fn call_model(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> Result<Value> {
    let response = client
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .context("send")?;
    let status = response.status();
    let text = response.text().await.context("read body")?;
    if !status.is_success() {
        bail!(
            "HTTP {status}: {}",
            text.chars().take(500).collect::<String>()
        );
    }
    serde_json::from_str(&text).context("response is not JSON")
}

/// Resolve `path` inside `workspace`; absolute paths and `..` are refused.
fn confined(workspace: &Path, path: &str) -> Result<PathBuf> {
    let relative = Path::new(path);
    if relative.is_absolute() {
        bail!("path {path:?} is absolute; use a path relative to the workspace");
    }
    if relative
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        bail!("path {path:?} leaves the workspace");
    }
    Ok(workspace.join(relative))
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str> {
    args[name]
        .as_str()
        .with_context(|| format!("missing string argument `{name}`"))
}

/// Execute one tool call; the returned text goes back to the model.
pub async fn execute_tool(workspace: &Path, name: &str, args: &Value) -> Result<String> {
    match name {
        "read_file" => {
            let path = confined(workspace, str_arg(args, "path")?)?;
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(READ_CAP)]).into_owned();
            Ok(text)
        }
        "write_file" => {
            let path = confined(workspace, str_arg(args, "path")?)?;
            let content = str_arg(args, "content")?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, content).with_context(|| format!("write {}", path.display()))?;
            Ok(format!("wrote {} bytes", content.len()))
        }
        "edit_file" => {
            let path = confined(workspace, str_arg(args, "path")?)?;
            let old = str_arg(args, "old_text")?;
            let new = str_arg(args, "new_text")?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read {}", path.display()))?;
            match text.matches(old).count() {
                1 => {
                    std::fs::write(&path, text.replacen(old, new, 1))?;
                    Ok("edited".into())
                }
                0 => bail!("old_text not found"),
                n => bail!("old_text occurs {n} times; it must occur once"),
            }
        }
        "list_dir" => {
            let path = confined(workspace, args["path"].as_str().unwrap_or("."))?;
            let mut names: Vec<String> = std::fs::read_dir(&path)
                .with_context(|| format!("list {}", path.display()))?
                .flatten()
                .map(|e| {
                    let mut n = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() {
                        n.push('/');
                    }
                    n
                })
                .collect();
            names.sort();
            Ok(names.join("\n"))
        }
        "run_command" => {
            let command = str_arg(args, "command")?;
            let timeout = args["timeout_secs"]
                .as_u64()
                .unwrap_or(COMMAND_TIMEOUT_DEFAULT_SECS)
                .min(COMMAND_TIMEOUT_MAX_SECS);
            run_command(workspace, command, Duration::from_secs(timeout)).await
        }
        "finish" => Ok(args["summary"].as_str().unwrap_or("done").to_string()),
        other => bail!("unknown tool `{other}`"),
    }
}

async fn run_command(workspace: &Path, command: &str, timeout: Duration) -> Result<String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(workspace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawn sh")?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => {
            let output = output?;
            let code = output
                .status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "signal".into());
            Ok(format!("exit code {code}\n{}", cap_output(&output.stdout)))
        }
        Err(_) => Ok(format!("timed out after {} s", timeout.as_secs())),
    }
}

/// Keep the head and tail of long output within [`COMMAND_OUTPUT_CAP`].
fn cap_output(bytes: &[u8]) -> String {
    if bytes.len() <= COMMAND_OUTPUT_CAP {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let half = COMMAND_OUTPUT_CAP / 2;
    format!(
        "{}\n[… {} bytes cut …]\n{}",
        String::from_utf8_lossy(&bytes[..half]),
        bytes.len() - 2 * half,
        String::from_utf8_lossy(&bytes[bytes.len() - half..])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_workspace() {
        let ws = Path::new("/w");
        assert!(confined(ws, "../etc/passwd").is_err());
        assert!(confined(ws, "/etc/passwd").is_err());
        assert_eq!(confined(ws, "src/a.py").unwrap(), Path::new("/w/src/a.py"));
    }

    #[tokio::test]
    async fn tools_write_edit_read_and_run() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        execute_tool(
            ws,
            "write_file",
            &json!({"path": "a/b.txt", "content": "hello world"}),
        )
        .await
        .unwrap();
        execute_tool(
            ws,
            "edit_file",
            &json!({"path": "a/b.txt", "old_text": "world", "new_text": "there"}),
        )
        .await
        .unwrap();
        let text = execute_tool(ws, "read_file", &json!({"path": "a/b.txt"}))
            .await
            .unwrap();
        assert_eq!(text, "hello there");
        let out = execute_tool(
            ws,
            "run_command",
            &json!({"command": "cat a/b.txt; exit 3"}),
        )
        .await
        .unwrap();
        assert_eq!(out, "exit code 3\nhello there");
        assert!(execute_tool(
            ws,
            "edit_file",
            &json!({"path": "a/b.txt", "old_text": "zzz", "new_text": ""})
        )
        .await
        .is_err());
    }

    #[test]
    fn long_output_is_capped_with_head_and_tail() {
        let long = vec![b'x'; COMMAND_OUTPUT_CAP * 2];
        let capped = cap_output(&long);
        assert!(capped.len() < COMMAND_OUTPUT_CAP + 100);
        assert!(capped.contains("bytes cut"));
    }
}
