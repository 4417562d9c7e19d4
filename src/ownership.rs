//! Folder ownership: when a folder the service must write belongs to another user — typically a
//! host folder mounted into the container that a deployment script gave to the host's own user —
//! the one `chown` that fixes it, naming the folder as the host sees it when it is a bind mount.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The sentence to append to a "permission denied" error for `path` (a file or folder we failed
/// to create or open), or `None` when ownership is not the cause: we run as root (then it is a
/// read-only volume or the like), or the nearest existing folder on the way is already ours.
pub fn chown_hint(path: &Path) -> Option<String> {
    let (uid, gid) = process_ids()?;
    if uid == 0 {
        return None;
    }
    let (target, meta) = nearest_existing(&absolute(path))?;
    if meta.uid() == uid {
        return None;
    }
    // A file that is not ours: its folder is what to give back (with everything in it).
    let folder = if meta.is_dir() {
        target
    } else {
        target.parent()?.to_path_buf()
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let owner = format!("{}:{}", meta.uid(), meta.gid());
    let ids = format!("{uid}:{gid}");
    Some(match host_folder(&mountinfo, &folder) {
        Some(host) => format!(
            "{} belongs to {owner} and block-manager runs as {ids}: on the host, run `chown -R {ids} {}` \
             (the folder mounted on {}, a path on {})",
            folder.display(),
            host.path.display(),
            host.mount_point.display(),
            host.source
        ),
        None => format!(
            "{} belongs to {owner} and block-manager runs as {ids}: run `chown -R {ids} {}`",
            folder.display(),
            folder.display()
        ),
    })
}

/// Effective uid and gid of this process (`/proc/self/status`; `None` where there is none).
fn process_ids() -> Option<(u32, u32)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // "Uid:\treal\teffective\tsaved\tfs": the effective id decides access.
    let effective = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((effective("Uid:")?, effective("Gid:")?))
}

fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    // Lexically, without touching the disk: the path may not exist yet.
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` itself when it exists, else its nearest existing ancestor, with its metadata.
fn nearest_existing(path: &Path) -> Option<(PathBuf, std::fs::Metadata)> {
    path.ancestors()
        .find_map(|p| std::fs::metadata(p).ok().map(|m| (p.to_path_buf(), m)))
}

/// Where a folder inside a bind mount lives on the filesystem it was mounted from.
#[derive(Debug, PartialEq)]
struct HostFolder {
    /// The folder's path on its source filesystem (the host path when that is the host's root).
    path: PathBuf,
    /// Where that mount sits in our view.
    mount_point: PathBuf,
    /// The mount's source (device) as mountinfo names it.
    source: String,
}

/// Maps `folder` through the mount that holds it (`/proc/self/mountinfo` text). `None` when that
/// mount is a whole filesystem (its root is `/`): then `folder` is already the path to name.
fn host_folder(mountinfo: &str, folder: &Path) -> Option<HostFolder> {
    let mut best: Option<(PathBuf, PathBuf, String)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if !folder.starts_with(&point) {
            continue;
        }
        // The deepest mount point wins; at equal depth the later line (mounted on top) does.
        let deeper = best
            .as_ref()
            .is_none_or(|(_, p, _)| point.components().count() >= p.components().count());
        if deeper {
            let source = right.split(' ').nth(1).unwrap_or("?").to_string();
            best = Some((PathBuf::from(unescape(root)), point, source));
        }
    }
    let (root, mount_point, source) = best?;
    if root == Path::new("/") {
        return None;
    }
    let rel = folder.strip_prefix(&mount_point).ok()?;
    Some(HostFolder {
        path: if rel.as_os_str().is_empty() {
            root
        } else {
            root.join(rel)
        },
        mount_point,
        source,
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A container's view: the image's overlay root, then host folders bind-mounted on /app/data
    // and /app/logs (the first with a space in its host path), and a whole-disk mount.
    const MOUNTINFO: &str = "\
812 700 0:52 / / ro,relatime master:1 - overlay overlay rw,lowerdir=/l,upperdir=/u
813 812 0:53 / /proc rw,nosuid - proc proc rw
820 812 254:0 /srv/lucid\\040root/data/block-manager /app/data rw,relatime - ext4 /dev/vda rw
821 812 254:0 /srv/lucid/logs/block-manager /app/logs rw,relatime - ext4 /dev/vda rw
822 812 8:1 / /mnt/disk rw,relatime - ext4 /dev/sda1 rw
";

    #[test]
    fn a_folder_in_a_bind_mount_maps_to_its_host_path() {
        let h = host_folder(MOUNTINFO, Path::new("/app/data")).unwrap();
        assert_eq!(h.path, Path::new("/srv/lucid root/data/block-manager"));
        assert_eq!(h.mount_point, Path::new("/app/data"));
        assert_eq!(h.source, "/dev/vda");
        let h = host_folder(MOUNTINFO, Path::new("/app/logs/old")).unwrap();
        assert_eq!(h.path, Path::new("/srv/lucid/logs/block-manager/old"));
    }

    #[test]
    fn a_folder_on_a_whole_filesystem_keeps_its_own_path() {
        assert_eq!(host_folder(MOUNTINFO, Path::new("/mnt/disk/data")), None);
        assert_eq!(host_folder(MOUNTINFO, Path::new("/app/config")), None);
        // /app/database only shares a prefix of characters with /app/data, not a component
        assert_eq!(host_folder(MOUNTINFO, Path::new("/app/database")), None);
    }

    #[test]
    fn the_mount_mounted_last_on_a_point_wins() {
        let info = format!("{MOUNTINFO}830 812 254:0 /other /app/data rw - ext4 /dev/vdb rw\n");
        let h = host_folder(&info, Path::new("/app/data")).unwrap();
        assert_eq!(h.path, Path::new("/other"));
        assert_eq!(h.source, "/dev/vdb");
    }

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("plain\\x"), "plain\\x");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    #[test]
    fn relative_paths_are_made_absolute_lexically() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute(Path::new("data/./blocks/../x")),
            cwd.join("data/x")
        );
    }
}
