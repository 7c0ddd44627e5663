//! Records the git commit and build time for the server-information endpoint.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn civil(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The ref HEAD points at (`refs/heads/<branch>`), if HEAD is on a branch.
fn git_ref() -> Option<std::path::PathBuf> {
    Command::new("git")
        .args(["symbolic-ref", "-q", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

fn main() {
    let sha = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    println!(
        "cargo:rustc-env=APM_RS_BUILD_DATE={y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    println!("cargo:rustc-env=APM_RS_BUILD_SHA={sha}");
    // Rerun when HEAD moves. In a worktree `.git` is a file and HEAD lives in
    // the worktree's own git dir while branch refs live in the common dir, so
    // ask git for both and only name paths that exist (a missing path would
    // make cargo rerun the script, and rebuild the crate, on every build).
    let git = |arg: &str| {
        Command::new("git")
            .args(["rev-parse", arg])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    };
    let mut watch = Vec::new();
    if let Some(dir) = git("--git-dir") {
        watch.push(dir.join("HEAD"));
    }
    // Only the branch HEAD names, not all of refs/heads: a commit on another
    // branch (another worktree) must not rebuild this one.
    if let (Some(common), Some(branch)) = (git("--git-common-dir"), git_ref()) {
        watch.push(common.join(branch));
        watch.push(common.join("packed-refs"));
    }
    for p in watch.into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
