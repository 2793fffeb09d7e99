//! The one store both backends run (`SqlStore<D>`), and what a backend must say about
//! itself to run it (`Dialect`): its row locks, its test of a status against a bound set,
//! how it begins a writing transaction. Everything else is the same SQL on both, since
//! sqlx binds `$N` parameters on SQLite as on PostgreSQL.
//!
//! Why the capability traits below rather than sqlx's bounds written where they are used:
//! a function generic over `sqlx::Database` must name an Encode/Decode/Executor bound for
//! every type a statement touches, and Rust does not carry a trait's `where` clauses about
//! other types to its users, so every generic function of the store would repeat them.
//! A supertrait of the database type itself is carried, so each bound is wrapped in one
//! (`Binds`, `Decodes`, `Executes`), implemented once for every database that has it, and
//! `Dialect` lists them: a store function asks only `D: Dialect`.

use std::future::Future;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::query_builder::Separated;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Transaction, Type};

use super::batch::Writers;
use super::{Background, StoreError};
use crate::domain::PaymentStatus;

/// The store, on the database `D`: SQLite (`SqliteStore`) or PostgreSQL (`PgStore`).
pub struct SqlStore<D: Dialect> {
    /// Where reads run.
    pub(super) pool: Pool<D>,
    /// Where the writes that are not group-committed run: SQLite's one writing
    /// connection, so that writers queue for it instead of polling SQLite's lock;
    /// PostgreSQL's is the pool itself.
    pub(super) writer: Pool<D>,
    /// Orders, PENDING marks and settlements, written in rounds (store/batch.rs).
    pub(super) rounds: Writers,
    /// What the backend runs beside its callers (SQLite's checkpoints).
    pub(super) _background: Option<Arc<Background>>,
}

// Not derived: the derive would ask `D: Clone` of the database's marker type.
impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
            rounds: self.rounds.clone(),
            _background: self._background.clone(),
        }
    }
}

impl<D: Dialect> SqlStore<D> {
    /// A connection to write on, once the writer before has finished where the backend
    /// has one writer.
    pub(super) async fn writer(&self) -> Result<PoolConnection<D>, StoreError> {
        Ok(self.writer.acquire().await?)
    }

    /// A connection to read on.
    pub(super) async fn reader(&self) -> Result<PoolConnection<D>, StoreError> {
        Ok(self.pool.acquire().await?)
    }
}

/// What differs between the backends, and every sqlx capability the store uses.
pub trait Dialect:
    Database<Arguments: IntoArguments<Self>>
    + Sync
    + Executes
    + for<'a> Binds<'a, i64>
    + for<'a> Binds<'a, bool>
    + for<'a> Binds<'a, Option<i64>>
    + for<'a> Binds<'a, &'a str>
    + for<'a> Binds<'a, Option<&'a str>>
    + for<'a> Binds<'a, &'a [u8]>
    + Decodes<i64>
    + Decodes<bool>
    + Decodes<String>
    + Decodes<Option<i64>>
    + Decodes<Option<String>>
    + Decodes<Option<Vec<u8>>>
{
    /// Whether a transaction that writes several rows must lock them in id order first,
    /// so that two such transactions queue instead of deadlocking. SQLite's one writer
    /// needs no row locks.
    const LOCKS_ROWS: bool;

    /// What locks a row read before it is changed, against another instance's
    /// transaction (appended to a SELECT).
    const ROW_LOCK: &'static str;

    /// What makes a claim pass over rows another instance is claiming instead of waiting.
    const SKIP_LOCKED: &'static str;

    /// A status column's test against a bound set of statuses, before and after the
    /// parameter: no SQL statement names a status of its own, the state machine decides.
    const ONE_OF: (&'static str, &'static str);

    /// Binds a set of statuses as `ONE_OF` reads it.
    fn bind_statuses<'q>(
        query: Query<'q, Self, Self::Arguments>,
        set: &[PaymentStatus],
    ) -> Query<'q, Self, Self::Arguments>;

    /// Pushes `ONE_OF` with a set of statuses bound inside it.
    fn push_one_of(query: &mut QueryBuilder<Self>, set: &[PaymentStatus]);

    /// The rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Begins a transaction that writes.
    fn begin_write(
        conn: &mut Self::Connection,
    ) -> impl Future<Output = Result<Transaction<'_, Self>, StoreError>> + Send + '_;
}

/// `ONE_OF` around the parameter `param` (e.g. `"$5"`).
pub(super) fn one_of<D: Dialect>(param: &str) -> String {
    let (open, close) = D::ONE_OF;
    format!("{open}{param}{close}")
}

/// A value the database binds.
pub trait Binds<'t, T>: Database {
    fn bind<'q>(query: Query<'q, Self, Self::Arguments>, value: T) -> Query<'q, Self, Self::Arguments>;
    fn push(query: &mut QueryBuilder<Self>, value: T);
    fn push_separated(values: &mut Separated<'_, Self, &'static str>, value: T);
    fn push_unseparated(values: &mut Separated<'_, Self, &'static str>, value: T);
}

