//! What went wrong talking to PostgreSQL, and what it means for the service: an outage (start
//! unhealthy, answer 503, retry), a configuration error (stop with exit 2: retrying cannot
//! help), or a refusal of one operation.

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// A failure inside the engine, before it is told to the rest of the service.
#[derive(Debug)]
pub enum Fault {
    /// The database answered with an error, or the connection failed.
    Db(tokio_postgres::Error),
    /// No connection could be had from the pool in time.
    Pool(String),
    /// The database is usable but its contents forbid going on (exit 2 at start-up).
    Refused(Refusal),
    /// Already a store error (a rule the engine checks itself).
    Store(StoreError),
}

/// Why a database cannot be used by this configuration.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The schema was written by a newer block-manager.
    NewerSchema(i32),
    /// The database keeps another chain than the configured one (network, genesis or mode).
    Mismatch(String),
}

/// Result of engine work.
pub type Outcome<T> = Result<T, Fault>;

impl From<tokio_postgres::Error> for Fault {
    fn from(e: tokio_postgres::Error) -> Self {
        Fault::Db(e)
    }
}

impl From<Refusal> for Fault {
    fn from(r: Refusal) -> Self {
        Fault::Refused(r)
    }
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        Fault::Store(e)
    }
}

impl From<deadpool_postgres::PoolError> for Fault {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Fault::Db(e),
            other => Fault::Pool(other.to_string()),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NewerSchema(v) => write!(
                f,
                "the database's block-manager schema is version {v}, newer than this build's {}: upgrade this replica",
                super::schema::SCHEMA_VERSION
            ),
            Refusal::Mismatch(why) => f.write_str(why),
        }
    }
}

/// The error's SQLSTATE and message, with the server's detail when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => {
            // Keep the root cause ("connection refused"), not only "error connecting".
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

impl Fault {
    /// When retrying cannot help: the one line start-up stops with (exit 2). Failed
    /// authentication, a missing database, a certificate that does not verify, a newer schema
    /// and another chain's database are configuration errors; everything else is an outage.
    pub fn configuration_error(&self) -> Option<String> {
        match self {
            Fault::Refused(r) => Some(r.to_string()),
            Fault::Db(e) => {
                let code = e.code();
                let auth = [
                    SqlState::INVALID_PASSWORD,
                    SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
                    SqlState::INVALID_CATALOG_NAME,
                ];
                if code.is_some_and(|c| auth.contains(c)) {
                    return Some(describe(e));
                }
                // Class 42 (an undefined table or column, no privilege): the schema is not the
                // one this build made, or the role may not use it.
                if code.is_some_and(|c| c.code().starts_with("42")) {
                    return Some(format!(
                        "the database's tables are not what this build expects or may not be used by this role: {}",
                        describe(e)
                    ));
                }
                let text = describe(e);
                // rustls reports a certificate it cannot verify as an invalid certificate; a
                // server without TLS as "server does not support TLS".
                let tls = [
                    "invalid peer certificate",
                    "does not support TLS",
                    "certificate",
                ];
                tls.iter().any(|t| text.contains(t)).then_some(text)
            }
            Fault::Pool(_) | Fault::Store(_) => None,
        }
    }

    /// The store error the service sees.
    pub fn into_store(self, writing: bool) -> StoreError {
        match self {
            Fault::Store(e) => e,
            Fault::Pool(why) => StoreError::Unavailable(format!("database unreachable: {why}")),
            Fault::Refused(r) => StoreError::Unavailable(r.to_string()),
            Fault::Db(e) => {
                let text = describe(&e);
                let Some(code) = e.code() else {
                    // No SQLSTATE: the connection itself failed or was lost.
                    return StoreError::Unavailable(format!("database unreachable: {text}"));
                };
                let class = &code.code()[..2];
                if class == "08"
                    || class == "53" && *code != SqlState::DISK_FULL
                    || class == "57"
                    || *code == SqlState::LOCK_NOT_AVAILABLE
                    || *code == SqlState::READ_ONLY_SQL_TRANSACTION
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
                {
                    // Outages, shutdowns, timeouts (57014) and a standby in the way: a retry
                    // later may well succeed.
                    StoreError::Unavailable(format!("database unavailable: {text}"))
                } else if *code == SqlState::DISK_FULL {
                    StoreError::Full(text)
                } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
                    StoreError::PermissionDenied(text)
                } else if writing {
                    StoreError::Write(text)
                } else {
                    StoreError::Read(text)
                }
            }
        }
    }
}
