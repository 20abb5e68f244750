//! Run the real binaries: locate them, start them with an environment, wait for their readiness line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Path of a workspace binary (`offpath`, `offpath-lambda`, …) next to the test executable.
///
/// `tests/run.sh` builds them before the tests run; a missing binary fails with a hint.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --workspace --bins`, done by tests/run.sh)",
        path.display()
    );
    path
}

/// A running `offpath` process with its captured stdout and stderr.
#[derive(Debug)]
pub struct Offpath {
    child: Child,
    /// The UDP address it listens on.
    pub udp: Option<SocketAddr>,
    /// The `/health` and `/status` address.
    pub status: Option<SocketAddr>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout_thread: Option<std::thread::JoinHandle<()>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    /// The read end of stdout, held open unread ([`Offpath::start_unread_stdout`]).
    _unread_stdout: Option<std::process::ChildStdout>,
}

fn parse_addr(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

impl Offpath {
    /// Start `offpath` with exactly `env` (plus PATH and HOME) and the given arguments, and wait
    /// until it logs `offpath ready`. UDP defaults to a random port, the status endpoint to
    /// 127.0.0.1:0 and `AWS_EC2_METADATA_DISABLED` to true unless `env` says otherwise.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(args, env, true)
    }

    /// Like [`Offpath::start`], but nobody ever reads stdout (a stuck log shipper): once the pipe is
    /// full, every write to stdout blocks. [`Offpath::stdout`] stays empty.
    pub fn start_unread_stdout(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(args, env, false)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], read_stdout: bool) -> Self {
        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("DD_DOGSTATSD_PORT".into(), "__random__".into());
        vars.insert("OFFPATH_STATUS_ADDR".into(), "127.0.0.1:0".into());
        vars.insert("DD_LOG_LEVEL".into(), "info".into());
        // Tests never reach a real instance metadata service; those about it point
        // AWS_EC2_METADATA_SERVICE_ENDPOINT at a fake and set this to false.
        vars.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
        for (k, v) in env {
            vars.insert((*k).into(), (*v).into());
        }
        let mut cmd = Command::new(binary("offpath"));
        cmd.args(args)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .envs(&vars)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn offpath");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut out = child.stdout.take().expect("stdout");
        let out_buf = Arc::clone(&stdout);
        let mut unread_stdout = None;
        let stdout_thread = if read_stdout {
            Some(std::thread::spawn(move || {
                let mut chunk = [0u8; 65536];
                while let Ok(n) = out.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    out_buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            }))
        } else {
            unread_stdout = Some(out);
            None
        };
        let err = child.stderr.take().expect("stderr");
        let err_buf = Arc::clone(&stderr);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr_thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(err);
            let mut line = String::new();
            let mut ready_tx = Some(ready_tx);
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        err_buf.lock().unwrap().extend_from_slice(line.as_bytes());
                        if line.contains("offpath ready") {
                            if let Some(tx) = ready_tx.take() {
                                let _ = tx.send(line.clone());
                            }
                        }
                    }
                }
            }
        });
        let mut me = Self {
            child,
            udp: None,
            status: None,
            stdout,
            stderr,
            stdout_thread,
            stderr_thread: Some(stderr_thread),
            _unread_stdout: unread_stdout,
        };
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                me.udp = parse_addr(&line, "udp=");
                me.status = parse_addr(&line, "status=");
            }
            Err(_) => {
                let _ = me.child.kill();
                panic!("offpath did not become ready; stderr:\n{}", me.stderr());
            }
        }
        me
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we own.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Send SIGTERM and wait for exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// Wait for exit and for the output readers to finish; returns the exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let status = self.child.wait().expect("wait offpath");
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        status.code()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// stdout parsed as one JSON value per line.
    pub fn stdout_json(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// `GET http://<status>/<path>` as (status code, body), with a plain HTTP/1.0 request.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let addr = self.status.expect("status endpoint enabled");
        http_get(addr, path)
    }
}

