//! Launcher of the reference minidb: replaces itself with `python3 minidb.py ARGS…`, the script two
//! directories above the executable (`target/release/minidb` → `minidb.py`), so signals reach it.

use std::os::unix::process::CommandExt;

fn main() {
    let exe = std::env::current_exe().expect("the launcher's own path");
    let root = exe
        .parent()
        .and_then(|release| release.parent())
        .and_then(|target| target.parent())
        .expect("the launcher lives in target/release/");
    let err = std::process::Command::new("python3")
        .arg(root.join("minidb.py"))
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("cannot run python3: {err}");
    std::process::exit(127);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_is_beside_the_manifest() {
        assert!(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("minidb.py")
            .is_file());
    }
}
