//! Failures: redb and I/O errors classified into [`StoreError`]s, which the API maps onto the
//! ST_00x codes (full volume → ST_004, permission → ST_005, other write/read → ST_002/ST_003).

use std::io;
use std::path::Path;

use super::StoreError;

/// A redb failure still to be classified, or a store error already decided.
pub(super) enum Fault {
    /// A redb error, classified once the operation is known.
    Redb(redb::Error),
    /// Already a store error (a refused batch, a corrupt row).
    Store(StoreError),
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Store(e)
    }
}

// One impl per redb error type rather than a blanket `Into<redb::Error>` impl, which coherence
// would reject next to `From<StoreError>`
macro_rules! redb_faults {
    ($($t:ty),*) => {$(
        impl From<$t> for Fault {
            fn from(e: $t) -> Self {
                Fault::Redb(e.into())
            }
        }
    )*};
}
redb_faults!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// Result of the store's internal steps.
pub(super) type Outcome<T> = Result<T, Fault>;

/// What the failing call was doing, which decides the kind of an otherwise unclassified error.
#[derive(Clone, Copy)]
pub(super) enum Op {
    /// Opening or initialising the file: otherwise `Unavailable` (ST_001).
    Open,
    /// A read: otherwise `Read` (ST_003).
    Read,
    /// A write: otherwise `Write` (ST_002).
    Write,
}

/// Whether redb has latched this failure, failing every later call on the handle until the file
/// is reopened.
pub(super) fn is_latched(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Redb(redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::Backend(_))
    )
}

/// The store error a fault amounts to.
pub(super) fn settle(fault: Fault, op: Op, path: &Path) -> StoreError {
    match fault {
        Fault::Store(e) => e,
        Fault::Redb(e) => classify(e, op, path),
    }
}

/// Maps a redb error onto the store's error kinds (and so onto the ST_00x codes).
pub(super) fn classify(e: redb::Error, op: Op, path: &Path) -> StoreError {
    match e {
        redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
            path: path.to_path_buf(),
        },
        redb::Error::Io(io) => io_error(&io, op, &path.display().to_string()),
        redb::Error::Backend(inner) => match inner.downcast_ref::<io::Error>() {
            Some(io) => io_error(io, op, &path.display().to_string()),
            None => by_op(op, inner.to_string()),
        },
        redb::Error::Corrupted(why) => StoreError::Corrupt(why),
        redb::Error::PreviousIo => by_op(
            op,
            "an earlier I/O failure closed the store; it reopens on the next call".into(),
        ),
        redb::Error::DatabaseClosed => StoreError::Unavailable("the store is closed".into()),
        redb::Error::UpgradeRequired(v) => StoreError::Unavailable(format!(
            "redb file format {v} must be upgraded by an older block-manager first"
        )),
        other => by_op(op, other.to_string()),
    }
}

/// Maps an I/O error: full volume, quota or file-size limit → `Full`; access or read-only volume
/// → `PermissionDenied`; invalid contents → `Corrupt`; else by operation.
pub(super) fn io_error(e: &io::Error, op: Op, context: &str) -> StoreError {
    let msg = format!("{context}: {e}");
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => {
            StoreError::Full(msg)
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            StoreError::PermissionDenied(msg)
        }
        // redb's verdict on a file that is not one of its databases ("magic number mismatch")
        io::ErrorKind::InvalidData => StoreError::Corrupt(msg),
        _ => by_op(op, msg),
    }
}

fn by_op(op: Op, msg: String) -> StoreError {
    match op {
        Op::Open => StoreError::Unavailable(msg),
        Op::Read => StoreError::Read(msg),
        Op::Write => StoreError::Write(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_onto_the_storage_error_codes() {
        let full = io::Error::from_raw_os_error(28); // ENOSPC
        let quota = io::Error::from_raw_os_error(122); // EDQUOT
        let denied = io::Error::from_raw_os_error(13); // EACCES
        let perm = io::Error::from_raw_os_error(1); // EPERM
        let rofs = io::Error::from_raw_os_error(30); // EROFS
        let too_big = io::Error::from_raw_os_error(27); // EFBIG
        let eio = io::Error::from_raw_os_error(5); // EIO
        for e in [full, quota, too_big] {
            assert!(matches!(io_error(&e, Op::Write, "x"), StoreError::Full(_)));
        }
        for e in [denied, perm, rofs] {
            assert!(matches!(
                io_error(&e, Op::Write, "x"),
                StoreError::PermissionDenied(_)
            ));
        }
        assert!(matches!(
            io_error(&eio, Op::Write, "x"),
            StoreError::Write(_)
        ));
        assert!(matches!(io_error(&eio, Op::Read, "x"), StoreError::Read(_)));
        assert!(matches!(
            io_error(&eio, Op::Open, "x"),
            StoreError::Unavailable(_)
        ));
        let garbage = io::Error::new(io::ErrorKind::InvalidData, "magic number mismatch");
        assert!(matches!(
            io_error(&garbage, Op::Open, "x"),
            StoreError::Corrupt(_)
        ));
    }

    #[test]
    fn already_open_maps_to_its_own_variant_with_the_path() {
        let e = classify(
            redb::Error::DatabaseAlreadyOpen,
            Op::Open,
            Path::new("/d/s"),
        );
        assert!(matches!(e, StoreError::AlreadyOpen { path } if path == Path::new("/d/s")));
    }
}
