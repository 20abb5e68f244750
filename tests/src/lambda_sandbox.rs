//! A Lambda sandbox in a test: the fake Runtime API drives a real runtime client (Python's `awslambdaric`
//! running a handler wrapped by Datadog's `datadog-lambda` library) and, when there is one, the real
//! `offpath-lambda` installed as Datadog's extension file (`/opt/extensions/datadog-agent`), the way Lambda
//! does: both get the invocation, the runtime answers, `platform.runtimeDone` goes to the extension, and the
//! invocation ends when both have asked for their next event; then `platform.report` follows.
//!
//! The libraries expect fixed places (`/opt/extensions/datadog-agent`, `127.0.0.1:8124` and `:8125`), so a
//! sandbox runs in private mount and network namespaces: [`in_namespaces`] re-runs the calling test binary
//! (or bench binary) under `unshare -mn`, where [`enter`] brings the loopback interface up and puts an empty
//! `/opt` in place.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::lambda_runtime::{Call, CallKind, FakeRuntime};

/// Set in the re-run process: it is inside the namespaces.
pub const INSIDE: &str = "OFFPATH_SANDBOX_NAMESPACES";
/// The Python interpreter with `awslambdaric` and `datadog-lambda` (tests/run.sh makes it).
pub const PYTHON_ENV: &str = "OFFPATH_LAMBDA_PYTHON";
/// Where Datadog's libraries look for the extension.
pub const EXTENSION_FILE: &str = "/opt/extensions/datadog-agent";
const INSTALL_HINT: &str = "the Lambda Python peers are missing: run `bash tests/run.sh` (it makes the \
    virtual environment target/lambda-python with awslambdaric and datadog-lambda), or point \
    OFFPATH_LAMBDA_PYTHON at a python that has them";

/// Whether this process is the one re-run inside the namespaces.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Run `program args` under `unshare --mount --net` with [`INSIDE`] set; returns its exit status and output.
pub fn in_namespaces(program: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    unshare(
        &["--mount", "--net", "--propagation", "private"],
        program,
        args,
    )
}

/// [`in_namespaces`] plus a private PID namespace with its own `/proc`, so `/proc` lists only the
/// sandbox's processes, as in Lambda (the enhanced metrics' `/proc` snapshots cost what they cost there).
pub fn in_namespaces_with_pids(
    program: &Path,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    unshare(
        &[
            "--mount",
            "--net",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
        ],
        program,
        args,
    )
}

fn unshare(flags: &[&str], program: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = std::process::Command::new("unshare")
        .args(flags)
        .arg("--")
        .arg(program)
        .args(args)
        .env(INSIDE, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run unshare (util-linux; needs root or CAP_SYS_ADMIN): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Inside the namespaces: loopback up, an empty tmpfs on `/opt`, and `binary` installed as
/// [`EXTENSION_FILE`] (pass `None` for a sandbox without an extension).
pub fn enter(binary: Option<&Path>) {
    assert!(inside(), "only inside the namespaces (see in_namespaces)");
    let run = |cmd: &str, args: &[&str]| {
        let status = std::process::Command::new(cmd).args(args).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "{cmd} {args:?}: {status:?}"
        );
    };
    run("ip", &["link", "set", "lo", "up"]);
    run("mount", &["-t", "tmpfs", "-o", "size=64m", "tmpfs", "/opt"]);
    if let Some(binary) = binary {
        std::fs::create_dir_all("/opt/extensions").unwrap();
        std::fs::copy(binary, EXTENSION_FILE).unwrap();
    }
}

/// The Python interpreter of the Lambda peers, checked.
pub fn python() -> PathBuf {
    let python = std::env::var_os(PYTHON_ENV).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambda-python/bin/python3"),
        PathBuf::from,
    );
    let ok = std::process::Command::new(&python)
        .args(["-c", "import awslambdaric, datadog_lambda"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{INSTALL_HINT} ({} cannot import them)",
        python.display()
    );
    python
}

/// A Python runtime (`python -m awslambdaric handler.fn`) running `handler_source` as `handler.py`.
pub struct PythonRuntime {
    child: tokio::process::Child,
    output: Arc<Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for PythonRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PythonRuntime")
    }
}

impl PythonRuntime {
    /// Start it against `rt` with `env` (plus PATH and the Lambda variables a runtime gets).
    pub fn start(rt: &FakeRuntime, handler_source: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("handler.py"), handler_source).unwrap();
        let mut child = tokio::process::Command::new(python())
            .args(["-m", "awslambdaric", "handler.fn"])
            .current_dir(dir.path())
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH"))
            .envs([
                ("AWS_LAMBDA_RUNTIME_API", rt.runtime_api().as_str()),
                (
                    "AWS_LAMBDA_FUNCTION_NAME",
                    crate::lambda_runtime::FUNCTION_NAME,
                ),
                ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12"),
                ("LAMBDA_TASK_ROOT", dir.path().to_str().unwrap()),
                ("PYTHONUNBUFFERED", "1"),
            ])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = Arc::clone(&output);
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
        }
        Self {
            child,
            output,
            _dir: dir,
        }
    }

    /// Everything the runtime printed (handler logs, the library's debug lines).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// How one invocation went.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The event reached the runtime -> the runtime posted its response (or error): the function's duration.
    pub function: Duration,
    /// The event reached the runtime -> the runtime and the extension (if any) have both asked for their
    /// next event: what Lambda bills, and what holds the next invocation of a shard back.
    pub next: Duration,
    /// The response (or the error) the runtime posted.
    pub response: Value,
    /// Whether the runtime posted an error.
    pub failed: bool,
}

