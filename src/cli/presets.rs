//! `megatest presets`: the agent CLI presets, the release each was proven with, what is
//! installed here, where their tool calls come from, and their notes.

use crate::agent::presets::{version_of, warning_for, with_scratch_home, ToolCalls, PRESETS};
use anyhow::Result;
use clap::Args;

#[derive(Debug, Args)]
pub struct PresetsArgs {
    /// Print JSON (one object per preset) instead of text
    #[arg(long)]
    pub json: bool,
}

pub fn presets(args: PresetsArgs) -> Result<i32> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found: Vec<_> = with_scratch_home(|home| {
        PRESETS
            .iter()
            .map(|preset| version_of(preset, &path, home))
            .collect()
    })
    .ok_or_else(|| anyhow::anyhow!("cannot make a scratch HOME in the temporary directory"))?;
    let mut rows = Vec::new();
    for (preset, found) in PRESETS.iter().zip(found) {
        let installed = match &found {
            Ok(Some(version)) => version.clone(),
            Ok(None) => "installed (version unknown)".to_string(),
            Err(reason) => format!("no: {reason}"),
        };
        let tool_calls = match preset.tool_calls {
            ToolCalls::Native => "counted from the model's answers".to_string(),
            ToolCalls::NotReported(reason) => format!("null: {reason}"),
        };
        rows.push(serde_json::json!({
            "name": preset.name,
            "program": preset.program,
            "proven_with": {
                "registry": preset.proven.registry,
                "package": preset.proven.package,
                "version": preset.proven.version,
                "install": preset.proven.install_command(),
            },
            "installed": installed,
            "warning": warning_for(preset, &found),
            "tool_calls": tool_calls,
            "template": preset.template,
            "environment": preset.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "notes": preset.notes,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    for row in &rows {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        println!("{}", s(&row["name"]));
        println!(
            "  proven with  {} {} ({}: {})",
            s(&row["proven_with"]["package"]),
            s(&row["proven_with"]["version"]),
            s(&row["proven_with"]["registry"]),
            s(&row["proven_with"]["install"])
        );
        println!("  installed    {}", s(&row["installed"]));
        println!("  tool calls   {}", s(&row["tool_calls"]));
        println!("  command      {}", s(&row["template"]));
        let env = row["environment"].as_array().cloned().unwrap_or_default();
        if !env.is_empty() {
            let env: Vec<String> = env.iter().map(s).collect();
            println!("  environment  {}", env.join(" "));
        }
        println!("  notes        {}", s(&row["notes"]));
        println!();
    }
    println!("Use one with [agents] kind = \"command\", preset = \"<name>\"; every run gets HOME = agents/<id>/home.");
    Ok(0)
}
