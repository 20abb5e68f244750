//! Snapshots of the sandbox's resource use from `/proc` and `statfs(/tmp)`, for the enhanced metrics.
//!
//! A snapshot is a handful of small file reads, taken at events the extension is awake for (`INVOKE`,
//! `runtimeDone`), never in a polling loop. In Lambda `/proc` shows the sandbox's own micro-VM: `/proc/stat`
//! its CPUs, `/proc/net/dev` its interfaces (`vinternal_1`, or `vint_runtime`), and a few processes (the
//! runtime and the extensions). The parsers are pure; [`Sampler`] does the reading.

use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Process entries looked at under `/proc` (a sandbox has a handful).
const MAX_PROCESSES: usize = 256;
/// Per-core lines kept from `/proc/stat`.
const MAX_CORES: usize = 256;
/// Interfaces whose counters are the function's network traffic, by name prefix.
const INTERFACES: [&str; 2] = ["vinternal_1", "vint_runtime"];
/// Used when no process shows a limit (Lambda's defaults).
const DEFAULT_LIMIT: f64 = 1024.0;
/// [`Sampler::limits`] reads `/proc` again after answering from its copy this many times: limits are set
/// at start and seldom change, and reading them costs a walk of `/proc` and a file per process.
const LIMITS_REREAD: u32 = 64;

/// CPU time counters from `/proc/stat`, in milliseconds since boot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cpu {
    /// All CPUs' user time.
    pub user_ms: f64,
    /// All CPUs' system time.
    pub system_ms: f64,
    /// All CPUs' idle time.
    pub idle_ms: f64,
    /// Each CPU's idle time.
    pub core_idle_ms: Vec<f64>,
}

/// Bytes received and sent on the function's interface since boot.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Net {
    /// Received bytes.
    pub rx_bytes: f64,
    /// Sent bytes.
    pub tx_bytes: f64,
}

/// The counters compared between `INVOKE` and `runtimeDone`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Counters {
    /// `/proc/stat`.
    pub cpu: Option<Cpu>,
    /// `/proc/uptime`, milliseconds.
    pub uptime_ms: Option<f64>,
    /// `/proc/net/dev`.
    pub net: Option<Net>,
}

/// Resources in use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Bytes used in `/tmp`.
    pub tmp_used: Option<f64>,
    /// Open file descriptors, all processes.
    pub fd_use: Option<f64>,
    /// Threads, all processes.
    pub threads_use: Option<f64>,
}

impl Usage {
    /// The larger of each value.
    pub fn max(self, other: Usage) -> Usage {
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Usage {
            tmp_used: max(self.tmp_used, other.tmp_used),
            fd_use: max(self.fd_use, other.fd_use),
            threads_use: max(self.threads_use, other.threads_use),
        }
    }
}

/// The sandbox's limits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Size of `/tmp` in bytes.
    pub tmp_max: Option<f64>,
    /// The smallest `Max open files` soft limit of the processes (1024 when none shows one).
    pub fd_max: f64,
    /// The smallest `Max processes` soft limit of the processes (1024 when none shows one).
    pub threads_max: f64,
}

/// Parse `/proc/stat`: the `cpu` line's user, system and idle ticks and each `cpuN` line's idle ticks,
/// converted with `ticks_per_second` (`_SC_CLK_TCK`). `None` without a `cpu` line or without any `cpuN`.
pub fn parse_stat(text: &str, ticks_per_second: f64) -> Option<Cpu> {
    let ms = |ticks: &str| {
        ticks
            .parse::<f64>()
            .ok()
            .map(|t| t / ticks_per_second * 1000.0)
    };
    let mut cpu: Option<Cpu> = None;
    let mut cores = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(label) = fields.next() else { continue };
        if label == "cpu" {
            let user = ms(fields.next()?)?;
            let _nice = fields.next()?;
            let system = ms(fields.next()?)?;
            let idle = ms(fields.next()?)?;
            cpu = Some(Cpu {
                user_ms: user,
                system_ms: system,
                idle_ms: idle,
                core_idle_ms: Vec::new(),
            });
        } else if label.starts_with("cpu") && cores.len() < MAX_CORES {
            cores.push(ms(fields.nth(3)?)?);
        }
    }
    let mut cpu = cpu?;
    if cores.is_empty() {
        return None;
    }
    cpu.core_idle_ms = cores;
    Some(cpu)
}

/// Parse `/proc/uptime` (seconds since boot, then idle seconds) into milliseconds since boot.
pub fn parse_uptime(text: &str) -> Option<f64> {
    let seconds: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    Some(seconds * 1000.0)
}

/// Parse `/proc/net/dev`: received and sent bytes of the first of the function's interfaces listed.
pub fn parse_net_dev(text: &str) -> Option<Net> {
    text.lines().find_map(|line| {
        let (name, counters) = line.split_once(':')?;
        let name = name.trim();
        if !INTERFACES.iter().any(|i| name.starts_with(i)) {
            return None;
        }
        // Receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes ...
        let mut fields = counters.split_ascii_whitespace();
        let rx_bytes = fields.next()?.parse().ok()?;
        let tx_bytes = fields.nth(7)?.parse().ok()?;
        Some(Net { rx_bytes, tx_bytes })
    })
}