fn at(calls: &[Call], pred: impl Fn(&CallKind) -> bool) -> Option<Instant> {
    calls.iter().find(|c| pred(&c.kind)).map(|c| c.at)
}

/// The RFC 3339 form of now, as Telemetry API events carry it.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// One platform event as a Telemetry API batch.
pub fn platform_event(kind: &str, record: Value) -> Value {
    json!([{ "time": now_rfc3339(), "type": kind, "record": record }])
}

/// Post `platform.initReport` (on-demand, `duration`) once the runtime is ready (its first `invocation/next`).
pub async fn init_report(rt: &FakeRuntime, duration: Duration) {
    rt.wait_for("the runtime's first invocation/next", |c| {
        c.iter().any(|c| c.kind == CallKind::RuntimeNext)
    })
    .await;
    let record = json!({
        "initializationType": "on-demand",
        "phase": "init",
        "status": "success",
        "metrics": { "durationMs": duration.as_secs_f64() * 1e3 },
    });
    rt.post_telemetry(&platform_event("platform.initReport", record))
        .await;
}

/// Run invocation `id` with `event` through the runtime and, when `extension`, the extension; post
/// `runtimeDone` and `report` (with the durations measured here) when the extension subscribed.
pub async fn invoke(rt: &FakeRuntime, id: &str, event: Value, extension: bool) -> Invocation {
    let deadline = Duration::from_secs(60);
    if extension {
        rt.invoke(id, deadline).await;
    }
    rt.invoke_runtime(id, event, deadline).await;
    let answered = |k: &CallKind| matches!(k, CallKind::RuntimeResponse { request_id, .. } | CallKind::RuntimeError { request_id, .. } if request_id == id);
    let calls = rt
        .wait_for(&format!("the runtime's answer to {id}"), |c| {
            c.iter().any(|c| answered(&c.kind))
        })
        .await;
    let delivered = at(&calls, |k| {
        *k == CallKind::RuntimeEventDelivered(id.to_owned())
    })
    .unwrap();
    let answer = calls.iter().find(|c| answered(&c.kind)).unwrap();
    let (response, failed) = match &answer.kind {
        CallKind::RuntimeResponse { body, .. } => (body.clone(), false),
        CallKind::RuntimeError { body, .. } => (body.clone(), true),
        _ => unreachable!(),
    };
    let function = answer.at - delivered;
    if rt.subscribed() {
        let record = json!({
            "requestId": id,
            "status": if failed { "error" } else { "success" },
            "metrics": {
                "durationMs": function.as_secs_f64() * 1e3,
                "producedBytes": response.to_string().len(),
            },
            "spans": [],
        });
        rt.post_telemetry(&platform_event("platform.runtimeDone", record))
            .await;
    }
    let answered_at = answer.at;
    let invoke_delivered = format!("INVOKE {id}");
    let calls = rt
        .wait_for(&format!("the next event/next calls after {id}"), |c| {
            let runtime = c
                .iter()
                .any(|c| c.at >= answered_at && c.kind == CallKind::RuntimeNext);
            let ext = !extension
                || c.iter()
                    .skip_while(|c| c.kind != CallKind::EventDelivered(invoke_delivered.clone()))
                    .any(|c| c.kind == CallKind::NextEvent);
            runtime && ext
        })
        .await;
    let runtime_next = calls
        .iter()
        .find(|c| c.at >= answered_at && c.kind == CallKind::RuntimeNext)
        .unwrap()
        .at;
    let ext_next = calls
        .iter()
        .skip_while(|c| c.kind != CallKind::EventDelivered(invoke_delivered.clone()))
        .find(|c| c.kind == CallKind::NextEvent)
        .map(|c| c.at);
    let done = ext_next.map_or(runtime_next, |e| e.max(runtime_next));
    let next = done - delivered;
    if rt.subscribed() {
        let ms = next.as_secs_f64() * 1e3;
        let record = json!({
            "requestId": id,
            "status": if failed { "error" } else { "success" },
            "metrics": {
                "durationMs": ms,
                "billedDurationMs": ms.ceil(),
                "memorySizeMB": 128,
                "maxMemoryUsedMB": 64,
            },
        });
        rt.post_telemetry(&platform_event("platform.report", record))
            .await;
    }
    Invocation {
        function,
        next,
        response,
        failed,
    }
}