/// `/status` of a running `offpath`, as JSON (a 200 and a JSON body, or the test fails).
pub fn status(offpath: &Offpath) -> serde_json::Value {
    let (code, body) = offpath.http_get("/status");
    assert_eq!(code, 200, "/status answered {code}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// Poll `/status` until `cond` holds (a readiness signal, not a timing assertion); returns it. Fails
/// after 60 s, showing `what`, the last `/status` and offpath's stderr.
pub fn wait_status(
    offpath: &Offpath,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(offpath);
        if cond(&s) {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "offpath never reached: {what}\n/status: {s}\nstderr:\n{}",
            offpath.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `offpath <args>` to the end with exactly `env` (plus PATH and HOME, and the EC2 metadata lookup
/// off); killed, and the test failed, after 60 s.
pub fn run_once(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let child = Command::new(binary("offpath"))
        .args(args)
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill(2) on the child we started; it has not been reaped yet.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            true
        } else {
            false
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    assert!(
        !watchdog.join().unwrap(),
        "offpath {args:?} did not finish (killed)"
    );
    out
}

/// A minimal blocking `GET` (HTTP/1.0, connection closed by the server) returning (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

impl Drop for Offpath {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A forwarder configuration for tests: `key` at the intake `url`, production defaults otherwise
/// (15 MiB retry queue, 10 s timeout, zstd level 1).
pub fn forward_config(url: &str, key: &str) -> offpath::config::ForwardConfig {
    offpath::config::ForwardConfig {
        api_key: Some(offpath::auth::ApiKey::new(key)),
        api_key_secret_arn: None,
        aws_credentials: offpath::auth::AwsCredentialSource::EnvironmentAndContainer,
        intake_url: url.to_owned(),
        endpoints: Vec::new(),
        endpoint_notes: Vec::new(),
        site: "datadoghq.com".to_owned(),
        proxy: None,
        skip_tls_verify: false,
        retry_queue_max_bytes: 15 * 1024 * 1024,
        timeout: Duration::from_secs(10),
        zstd_level: 1,
        keep_idle_connections: true,
        storage: None,
    }
}

/// A forwarder for `cfg` with its `DD_API_KEY` (`cfg.api_key`, which must be set) as a fixed key.
///
/// # Errors
/// As `Forwarder::new`.
pub fn forwarder(
    cfg: &offpath::config::ForwardConfig,
    telemetry: std::sync::Arc<offpath::telemetry::Telemetry>,
    overflow: Option<tokio::sync::mpsc::Sender<offpath::encode::Payload>>,
) -> Result<offpath::forward::Forwarder, offpath::forward::ForwardError> {
    let key = cfg
        .api_key
        .clone()
        .expect("a test forwarder needs cfg.api_key");
    offpath::forward::Forwarder::new(
        cfg,
        offpath::auth::ApiKeySource::Fixed(key),
        telemetry,
        overflow,
    )
}

/// Two sketches that exercise the record formats' edge cases: a small exact one at `ts - 20`, and
/// one at `ts - 10` with negative keys, a full 65,535 bin and an empty bin.
pub fn edge_sketches(ts: i64) -> Vec<offpath::model::DogSketch> {
    use offpath::model::DogSketch;
    vec![
        DogSketch {
            ts: ts - 20,
            cnt: 3,
            min: 0.5,
            max: 1000.0,
            sum: 1001.5,
            avg: 333.8333333333333,
            k: vec![1293, 1338, 1784],
            n: vec![1, 1, 1],
        },
        DogSketch {
            ts: ts - 10,
            cnt: 70_000,
            min: -10.0,
            max: 2.0,
            sum: -3.0,
            avg: -4.2857142857142855e-5,
            k: vec![-1487, 1383, 1383],
            n: vec![4465, 65535, 0],
        },
    ]
}
