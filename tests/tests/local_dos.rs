//! Local denial of service, tried as a hostile neighbour would: another user holding every Unix stream
//! connection slot, and half-sent requests holding the status endpoint. A legitimate client and
//! `offpath health` are still served, and `/status` counts what was refused, evicted and timed out.
//! Nothing here depends on timing: waits poll `/status` for what must eventually be true.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use offpath_tests::support::{self, Offpath, wait_status};
use serde_json::Value;

/// The user the neighbour runs as (`nobody`).
const NOBODY: u32 = 65534;

fn unix_listener(s: &Value) -> &Value {
    s["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"].as_str().unwrap().starts_with("unix "))
        .unwrap_or_else(|| panic!("no unix listener in {s}"))
}

/// `offpath health --addr <status>`: its exit code and output.
fn offpath_health(addr: SocketAddr) -> (Option<i32>, String) {
    let out = Command::new(support::binary("offpath"))
        .args(["health", "--addr", &addr.to_string(), "--timeout", "5"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// A child process running as another user that holds `n` connections to a Unix stream socket until
/// dropped.
struct Neighbour {
    pid: libc::pid_t,
    /// Closing it lets the child exit.
    release: libc::c_int,
}

impl Neighbour {
    /// Fork a child that becomes `uid`, connects `n` times to `path` and holds the connections.
    /// Returns once every `connect` succeeded.
    fn hold(uid: u32, path: &Path, n: usize) -> Neighbour {
        // SAFETY: sockaddr_un is plain C data; all-zero is a valid empty address.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_encoded_bytes();
        assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
        for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        let (mut ready, mut release) = ([0; 2], [0; 2]);
        // SAFETY: two valid 2-element arrays for pipe(2).
        assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
        assert_eq!(unsafe { libc::pipe(release.as_mut_ptr()) }, 0);
        // SAFETY: the child makes only system calls (no allocation, no lock) before `_exit`, which is
        // what is allowed after fork in a multi-threaded process.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: plain system calls on descriptors and memory this process owns.
            unsafe {
                libc::close(ready[0]);
                libc::close(release[1]);
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    libc::_exit(2);
                }
                for _ in 0..n {
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                    if fd < 0 || libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                        libc::_exit(3);
                    }
                }
                libc::write(ready[1], b"r".as_ptr().cast(), 1);
                let mut b = 0u8;
                libc::read(release[0], (&raw mut b).cast(), 1);
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copies of the child's ends; reading one byte into a local.
        let got = unsafe {
            libc::close(ready[1]);
            libc::close(release[0]);
            let mut b = 0u8;
            let got = libc::read(ready[0], (&raw mut b).cast(), 1);
            libc::close(ready[0]);
            got
        };
        let me = Neighbour {
            pid,
            release: release[1],
        };
        if got != 1 {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!(
                "the neighbour could not connect as uid {uid} (exit status {})",
                libc::WEXITSTATUS(status)
            );
        }
        me
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        // SAFETY: closing our pipe end lets the child exit; then reap it.
        unsafe {
            libc::close(self.release);
            let mut status = 0;
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn another_users_128_idle_connections_cannot_lock_a_client_out_of_the_unix_stream_socket() {
    if !is_root() {
        eprintln!("skipped: connecting as another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The neighbour must reach the socket file (mode 0722, as the Agent's) through the directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("dsd-stream.socket");
    let offpath = Offpath::start(
        &[],
        &[
            ("DD_DOGSTATSD_STREAM_SOCKET", sock.to_str().unwrap()),
            ("DD_DOGSTATSD_PORT", "0"),
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
        ],
    );
    // Every slot, held idle by `nobody` (the listener accepts them in order, before ours).
    let neighbour = Neighbour::hold(NOBODY, &sock, 128);

    // A legitimate client (root here) connects and is served.
    let mut client = UnixStream::connect(&sock).unwrap();
    let frames = 100u64;
    for _ in 0..frames {
        let f = b"legit.requests:1|c";
        client.write_all(&(f.len() as u32).to_le_bytes()).unwrap();
        client.write_all(f).unwrap();
    }
    client.flush().unwrap();
    let s = wait_status(&offpath, "the client's frames parsed", |s| {
        s["points"]["received"].as_u64() == Some(frames)
    });
    let unix = unix_listener(&s);
    assert_eq!(unix["connections_evicted"], 1, "{s}");
    assert_eq!(unix["connections_refused"], 0, "{s}");
    let (code, out) = offpath_health(offpath.status.unwrap());
    assert_eq!(code, Some(0), "{out}");

    // The neighbour now holds 127 slots, more than its share: one more of its connections is closed.
    let more = Neighbour::hold(NOBODY, &sock, 1);
    let s = wait_status(&offpath, "the neighbour's extra connection refused", |s| {
        unix_listener(s)["connections_refused"].as_u64() == Some(1)
    });
    assert_eq!(unix_listener(&s)["connections_evicted"], 1, "{s}");
    // And the client's connection is still served.
    let f = b"legit.requests:1|c";
    client.write_all(&(f.len() as u32).to_le_bytes()).unwrap();
    client.write_all(f).unwrap();
    wait_status(&offpath, "the client's next frame parsed", |s| {
        s["points"]["received"].as_u64() == Some(frames + 1)
    });
    drop((more, neighbour));
}

#[test]
fn sixty_four_half_sent_status_requests_cannot_fail_offpath_health() {
    let offpath = Offpath::start(
        &[],
        &[
            ("DD_DOGSTATSD_PORT", "0"),
            ("OFFPATH_FLUSH_INTERVAL", "3600"),
            ("OFFPATH_SELF_TELEMETRY", "false"),
        ],
    );
    let addr = offpath.status.unwrap();
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n").unwrap();
        held.push(s);
    }
    for _ in 0..5 {
        let (code, out) = offpath_health(addr);
        assert_eq!(code, Some(0), "{out}\n{}", offpath.stderr());
    }
    // /status is answered too and counts the connections it closed; those left waiting for their
    // headers time out.
    let s = wait_status(&offpath, "a half-sent request timed out", |s| {
        s["status_server"]["timed_out"].as_u64() >= Some(1)
    });
    let evicted = s["status_server"]["evicted"].as_u64().unwrap();
    assert!(evicted >= 64 - 16, "{s}");
    assert_eq!(s["status_server"]["refused"], 0, "{s}");
    drop(held);
}
