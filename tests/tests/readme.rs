//! The README's claims, run: every shell block marked `<!-- readme-test: NAME -->` is run as pasted, in
//! bash, and its standard output is compared with the block shown after it. Timestamps, the host name
//! and process ids are the only things that may differ.
//!
//! A block uses the README's fixed ports (UDP 8125, status 8126), so each runs in a private network
//! namespace (`unshare --net`, loopback brought up) where they are free. The `cargo build` line that
//! starts a block is not run: `tests/run.sh` has built the binaries, and `./target/release/` points at
//! them (set `OFFPATH_README_BUILD=1` to run the blocks whole, build included, from the repository).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use offpath_tests::support;
use serde_json::Value;

/// A marked block: its name, the script, and the output the README shows for it.
#[derive(Debug)]
struct Block {
    name: String,
    script: String,
    shown: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The fenced block starting at or after `from`: (info string, body, end offset).
fn fenced(text: &str, from: usize) -> Option<(&str, &str, usize)> {
    let open = from + text[from..].find("```")?;
    let info_end = open + text[open..].find('\n')?;
    let info = text[open + 3..info_end].trim();
    let body_start = info_end + 1;
    let close = body_start + text[body_start..].find("\n```")?;
    Some((info, &text[body_start..=close], close + 4))
}

fn blocks(readme: &str) -> Vec<Block> {
    const MARK: &str = "<!-- readme-test: ";
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = readme[at..].find(MARK) {
        let start = at + i + MARK.len();
        let name: String = readme[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '-')
            .collect();
        let (info, script, end) = fenced(readme, start).expect("a block after the mark");
        assert_eq!(info, "bash", "block {name}: a runnable block is ```bash");
        let (_, shown, end) = fenced(readme, end).expect("the output after the block");
        out.push(Block {
            name,
            script: script.to_owned(),
            shown: shown.to_owned(),
        });
        at = end;
    }
    out
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// One output line with what varies between runs replaced: timestamps and the host in records, process
/// ids, the host name in `offpath check`.
fn normalise(line: &str, host: &str) -> String {
    if let Ok(mut v) = serde_json::from_str::<Value>(line) {
        if let Some(obj) = v.as_object_mut() {
            if obj.contains_key("host") {
                obj.insert("host".into(), Value::from("HOST"));
            }
            for point in obj
                .get_mut("points")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                point[0] = Value::from(0);
            }
            for sketch in obj
                .get_mut("sketches")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                sketch["ts"] = Value::from(0);
            }
        }
        return v.to_string();
    }
    let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
    for i in 1..words.len() {
        if words[i - 1].ends_with("pid") {
            words[i] = words[i].trim_start_matches(char::is_numeric).to_owned();
            words[i].insert(0, 'N');
        }
    }
    let line = words.join(" ");
    // `OK    hostname      my-laptop (the OS hostname)`
    match line.strip_prefix("OK    hostname      ") {
        Some(rest) => {
            let rest = rest
                .strip_prefix(host)
                .or_else(|| rest.strip_prefix("my-laptop"))
                .unwrap_or(rest);
            format!("OK    hostname      HOST{rest}")
        }
        None => line,
    }
}

fn run(block: &Block) {
    let build_whole = std::env::var_os("OFFPATH_README_BUILD").is_some();
    let dir = tempfile::tempdir().unwrap();
    let mut script = String::new();
    for line in block.script.lines() {
        if line.starts_with("cargo build ") && !build_whole {
            // What the block builds is what it runs.
            assert!(
                line.starts_with("cargo build --release -p offpath"),
                "block {}: {line}",
                block.name
            );
            continue;
        }
        script.push_str(line);
        script.push('\n');
    }
    let cwd = if build_whole {
        repo_root()
    } else {
        let bins = support::binary("offpath");
        let bins = bins.parent().unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::os::unix::fs::symlink(bins, dir.path().join("target/release")).unwrap();
        dir.path().to_path_buf()
    };
    let script_path = dir.path().join("block.sh");
    std::fs::write(&script_path, &script).unwrap();
    let out =
        Command::new("unshare")
            .args([
                "--net",
                "--",
                "bash",
                "-c",
                "ip link set lo up && exec bash \"$0\"",
            ])
            .arg(&script_path)
            .current_dir(&cwd)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| {
                matches!(k.as_str(), "PATH" | "HOME" | "CARGO_HOME" | "RUSTUP_HOME")
            }))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run unshare (util-linux; needs root): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown_run = format!(
        "block {}:\n{script}\n--- exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        block.name,
        out.status.code()
    );
    assert!(out.status.success(), "{shown_run}");
    let host = hostname();
    let got: Vec<String> = stdout.lines().map(|l| normalise(l, &host)).collect();
    let want: Vec<String> = block.shown.lines().map(|l| normalise(l, &host)).collect();
    assert_eq!(got, want, "{shown_run}");
}

#[test]
fn the_readme_blocks_meant_to_run_here_print_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = blocks(&readme);
    let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
    for needed in ["quickstart", "check"] {
        assert!(names.contains(&needed), "no `{needed}` block in {names:?}");
    }
    for block in &blocks {
        run(block);
    }
}

#[test]
fn normalising_keeps_what_matters() {
    let a = r#"{"offpath":1,"kind":"series","metric":"m","type":"rate","interval":10,"points":[[1,0.1]],"tags":[],"host":"a"}"#;
    let b = r#"{"offpath":1,"kind":"series","metric":"m","type":"rate","interval":10,"points":[[2,0.1]],"tags":[],"host":"b"}"#;
    let c = r#"{"offpath":1,"kind":"series","metric":"m","type":"rate","interval":10,"points":[[2,0.2]],"tags":[],"host":"b"}"#;
    assert_eq!(normalise(a, "x"), normalise(b, "x"));
    assert_ne!(normalise(a, "x"), normalise(c, "x"));
    assert_eq!(
        normalise("healthy: ok [pid 4242, offpath 0.1.0]", "x"),
        normalise("healthy: ok [pid 17, offpath 0.1.0]", "x")
    );
    assert_ne!(
        normalise("healthy: ok [pid 4242, offpath 0.1.0]", "x"),
        normalise("healthy: ok [pid 4242, offpath 0.2.0]", "x")
    );
    assert_eq!(
        normalise("OK    hostname      vm (the OS hostname)", "vm"),
        normalise("OK    hostname      my-laptop (the OS hostname)", "vm")
    );
}
