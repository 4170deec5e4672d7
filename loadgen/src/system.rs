//! What loadgen asks of and learns about the operating system: the open-files
//! limit raised to its hard limit, resident memory, and the facts about the
//! machine a report records.

use serde::{Deserialize, Serialize};

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after.
pub fn raise_nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Resident set size of this process in bytes (0 where unknown).
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// The machine a run or a shard ran on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Host name.
    pub hostname: String,
    /// `uname -sr`.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs online.
    pub cpus: usize,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Worker threads loadgen ran.
    pub threads: usize,
    /// I/O driver the workers used (`io_uring` or `epoll`).
    pub driver: String,
    /// Soft open-files limit after raising it.
    pub open_files_limit: u64,
}

impl Machine {
    /// Describes this machine.
    pub fn describe(threads: usize, driver: &str, open_files_limit: u64) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let hostname = read("/proc/sys/kernel/hostname").trim().to_string();
        let kernel = format!(
            "{} {}",
            read("/proc/sys/kernel/ostype").trim(),
            read("/proc/sys/kernel/osrelease").trim()
        );
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("")
            .trim()
            .to_string();
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024;
        Machine {
            hostname,
            kernel,
            cpu,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_bytes,
            threads,
            driver: driver.to_string(),
            open_files_limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_memory_are_read() {
        let (soft, hard) = raise_nofile_limit();
        assert!(soft > 0 && soft == hard, "soft {soft} hard {hard}");
        assert!(rss_bytes() > 0);
        let m = Machine::describe(2, "epoll", soft);
        assert!(m.cpus >= 1 && m.memory_bytes > 0);
    }
}
