//! The names of the files the embedded engine keeps beside the store file (the body log's,
//! the write probe's), in one place: the handle and the body log both name them from here,
//! and neither imports the other for it.

use std::path::{Path, PathBuf};

/// The write probe's file: hidden, beside the store file.
pub(super) fn probe_path(store: &Path) -> PathBuf {
    store.with_file_name(format!(".{}.write-probe", file_name(store)))
}

/// `<store file name>.<suffix>` beside the store file.
pub(super) fn sibling(store: &Path, suffix: &str) -> PathBuf {
    store.with_file_name(format!("{}.{suffix}", file_name(store)))
}

/// The store file's name, for the files kept beside it.
fn file_name(store: &Path) -> String {
    store
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned())
}