/// The soft limit named `name` (`Max open files`, `Max processes`) in a `/proc/<pid>/limits`; `None` when
/// absent or `unlimited`.
pub fn parse_limit(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// Reads snapshots from a `/proc` tree and a `/tmp` directory.
#[derive(Debug)]
pub struct Sampler {
    proc_root: PathBuf,
    tmp: Option<CString>,
    ticks_per_second: f64,
    buf: String,
    /// The limits last read, and how many times they were answered since.
    limits: Option<(Limits, u32)>,
}

impl Sampler {
    /// A sampler of `proc_root` (`/proc`) and `tmp` (`/tmp`).
    pub fn new(proc_root: &Path, tmp: &Path) -> Self {
        // SAFETY: sysconf reads a constant of the system; no memory is passed.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            proc_root: proc_root.to_owned(),
            tmp: tmp.to_str().and_then(|t| CString::new(t).ok()),
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
            buf: String::with_capacity(4096),
            limits: None,
        }
    }

    /// Read a file under the `/proc` root into the reused buffer.
    fn read(&mut self, rel: &str) -> Option<&str> {
        self.buf.clear();
        let mut file = std::fs::File::open(self.proc_root.join(rel)).ok()?;
        file.read_to_string(&mut self.buf).ok()?;
        Some(&self.buf)
    }

    /// CPU, uptime and network counters.
    pub fn counters(&mut self) -> Counters {
        let ticks = self.ticks_per_second;
        Counters {
            cpu: self.read("stat").and_then(|t| parse_stat(t, ticks)),
            uptime_ms: self.read("uptime").and_then(parse_uptime),
            net: self.read("net/dev").and_then(parse_net_dev),
        }
    }

    /// Resources in use now: `/tmp`, file descriptors and threads of every process.
    pub fn usage(&mut self) -> Usage {
        let (mut fds, mut threads, mut seen) = (0usize, 0usize, false);
        for pid in self.pids() {
            let dir = self.proc_root.join(&pid);
            if let Ok(entries) = std::fs::read_dir(dir.join("fd")) {
                fds += entries.count();
                seen = true;
            }
            if let Ok(entries) = std::fs::read_dir(dir.join("task")) {
                threads += entries.count();
            }
        }
        Usage {
            tmp_used: self.statvfs().map(|(_, used)| used),
            fd_use: seen.then_some(fds as f64),
            threads_use: (threads > 0).then_some(threads as f64),
        }
    }

    /// The sandbox's limits: read from `/proc` at the first call and again every [`LIMITS_REREAD`] calls,
    /// answered from the last reading in between.
    pub fn limits(&mut self) -> Limits {
        if let Some((limits, uses)) = self.limits.as_mut()
            && *uses < LIMITS_REREAD
        {
            *uses += 1;
            return *limits;
        }
        let limits = self.read_limits();
        self.limits = Some((limits, 1));
        limits
    }

    fn read_limits(&mut self) -> Limits {
        let mut limits = Limits {
            tmp_max: self.statvfs().map(|(max, _)| max),
            fd_max: DEFAULT_LIMIT,
            threads_max: DEFAULT_LIMIT,
        };
        for pid in self.pids() {
            let Some(text) = self.read(&format!("{pid}/limits")) else {
                continue;
            };
            if let Some(v) = parse_limit(text, "Max open files") {
                limits.fd_max = limits.fd_max.min(v);
            }
            if let Some(v) = parse_limit(text, "Max processes") {
                limits.threads_max = limits.threads_max.min(v);
            }
        }
        limits
    }

    /// The numeric entries of the `/proc` root, at most [`MAX_PROCESSES`].
    fn pids(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.proc_root) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .take(MAX_PROCESSES)
            .collect()
    }

    /// `/tmp`'s size and bytes used.
    fn statvfs(&self) -> Option<(f64, f64)> {
        let path = self.tmp.as_ref()?;
        // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string and `st` a valid statvfs to write into.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        let block = st.f_frsize as f64;
        let total = st.f_blocks as f64 * block;
        let used = (st.f_blocks as f64 - st.f_bavail as f64) * block;
        Some((total, used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  1000 5 500 8000 10 0 3 0 0 0\n\
                        cpu0 600 2 300 3900 5 0 2 0 0 0\n\
                        cpu1 400 3 200 4100 5 0 1 0 0 0\n\
                        intr 12345\nctxt 999\nbtime 1700000000\n";

    #[test]
    fn proc_stat_gives_user_system_idle_and_each_core_idle_in_ms() {
        let cpu = parse_stat(STAT, 100.0).unwrap();
        assert_eq!(cpu.user_ms, 10_000.0);
        assert_eq!(cpu.system_ms, 5_000.0);
        assert_eq!(cpu.idle_ms, 80_000.0);
        assert_eq!(cpu.core_idle_ms, [39_000.0, 41_000.0]);
        assert_eq!(parse_stat("cpu 1 2 3 4\n", 100.0), None, "no core line");
        assert_eq!(parse_stat("cpu0 1 2 3 4\n", 100.0), None, "no total line");
        assert_eq!(parse_stat("cpu x 2 3 4\ncpu0 1 2 3 4\n", 100.0), None);
        assert_eq!(parse_stat("", 100.0), None);
    }

    #[test]
    fn proc_uptime_is_read_in_ms() {
        assert_eq!(parse_uptime("12345.67 54321.00\n"), Some(12_345_670.0));
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("soon"), None);
    }

    #[test]
    fn proc_net_dev_reads_the_function_interface_only() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n\
            vinternal_1: 1800 12 0 0 0 0 0 0 2400 13 0 0 0 0 0 0\n";
        assert_eq!(
            parse_net_dev(text),
            Some(Net {
                rx_bytes: 1800.0,
                tx_bytes: 2400.0
            })
        );
        let runtime = "vint_runtime: 7 1 0 0 0 0 0 0 9 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(runtime).unwrap().tx_bytes, 9.0);
        assert_eq!(
            parse_net_dev("eth0: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"),
            None
        );
        assert_eq!(parse_net_dev("vinternal_1: 1 2\n"), None);
    }

    #[test]
    fn limits_read_the_soft_value() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             1024                 1024                 processes\n\
                    Max open files            65535                65536                files\n\
                    Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limit(text, "Max open files"), Some(65535.0));
        assert_eq!(parse_limit(text, "Max processes"), Some(1024.0));
        assert_eq!(parse_limit(text, "Max locked memory"), None);
        assert_eq!(parse_limit(text, "Max pending signals"), None);
    }

    #[test]
    fn usage_keeps_the_larger_of_each_value() {
        let a = Usage {
            tmp_used: Some(10.0),
            fd_use: Some(5.0),
            threads_use: None,
        };
        let b = Usage {
            tmp_used: Some(4.0),
            fd_use: Some(9.0),
            threads_use: Some(3.0),
        };
        assert_eq!(
            a.max(b),
            Usage {
                tmp_used: Some(10.0),
                fd_use: Some(9.0),
                threads_use: Some(3.0)
            }
        );
    }

    #[test]
    fn a_sampler_reads_a_proc_tree_and_a_tmp_directory() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        for pid in ["7", "8"] {
            std::fs::create_dir_all(proc_root.join(pid).join("fd")).unwrap();
            std::fs::create_dir_all(proc_root.join(pid).join("task/1")).unwrap();
        }
        std::fs::create_dir_all(proc_root.join("self/fd")).unwrap();
        for fd in ["0", "1", "2"] {
            std::fs::write(proc_root.join("7/fd").join(fd), "").unwrap();
        }
        std::fs::write(proc_root.join("8/fd/0"), "").unwrap();
        std::fs::create_dir_all(proc_root.join("8/task/2")).unwrap();
        std::fs::write(
            proc_root.join("7/limits"),
            "Max processes 900 900 processes\nMax open files 2048 4096 files\n",
        )
        .unwrap();
        std::fs::write(proc_root.join("stat"), STAT).unwrap();
        std::fs::write(proc_root.join("uptime"), "10.5 20.0\n").unwrap();
        std::fs::create_dir_all(proc_root.join("net")).unwrap();
        std::fs::write(
            proc_root.join("net/dev"),
            "vinternal_1: 100 1 0 0 0 0 0 0 200 1 0 0 0 0 0 0\n",
        )
        .unwrap();

        let mut s = Sampler::new(&proc_root, dir.path());
        let c = s.counters();
        assert_eq!(c.uptime_ms, Some(10_500.0));
        assert_eq!(c.net.unwrap().rx_bytes, 100.0);
        assert_eq!(c.cpu.unwrap().core_idle_ms.len(), 2);
        let u = s.usage();
        assert_eq!(u.fd_use, Some(4.0));
        assert_eq!(u.threads_use, Some(3.0));
        assert!(u.tmp_used.is_some());
        let l = s.limits();
        assert_eq!(l.fd_max, 1024.0, "the default is the ceiling");
        assert_eq!(l.threads_max, 900.0);
        assert!(l.tmp_max.unwrap() > 0.0);
        // A changed limit shows at the next reading, LIMITS_REREAD calls after the first.
        std::fs::write(
            proc_root.join("7/limits"),
            "Max processes 800 800 processes\nMax open files 512 4096 files\n",
        )
        .unwrap();
        for _ in 1..LIMITS_REREAD {
            assert_eq!(s.limits(), l);
        }
        let reread = s.limits();
        assert_eq!((reread.fd_max, reread.threads_max), (512.0, 800.0));

        let mut missing = Sampler::new(&dir.path().join("none"), &dir.path().join("none"));
        assert_eq!(missing.counters(), Counters::default());
        assert_eq!(missing.usage(), Usage::default());
        assert_eq!(missing.limits().tmp_max, None);
    }
}
