//! Lines for the operator on stdout and stderr that never fail: a closed pipe (`megatest run |
//! head`), a full disk behind a redirect or a closed terminal loses the line, never the session
//! (`println!`/`eprintln!` panic on such errors).

use std::io::Write;

/// Write `line` and a newline to stderr; errors are ignored.
pub fn say(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Write `line` and a newline to stdout (GitHub Actions workflow commands); errors are
/// ignored.
pub fn print(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
