//! The open-file limit: raised from the soft to the hard limit at start, and the connection
//! cap kept below it with a reserve for everything else the process opens.

use super::tracker::{OVERFLOW, PENDING_SHEDS};

/// Descriptors kept for the store and its body log, log files, the upstream client, the
/// runtime and /proc reads, plus the overflow connections and shed ones still closing.
pub const FD_RESERVE: u64 = 40 + (OVERFLOW + PENDING_SHEDS) as u64;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force
/// (`None` where it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        let current: u64 = lim.rlim_cur;
        // An unlimited hard limit still cannot exceed the kernel's nr_open (1 Mi by default).
        let target = if lim.rlim_max == libc::RLIM_INFINITY {
            1 << 20
        } else {
            lim.rlim_max
        };
        if current >= target {
            return Some(current);
        }
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            Some(target)
        } else {
            tracing::warn!(
                soft = current,
                hard = target,
                error = %std::io::Error::last_os_error(),
                "cannot raise the open-file limit"
            );
            Some(current)
        }
    }
    #[cfg(not(unix))]
    None
}

/// The connection cap: `max_connections`, but never more than the open-file limit less the
/// reserve (with a tiny limit, a quarter of it), and at least one.
pub fn connection_cap(max_connections: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return max_connections.max(1);
    };
    let room = limit.saturating_sub(FD_RESERVE).max(limit / 4).max(1);
    max_connections
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit_less_the_reserve() {
        assert_eq!(connection_cap(1024, Some(1 << 20)), 1024);
        assert_eq!(connection_cap(1024, Some(256)), 256 - FD_RESERVE as usize);
        assert_eq!(connection_cap(1024, Some(40)), 10);
        assert_eq!(connection_cap(16, None), 16);
        assert_eq!(connection_cap(1024, Some(0)), 1);
    }
}
