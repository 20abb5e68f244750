//! The packaging files (`packaging/`) are valid and agree with the binary's command line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

/// The binary's command-line definitions (self-contained: clap and std only).
#[allow(dead_code)]
#[path = "../src/cli/args.rs"]
mod args;

use args::{Cli, Command as Sub};

fn packaging(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(packaging(rel)).unwrap()
}

/// Parse an `offpath` command line the way the binary does.
#[track_caller]
fn offpath_args(args: &[&str]) -> Sub {
    Cli::try_parse_from(args)
        .unwrap_or_else(|e| panic!("{args:?} is not a valid offpath command line: {e}"))
        .into_command()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("offpath-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[track_caller]
fn systemd_analyze(args: &[&str]) -> std::process::Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "systemd-analyze is needed to verify packaging/systemd/offpath.service ({e}); install it \
             with `apt-get install -y systemd` (tests/run.sh does this on Debian/Ubuntu)"
        ),
    }
}

/// The unit with `ExecStart` pointing at the freshly built binary (verify checks that it exists),
/// in a directory of its own; removed on drop.
struct UnitCopy(PathBuf);

impl UnitCopy {
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for UnitCopy {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn unit_for_verify(test: &str) -> UnitCopy {
    let unit = read("systemd/offpath.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart= line");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/offpath");
    let dir = temp_dir(test);
    let path = dir.join("offpath.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/offpath", env!("CARGO_BIN_EXE_offpath")),
    )
    .unwrap();
    UnitCopy(path)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = unit_for_verify("verify");
    let out = systemd_analyze(&["verify", unit.path()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn the_systemd_unit_is_hardened() {
    let unit = read("systemd/offpath.service");
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RuntimeDirectory=offpath",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/offpath/offpath.env",
        "AmbientCapabilities=\n",
        "CapabilityBoundingSet=\n",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(directive), "missing {directive:?}");
    }
    // The socket lives in the RuntimeDirectory.
    assert!(unit.contains("DD_DOGSTATSD_SOCKET=/run/offpath/"));

    let copy = unit_for_verify("security");
    let out = systemd_analyze(&["security", "--offline=yes", copy.path()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for offpath.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
}

#[test]
fn the_systemd_exec_start_is_a_valid_command_line() {
    let unit = read("systemd/offpath.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert!(matches!(offpath_args(&args), Sub::Run(r) if r.config.is_some()));
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_with_a_health_check() {
    let dockerfile = read("docker/Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    let final_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let user = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the final stage");
    assert!(
        !["root", "0", "0:0"].contains(&user.trim()),
        "final stage runs as {user}"
    );
    assert!(dockerfile.contains("--locked"));

    let health = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .and_then(|s| s.split("CMD").nth(1))
        .expect("HEALTHCHECK ... CMD");
    let cmd: Vec<String> = serde_json::from_str(health.lines().next().unwrap().trim()).unwrap();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert_eq!(cmd[0], "/usr/local/bin/offpath");
    assert!(matches!(offpath_args(&cmd), Sub::Health(_)));

    let entry = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(entry).unwrap();
    assert_eq!(entry, ["/usr/local/bin/offpath"]);
    assert!(final_stage.contains("COPY --from=build /out/offpath /usr/local/bin/offpath"));
}

#[test]
fn the_ecs_task_definition_has_what_ecs_requires() {
    let td: serde_json::Value = serde_json::from_str(&read("ecs/task-definition.json")).unwrap();
    assert!(td["family"].as_str().is_some_and(|f| !f.is_empty()));
    assert_eq!(td["networkMode"], "awsvpc");
    assert_eq!(td["requiresCompatibilities"][0], "FARGATE");
    let task_memory: u64 = td["memory"].as_str().unwrap().parse().unwrap();
    let _task_cpu: u64 = td["cpu"].as_str().unwrap().parse().unwrap();

    let containers = td["containerDefinitions"].as_array().unwrap();
    assert!(containers.len() >= 2);
    let mut memory = 0;
    for c in containers {
        let name = c["name"].as_str().expect("container name");
        assert!(
            c["image"].as_str().is_some_and(|i| !i.is_empty()),
            "{name}: image"
        );
        assert!(c["essential"].is_boolean(), "{name}: essential");
        memory += c["memory"].as_u64().unwrap_or(0);
        assert_eq!(c["logConfiguration"]["logDriver"], "awslogs", "{name}");
        let env = c["environment"].as_array().cloned().unwrap_or_default();
        assert!(
            env.iter().all(|e| e["name"] != "DD_API_KEY"),
            "{name}: the API key belongs in secrets, not environment"
        );
    }
    assert!(
        memory <= task_memory,
        "containers ask {memory} MiB > task {task_memory} MiB"
    );

    let offpath = containers.iter().find(|c| c["name"] == "offpath").unwrap();
    let hc = &offpath["healthCheck"];
    let cmd: Vec<&str> = hc["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd[0], "CMD");
    assert!(matches!(offpath_args(&cmd[1..]), Sub::Health(_)));
    for field in ["interval", "timeout", "retries", "startPeriod"] {
        assert!(hc[field].is_u64(), "healthCheck.{field}");
    }
    assert_eq!(offpath["secrets"][0]["name"], "DD_API_KEY");
    assert!(offpath["stopTimeout"].as_u64().unwrap() > 10);
    let command: Vec<&str> = std::iter::once("offpath")
        .chain(
            offpath["command"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap()),
        )
        .collect();
    assert!(matches!(offpath_args(&command), Sub::Run(_)));

    let app = containers.iter().find(|c| c["name"] != "offpath").unwrap();
    assert_eq!(app["dependsOn"][0]["containerName"], "offpath");
    assert_eq!(app["dependsOn"][0]["condition"], "HEALTHY");
    assert_eq!(app["essential"], true);
}

#[test]
fn every_sidecar_example_keeps_the_retry_storage_where_it_survives_a_restart() {
    // systemd: the StateDirectory (/var/lib/offpath), kept across restarts and reboots.
    let unit = read("systemd/offpath.service");
    assert!(unit.contains("StateDirectory=offpath\n"));
    assert!(unit.contains("Environment=DD_FORWARDER_STORAGE_PATH=/var/lib/offpath\n"));
    assert!(unit.contains("Environment=DD_FORWARDER_STORAGE_MAX_SIZE_IN_BYTES="));

    // Docker: a volume at the storage path, owned by the image's user.
    let dockerfile = read("docker/Dockerfile");
    assert!(dockerfile.contains("DD_FORWARDER_STORAGE_PATH=/var/lib/offpath"));
    assert!(dockerfile.contains("VOLUME /var/lib/offpath"));
    assert!(dockerfile.contains("--chown=65532:65532 /out/state /var/lib/offpath"));

    // ECS: a task volume mounted at the storage path, and the container restarted in place (a new
    // task would get a new volume).
    let td: serde_json::Value = serde_json::from_str(&read("ecs/task-definition.json")).unwrap();
    let offpath = td["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "offpath")
        .unwrap();
    let path = offpath["environment"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "DD_FORWARDER_STORAGE_PATH")
        .and_then(|e| e["value"].as_str())
        .expect("DD_FORWARDER_STORAGE_PATH");
    let mount = offpath["mountPoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["containerPath"] == path)
        .expect("a mount point at DD_FORWARDER_STORAGE_PATH");
    let volume = mount["sourceVolume"].as_str().unwrap();
    assert!(
        td["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == volume)
    );
    assert_eq!(offpath["restartPolicy"]["enabled"], true);
}