impl<'t, D: Database, T: Encode<'t, D> + Type<D>> Binds<'t, T> for D {
    fn bind<'q>(query: Query<'q, D, D::Arguments>, value: T) -> Query<'q, D, D::Arguments> {
        query.bind(value)
    }

    fn push(query: &mut QueryBuilder<D>, value: T) {
        query.push_bind(value);
    }

    fn push_separated(values: &mut Separated<'_, D, &'static str>, value: T) {
        values.push_bind(value);
    }

    fn push_unseparated(values: &mut Separated<'_, D, &'static str>, value: T) {
        values.push_bind_unseparated(value);
    }
}

/// A value the database reads out of a row by column name.
pub trait Decodes<T>: Database {
    fn get(row: &Self::Row, column: &str) -> Result<T, sqlx::Error>;
}

impl<D: Database, T> Decodes<T> for D
where
    T: for<'r> Decode<'r, D> + Type<D>,
    for<'c> &'c str: ColumnIndex<D::Row>,
{
    fn get(row: &D::Row, column: &str) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(row, column)
    }
}

/// The database runs statements on its connections.
pub trait Executes: Database {
    fn on(conn: &mut Self::Connection) -> impl Executor<'_, Database = Self>;
}

impl<D: Database> Executes for D
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
{
    fn on(conn: &mut D::Connection) -> impl Executor<'_, Database = D> {
        conn
    }
}

/// `bind` for a query of a `Dialect`.
pub(super) trait Arg<D: Database>: Sized {
    fn arg<'t, T>(self, value: T) -> Self
    where
        D: Binds<'t, T>;
}

impl<'q, D: Database> Arg<D> for Query<'q, D, D::Arguments> {
    fn arg<'t, T>(self, value: T) -> Self
    where
        D: Binds<'t, T>,
    {
        D::bind(self, value)
    }
}

/// `push_bind` for a query built with `QueryBuilder` on a `Dialect`, and for a row of
/// its `push_values`. The value's type is the trait's, not the method's, so that each
/// impl names the one `Binds` method it calls and nothing else.
pub(super) trait PushArg<'t, T> {
    fn arg(&mut self, value: T) -> &mut Self;
}

impl<'t, D: Binds<'t, T>, T> PushArg<'t, T> for QueryBuilder<D> {
    fn arg(&mut self, value: T) -> &mut Self {
        D::push(self, value);
        self
    }
}

impl<'t, D: Binds<'t, T>, T> PushArg<'t, T> for Separated<'_, D, &'static str> {
    fn arg(&mut self, value: T) -> &mut Self {
        D::push_separated(self, value);
        self
    }
}

/// `push_bind_unseparated`: a value inside a tuple's cell (`CAST($n AS BIGINT)`).
pub(super) trait PushUnseparated<'t, T> {
    fn arg_unseparated(&mut self, value: T) -> &mut Self;
}

impl<'t, D: Binds<'t, T>, T> PushUnseparated<'t, T> for Separated<'_, D, &'static str> {
    fn arg_unseparated(&mut self, value: T) -> &mut Self {
        D::push_unseparated(self, value);
        self
    }
}

/// `try_get` for a row of a `Dialect`.
pub(super) trait Column {
    fn col<T>(&self, column: &str) -> Result<T, StoreError>
    where
        Self: sqlx::Row,
        <Self as sqlx::Row>::Database: Decodes<T>;
}

impl<R> Column for R
where
    R: sqlx::Row,
    R::Database: Database<Row = R>,
{
    fn col<T>(&self, column: &str) -> Result<T, StoreError>
    where
        R::Database: Decodes<T>,
    {
        Ok(<R::Database as Decodes<T>>::get(self, column)?)
    }
}

/// Binds each of `values` into `query`, separated by commas: the inside of an IN list.
pub(super) fn push_binds<D: Dialect>(query: &mut QueryBuilder<D>, values: impl IntoIterator<Item = i64>) {
    let mut list = query.separated(", ");
    for value in values {
        list.arg(value);
    }
}

/// Binds each of `values` into `query`, separated by commas.
pub(super) fn push_str_binds<'a, D: Dialect>(query: &mut QueryBuilder<D>, values: impl IntoIterator<Item = &'a str>) {
    let mut list = query.separated(", ");
    for value in values {
        list.arg(value);
    }
}

/// The transaction a group of one kind of write takes inside its round (store/batch.rs):
/// on SQLite a savepoint in the round's one transaction, on PostgreSQL a transaction of
/// its own.
pub(super) async fn begin_group<D: Dialect>(conn: &mut D::Connection) -> Result<Transaction<'_, D>, StoreError> {
    Ok(sqlx::Connection::begin(conn).await?)
}

/// Locks the rows that `open` `ids` `close` selects (ids bound in a list), in id order,
/// where the backend has row locks: a transaction that writes several rows takes them in
/// the same order as every other, so no two wait for each other.
pub(super) async fn lock_in_order<D: Dialect>(
    tx: &mut D::Connection,
    open: &'static str,
    ids: impl IntoIterator<Item = i64>,
    close: &'static str,
) -> Result<(), StoreError> {
    if !D::LOCKS_ROWS {
        return Ok(());
    }
    let mut lock = QueryBuilder::<D>::new(open);
    push_binds(&mut lock, ids);
    lock.push(close);
    lock.push(" ORDER BY id");
    lock.push(D::ROW_LOCK);
    lock.build().execute(D::on(tx)).await?;
    Ok(())
}
