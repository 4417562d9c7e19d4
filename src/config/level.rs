//! Log level names as the configuration writes them (Python's and Rust's): `logging.level`,
//! the logging file's handler and logger levels. Validation and the log set-up both read them
//! here, so the configuration names no logging code.

use tracing::Level;

/// Maps Python and Rust level names to a tracing level (`CRITICAL` → error).
pub fn parse_level(name: &str) -> Option<Level> {
    match name.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some(Level::TRACE),
        "DEBUG" => Some(Level::DEBUG),
        "INFO" => Some(Level::INFO),
        "WARN" | "WARNING" => Some(Level::WARN),
        "ERROR" | "CRITICAL" | "FATAL" => Some(Level::ERROR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_level_names_map_to_tracing_levels() {
        assert_eq!(parse_level("WARNING"), Some(Level::WARN));
        assert_eq!(parse_level("critical"), Some(Level::ERROR));
        assert_eq!(parse_level("verbose"), None);
    }
}
