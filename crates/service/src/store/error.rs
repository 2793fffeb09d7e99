//! What the store's callers can tell from a failure: a rule the request broke (a 4xx),
//! the database unavailable for now (nothing committed; the same request may succeed in
//! a moment), or a fault of ours. The classification of sqlx's errors lives here, once
//! for both backends.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("product {0} does not exist")]
    ProductNotFound(i64),
    #[error("not enough stock of product {product}: {available} available")]
    OutOfStock { product: i64, available: i64 },
    /// The product's price changed after the order was priced: price it again.
    #[error("the price of product {0} changed")]
    PriceChanged(i64),
    #[error("the order total overflows")]
    AmountOverflow,
    #[error("transaction key {0} already belongs to another payment attempt")]
    KeyTaken(String),
    #[error("the idempotency key already has an order, or was given up")]
    IdempotencyKeyTaken,
    #[error("stock change refused: product {product} has {available} available and {reserved} reserved")]
    StockConflict { product: i64, available: i64, reserved: i64 },
    /// The database cannot be reached or cannot take the write now (connection refused or
    /// lost, no pooled connection in time, SQLite busy, out of memory or its disk full): nothing was
    /// committed, and the same request may succeed in a moment.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailability(&error) { StoreError::Unavailable(error) } else { StoreError::Database(error) }
    }
}

/// Whether an error says "not now" rather than "not this": the database is down,
/// unreachable, out of connections, locked by another writer, or out of disk.
fn is_unavailability(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => match e.code() {
            // SQLite reports its (extended) result code as a number; the primary code is
            // the low byte: BUSY 5, LOCKED 6, NOMEM 7, IOERR 10, FULL 13, CANTOPEN 14.
            // (Those among them that may roll back a transaction, NOMEM, IOERR and FULL,
            // must count: they end a writer's round, store/sqlite.rs.)
            Some(code) => match code.parse::<u32>() {
                Ok(n) => matches!(n & 0xff, 5 | 6 | 7 | 10 | 13 | 14),
                // PostgreSQL's SQLSTATE: connection exceptions (08), insufficient
                // resources such as a full disk or too many connections (53), and the
                // server shutting down or starting (57P01-57P03).
                Err(_) => code.starts_with("08") || code.starts_with("53") || code.starts_with("57P"),
            },
            None => false,
        },
        _ => false,
    }
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A transaction key already recorded on another attempt (the UNIQUE constraint).
pub(crate) fn key_taken(error: sqlx::Error, key: Option<&str>) -> StoreError {
    match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            StoreError::KeyTaken(key.unwrap_or_default().to_string())
        }
        _ => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::StoreError;

    #[tokio::test]
    async fn a_full_sqlite_database_is_unavailable_and_a_broken_rule_is_not() {
        // `max_page_count` makes SQLite answer SQLITE_FULL exactly as a full disk does.
        let options = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        sqlx::query("CREATE TABLE t (v TEXT NOT NULL)").execute(&pool).await.unwrap();
        let broken_rule: StoreError =
            sqlx::query("INSERT INTO t (v) VALUES (NULL)").execute(&pool).await.unwrap_err().into();
        assert!(!broken_rule.is_unavailable(), "{broken_rule}");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&pool).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA max_page_count = {pages}"))).execute(&pool).await.unwrap();
        let full: StoreError =
            sqlx::query("INSERT INTO t (v) SELECT hex(randomblob(100000))").execute(&pool).await.unwrap_err().into();
        assert!(full.is_unavailable(), "{full}");
    }

    #[tokio::test]
    async fn a_refused_postgresql_connection_is_unavailable() {
        // A port nothing listens on: the connection is refused, as with a stopped server.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        use sqlx::Connection;
        let error: StoreError =
            sqlx::PgConnection::connect(&format!("postgres://nobody@127.0.0.1:{port}/none")).await.unwrap_err().into();
        assert!(error.is_unavailable(), "{error}");
    }
}
