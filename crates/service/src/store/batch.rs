//! Group commit: the writes that arrive while the writer is busy are written together,
//! in one round, by one task. On SQLite every write goes through one connection, and each
//! statement is a trip to that connection's thread and each commit a sync of the log to
//! disk: a round of checkouts shares its trips and, since all its writes are in one
//! transaction, its sync (docs/benchmarks.md, "Checkout cost"). Nothing waits to fill a
//! round: the first write of a quiet moment is written at once, alone.
//!
//! Written here rather than taken from a crate: the batching crates found flush on a
//! size or a timer, and a timer is latency added to every checkout; this one flushes as
//! soon as the writer is free, which is what group commit in a database does.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Background, CreatedOrder, MarkPending, NewOrder, Settle, StoreError, Transition};

/// How many writes one round takes at most (a round's statements bind a handful of
/// parameters per write; SQLite takes 32,766 per statement, PostgreSQL 65,535).
const MAX_ROUND: usize = 64;

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;

/// A queued write with the channel its answer goes back on.
enum Queued {
    Order(NewOrder, Reply<CreatedOrder>),
    Pending(MarkPending, Reply<Transition>),
    Settle(Settle, Reply<Transition>),
}

/// One round's writes, by kind, each kind in the order its writes arrived.
#[derive(Debug, Default)]
pub(crate) struct Round {
    pub orders: Vec<NewOrder>,
    pub pending: Vec<MarkPending>,
    pub settlements: Vec<Settle>,
}

impl Round {
    pub(crate) fn len(&self) -> usize {
        self.orders.len() + self.pending.len() + self.settlements.len()
    }
}

/// A round's answers: one for each write, by kind, in the order of `Round`.
#[derive(Debug)]
pub(crate) struct Answers {
    pub orders: Vec<Result<CreatedOrder, StoreError>>,
    pub pending: Vec<Result<Transition, StoreError>>,
    pub settlements: Vec<Result<Transition, StoreError>>,
}

impl Answers {
    /// A copy of the error of the first write that found the database unavailable.
    pub(crate) fn unavailable(&self) -> Option<StoreError> {
        fn first<O>(answers: &[Result<O, StoreError>]) -> Option<&StoreError> {
            answers.iter().find_map(|a| a.as_ref().err().filter(|e| e.is_unavailable()))
        }
        let error = first(&self.orders).or_else(|| first(&self.pending)).or_else(|| first(&self.settlements))?;
        Some(copy_of(error))
    }
}

/// The channels a round's answers go back on, in the order of its `Round`.
#[derive(Default)]
struct Replies {
    orders: Vec<Reply<CreatedOrder>>,
    pending: Vec<Reply<Transition>>,
    settlements: Vec<Reply<Transition>>,
}

impl Replies {
    fn send(self, answers: Answers) {
        debug_assert_eq!(
            (answers.orders.len(), answers.pending.len(), answers.settlements.len()),
            (self.orders.len(), self.pending.len(), self.settlements.len()),
            "one answer per write"
        );
        fn each<O>(replies: Vec<Reply<O>>, answers: Vec<Result<O, StoreError>>) {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        each(self.orders, answers.orders);
        each(self.pending, answers.pending);
        each(self.settlements, answers.settlements);
    }

    /// Answers every write with `error`: nothing of the round was committed.
    fn refuse(self, error: StoreError) {
        let mut errors = copies(error, self.orders.len() + self.pending.len() + self.settlements.len());
        let mut next = || errors.next().expect("one error per write");
        for reply in self.orders {
            let _ = reply.send(Err(next()));
        }
        for reply in self.pending.into_iter().chain(self.settlements) {
            let _ = reply.send(Err(next()));
        }
    }
}

/// `error` for each of `n` writes: the first gets it, the others a copy.
pub(crate) fn copies(error: StoreError, n: usize) -> impl Iterator<Item = StoreError> {
    let copies: Vec<StoreError> = (1..n).map(|_| copy_of(&error)).collect();
    std::iter::once(error).chain(copies)
}

/// A database error in its words, as the same kind of error (sqlx's cannot be cloned).
fn copy_of(error: &StoreError) -> StoreError {
    let said = sqlx::Error::Io(std::io::Error::other(error.to_string()));
    if error.is_unavailable() { StoreError::Unavailable(said) } else { StoreError::Database(said) }
}

/// The queue in front of the task that writes the rounds. Dropping the last clone stops it.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<(Queued, Instant)>,
    _task: std::sync::Arc<Background>,
}

impl Writer {
    /// Starts the task. `write` writes one round and answers each of its writes; when it
    /// fails as a whole, nothing of the round was committed and every write is answered
    /// with its error. A write that waited longer than `timeout` for its round is answered
    /// unavailable without being written, as a statement that waited that long for a
    /// connection would be.
    pub(crate) fn start<F, Fut>(timeout: Duration, write: F) -> Writer
    where
        F: Fn(Round) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Answers, StoreError>> + Send,
    {
        let (queue, mut arrivals) = mpsc::unbounded_channel::<(Queued, Instant)>();
        let task = tokio::spawn(async move {
            while let Some(first) = arrivals.recv().await {
                let mut queued = vec![first];
                while queued.len() < MAX_ROUND {
                    match arrivals.try_recv() {
                        Ok(next) => queued.push(next),
                        Err(_) => break,
                    }
                }
                let now = Instant::now();
                let (mut round, mut replies) = (Round::default(), Replies::default());
                let (mut unwritten, mut late) = (Round::default(), Replies::default());
                for (write, at) in queued {
                    let (round, replies) = if now.duration_since(at) > timeout {
                        (&mut unwritten, &mut late)
                    } else {
                        (&mut round, &mut replies)
                    };
                    match write {
                        Queued::Order(order, reply) => {
                            round.orders.push(order);
                            replies.orders.push(reply);
                        }
                        Queued::Pending(mark, reply) => {
                            round.pending.push(mark);
                            replies.pending.push(reply);
                        }
                        Queued::Settle(settle, reply) => {
                            round.settlements.push(settle);
                            replies.settlements.push(reply);
                        }
                    }
                }
                late.refuse(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
                if round.len() == 0 {
                    continue;
                }
                let writes = round.len();
                // A bug that panics in one round must not stop every later write: that
                // round is answered unavailable (nothing of it committed) and the task goes on.
                match AssertUnwindSafe(write(round)).catch_unwind().await {
                    Ok(Ok(answers)) => replies.send(answers),
                    Ok(Err(error)) => replies.refuse(error),
                    Err(_) => {
                        tracing::error!(writes, "writing a round panicked; its writes were refused");
                        replies.refuse(StoreError::Unavailable(sqlx::Error::WorkerCrashed));
                    }
                }
            }
        });
        Writer { queue, _task: std::sync::Arc::new(Background(task)) }
    }

    /// Queues a write for the next round and waits for its answer.
    async fn queue<O>(&self, write: impl FnOnce(Reply<O>) -> Queued) -> Result<O, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((write(reply), Instant::now()))
            .map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))?;
        answer.await.map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))?
    }
}

/// Where each kind of write queues: on one writer, so that the three kinds share a round
/// (SQLite: one transaction, one sync), or each kind on a writer of its own, so that no
/// kind waits for another's group (PostgreSQL, where each kind commits apart anyway:
/// sharing rounds cost 25-28% of the checkouts per second there, docs/benchmarks.md).
#[derive(Clone)]
pub(crate) struct Writers {
    orders: Writer,
    pending: Writer,
    settlements: Writer,
}

impl Writers {
    pub(crate) fn shared(writer: Writer) -> Writers {
        Writers { orders: writer.clone(), pending: writer.clone(), settlements: writer }
    }

    pub(crate) fn one_per_kind(start: impl Fn() -> Writer) -> Writers {
        Writers { orders: start(), pending: start(), settlements: start() }
    }

    /// Creates `order` (with its first attempt and its stock reserved) in its writer's next round.
    pub(crate) async fn create_order(&self, order: NewOrder) -> Result<CreatedOrder, StoreError> {
        self.orders.queue(|reply| Queued::Order(order, reply)).await
    }

    /// Marks an attempt PENDING in its writer's next round.
    pub(crate) async fn mark_pending(&self, mark: MarkPending) -> Result<Transition, StoreError> {
        self.pending.queue(|reply| Queued::Pending(mark, reply)).await
    }

    /// Settles an attempt in its writer's next round.
    pub(crate) async fn settle(&self, settle: Settle) -> Result<Transition, StoreError> {
        self.settlements.queue(|reply| Queued::Settle(settle, reply)).await
    }
}

/// Writes `group` on `conn` in one go with `together` when `may_share` says its writes
/// may share a transaction; when they may not, each alone. When the group fails,
/// `culprits` may name the writes that failed it (found by a query: an order for a
/// sold-out product, a transaction key another attempt holds): those are written each
/// alone and the others together again. Otherwise, as `one_by_one` says. A group retried
/// one by one costs a transaction per write: a sold-out product, or a few colliding keys a
/// second, took half the throughput on PostgreSQL (docs/benchmarks.md, "Third round").
pub(crate) async fn write_group<C: ?Sized, I, O>(
    conn: &mut C,
    group: Vec<I>,
    may_share: bool,
    together: impl for<'a> Fn(&'a mut C, &'a [I]) -> BoxFuture<'a, Result<Vec<O>, StoreError>>,
    culprits: impl for<'a> Fn(&'a mut C, &'a [I]) -> BoxFuture<'a, Result<Vec<usize>, StoreError>>,
) -> Vec<Result<O, StoreError>> {
    if group.is_empty() {
        return Vec::new();
    }
    if !may_share {
        return each_alone(conn, group, &together).await;
    }
    let error = match together(conn, &group).await {
        Ok(written) => return written.into_iter().map(Ok).collect(),
        Err(error) => error,
    };
    if group.len() == 1 || error.is_unavailable() {
        return one_by_one(conn, group, error, &together).await;
    }
    let apart = match culprits(conn, &group).await {
        Ok(apart) if !apart.is_empty() && apart.len() < group.len() => apart,
        _ => return one_by_one(conn, group, error, &together).await,
    };
    let size = group.len();
    let (set_apart, rest): (Vec<_>, Vec<_>) = group.into_iter().enumerate().partition(|(i, _)| apart.contains(i));
    let rest: Vec<I> = rest.into_iter().map(|(_, input)| input).collect();
    let rest_answers = match together(conn, &rest).await {
        Ok(written) => written.into_iter().map(Ok).collect(),
        Err(error) => one_by_one(conn, rest, error, &together).await,
    };
    let apart_answers = each_alone(conn, set_apart.into_iter().map(|(_, input)| input).collect(), &together).await;
    let (mut rest_answers, mut apart_answers) = (rest_answers.into_iter(), apart_answers.into_iter());
    (0..size)
        .map(|i| if apart.contains(&i) { apart_answers.next() } else { rest_answers.next() })
        .map(|answer| answer.expect("one answer per write"))
        .collect()
}

/// The answers for a group whose transaction failed. One write alone gets its own error.
/// When the database is unavailable, every write gets the same answer (trying them one
/// by one would wait for it once per write). Any other error belongs to one of the
/// writes, which are then tried one by one, each in its own transaction, so that each
/// gets its own answer and one bad write does not refuse the others.
async fn one_by_one<C: ?Sized, I, O>(
    conn: &mut C,
    inputs: Vec<I>,
    error: StoreError,
    together: &impl for<'a> Fn(&'a mut C, &'a [I]) -> BoxFuture<'a, Result<Vec<O>, StoreError>>,
) -> Vec<Result<O, StoreError>> {
    if inputs.len() == 1 || error.is_unavailable() {
        return copies(error, inputs.len()).map(Err).collect();
    }
    each_alone(conn, inputs, together).await
}

/// Each write alone, one after the other, each in its own transaction. Once one finds
/// the database unavailable the rest are answered so without being tried: the round they
/// are in is over (on SQLite the failure may have rolled back the round's transaction,
/// and a write after it would commit on its own).
async fn each_alone<C: ?Sized, I, O>(
    conn: &mut C,
    inputs: Vec<I>,
    together: &impl for<'a> Fn(&'a mut C, &'a [I]) -> BoxFuture<'a, Result<Vec<O>, StoreError>>,
) -> Vec<Result<O, StoreError>> {
    let size = inputs.len();
    let mut answers = Vec::with_capacity(size);
    for input in inputs {
        match together(conn, std::slice::from_ref(&input)).await {
            Ok(mut written) => answers.push(Ok(written.remove(0))),
            Err(error) if error.is_unavailable() => {
                answers.extend(copies(error, size - answers.len()).map(Err));
                break;
            }
            Err(error) => answers.push(Err(error)),
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::{Answers, Round, Writer, Writers, each_alone, one_by_one};
    use crate::domain::{AttemptId, Final, PaymentStatus, Settlement, Source, Timestamp};
    use crate::store::{MarkPending, Settle, StoreError, Transition};

    fn mark(i: i64) -> MarkPending {
        MarkPending { attempt_id: AttemptId(i), key: None, now: Timestamp::from_millis(0) }
    }

    /// A round's PENDING marks answered each with its own attempt's number.
    fn answered(round: &Round) -> Answers {
        let echo = |m: &MarkPending| {
            Ok(Transition::AlreadyMoved {
                current: PaymentStatus::Pending,
                transaction_key: Some(m.attempt_id.0.to_string()),
            })
        };
        Answers { orders: Vec::new(), pending: round.pending.iter().map(echo).collect(), settlements: Vec::new() }
    }

    fn number(answer: Result<Transition, StoreError>) -> i64 {
        match answer {
            Ok(Transition::AlreadyMoved { transaction_key: Some(key), .. }) => key.parse().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    fn attempts(round: &Round) -> Vec<i64> {
        round.pending.iter().map(|m| m.attempt_id.0).collect()
    }

    #[tokio::test]
    async fn writes_arriving_while_a_round_is_written_go_together_in_the_next_one() {
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let (release, held) = tokio::sync::watch::channel(false);
        let seen = rounds.clone();
        let writer = Writers::shared(Writer::start(Duration::from_secs(60), move |round: Round| {
            seen.lock().unwrap().push(attempts(&round));
            let mut held = held.clone();
            async move {
                // The first round is held until every other write has queued.
                let _ = held.wait_for(|go| *go).await;
                Ok(answered(&round))
            }
        }));
        let first = tokio::spawn({
            let w = writer.clone();
            async move { w.mark_pending(mark(1)).await }
        });
        while rounds.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Polled once, each of the next four writes queues and waits.
        let mut rest: Vec<_> = (2..=5).map(|i| Box::pin(writer.mark_pending(mark(i)))).collect();
        for write in &mut rest {
            assert!(write.now_or_never().is_none(), "waits for its round");
        }
        release.send(true).unwrap();
        assert_eq!(number(first.await.unwrap()), 1);
        for (i, write) in (2..=5).zip(rest) {
            assert_eq!(number(write.await), i, "each write gets its own answer");
        }
        assert_eq!(*rounds.lock().unwrap(), vec![vec![1], vec![2, 3, 4, 5]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waited_past_the_timeout_is_answered_unavailable_and_not_written() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = written.clone();
        let writer = Writers::shared(Writer::start(Duration::from_secs(1), move |round: Round| {
            let seen = seen.clone();
            async move {
                // The first round takes 2 s: the write queued behind it waits too long.
                if attempts(&round).contains(&1) {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                seen.lock().unwrap().extend(attempts(&round));
                Ok(answered(&round))
            }
        }));
        let first = tokio::spawn({
            let w = writer.clone();
            async move { w.mark_pending(mark(1)).await }
        });
        tokio::task::yield_now().await;
        let late = writer.mark_pending(mark(2)).await;
        assert!(matches!(late, Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))), "{late:?}");
        assert_eq!(number(first.await.unwrap()), 1);
        assert_eq!(*written.lock().unwrap(), vec![1], "the late write was never written");
    }

    #[tokio::test]
    async fn a_round_that_panics_or_fails_is_refused_whole_and_the_next_round_is_written() {
        let writer = Writers::shared(Writer::start(Duration::from_secs(60), |round: Round| async move {
            assert!(!attempts(&round).contains(&13), "a bug");
            if attempts(&round).contains(&7) {
                return Err(StoreError::Unavailable(sqlx::Error::PoolClosed));
            }
            Ok(answered(&round))
        }));
        let refused = writer.mark_pending(mark(13)).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed))), "{refused:?}");
        let refused = writer.mark_pending(mark(7)).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(sqlx::Error::PoolClosed))), "{refused:?}");
        assert_eq!(number(writer.mark_pending(mark(8)).await), 8, "the task still writes");
    }

    /// Writers whose every round of settlements is held until `release` says go; the
    /// PENDING marks they answer at once.
    fn holding_settlements(one_per_kind: bool) -> (Writers, tokio::sync::watch::Sender<bool>, Arc<Mutex<usize>>) {
        let (release, held) = tokio::sync::watch::channel(false);
        let settling = Arc::new(Mutex::new(0));
        let start = {
            let settling = settling.clone();
            move || {
                let (held, settling) = (held.clone(), settling.clone());
                Writer::start(Duration::from_secs(60), move |round: Round| {
                    let (mut held, settling) = (held.clone(), settling.clone());
                    async move {
                        let settlements: Vec<_> = round.settlements.iter().map(|_| Ok(Transition::Applied)).collect();
                        if !settlements.is_empty() {
                            *settling.lock().unwrap() += 1;
                            let _ = held.wait_for(|go| *go).await;
                        }
                        Ok(Answers { settlements, ..answered(&round) })
                    }
                })
            }
        };
        let writers = if one_per_kind { Writers::one_per_kind(start) } else { Writers::shared(start()) };
        (writers, release, settling)
    }

    fn settle(i: i64) -> Settle {
        Settle {
            attempt_id: AttemptId(i),
            settlement: Settlement { status: Final::Success, transaction_key: None, reason: None },
            source: Source::Callback,
            now: Timestamp::from_millis(0),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_kind_on_a_writer_of_its_own_never_waits_for_another_kinds_round() {
        for one_per_kind in [true, false] {
            let (writers, release, settling) = holding_settlements(one_per_kind);
            let settled = tokio::spawn({
                let w = writers.clone();
                async move { w.settle(settle(1)).await }
            });
            while *settling.lock().unwrap() == 0 {
                tokio::task::yield_now().await;
            }
            // The settlement's round is held. (Paused time: the timeout fires only once
            // every task is idle, i.e. once the mark is stuck behind it.)
            let mut marked = Box::pin(writers.mark_pending(mark(2)));
            let alongside = tokio::time::timeout(Duration::from_secs(5), &mut marked).await;
            if one_per_kind {
                assert_eq!(number(alongside.expect("answered beside the held settlement")), 2);
            } else {
                assert!(alongside.is_err(), "a shared writer writes the mark in the round after");
                release.send(true).unwrap();
                assert_eq!(number(marked.await), 2);
            }
            release.send(true).unwrap();
            assert!(matches!(settled.await.unwrap(), Ok(Transition::Applied)));
        }
    }

    /// `write_group` over writes of which 2 fails any transaction it is in, as a taken
    /// key does; `named` is what the culprits query finds. The groups tried, and the answers.
    async fn written(named: Vec<usize>) -> (Vec<Vec<u32>>, Vec<Result<u32, StoreError>>) {
        let tried = Mutex::new(Vec::new());
        let answers = super::write_group(
            &mut (),
            vec![1, 2, 3, 4],
            true,
            |_, group: &[u32]| {
                tried.lock().unwrap().push(group.to_vec());
                let answer = if group.contains(&2) {
                    Err(StoreError::KeyTaken("K".into()))
                } else {
                    Ok(group.iter().map(|i| i * 10).collect())
                };
                Box::pin(async move { answer })
            },
            |_, _: &[u32]| {
                let named = named.clone();
                Box::pin(async move { Ok(named) })
            },
        )
        .await;
        (tried.into_inner().unwrap(), answers)
    }

    #[tokio::test]
    async fn a_write_that_fails_its_group_is_set_apart_and_the_rest_written_together_again() {
        let (tried, answers) = written(vec![1]).await;
        assert_eq!(tried, [vec![1, 2, 3, 4], vec![1, 3, 4], vec![2]]);
        assert!(matches!(answers[..], [Ok(10), Err(StoreError::KeyTaken(_)), Ok(30), Ok(40)]), "{answers:?}");
        // Nothing named: one by one, as before.
        let (tried, answers) = written(Vec::new()).await;
        assert_eq!(tried, [vec![1, 2, 3, 4], vec![1], vec![2], vec![3], vec![4]]);
        assert!(matches!(answers[..], [Ok(10), Err(StoreError::KeyTaken(_)), Ok(30), Ok(40)]), "{answers:?}");
    }

    /// Writes each alone: 2 is refused, 3 finds the database down; the writes tried, in order.
    fn alone(tried: &Mutex<Vec<u32>>, i: u32) -> Result<Vec<u32>, StoreError> {
        tried.lock().unwrap().push(i);
        match i {
            2 => Err(StoreError::PriceChanged(2)),
            3 => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
            _ => Ok(vec![i]),
        }
    }

    #[tokio::test]
    async fn a_failed_group_is_retried_one_by_one_unless_the_database_is_unavailable() {
        let tried = Mutex::new(Vec::new());
        let answers = one_by_one(&mut (), vec![1, 2, 4], StoreError::PriceChanged(2), &|_, group: &[u32]| {
            let answer = alone(&tried, group[0]);
            Box::pin(async move { answer })
        })
        .await;
        assert!(matches!(answers[..], [Ok(1), Err(StoreError::PriceChanged(2)), Ok(4)]), "{answers:?}");

        let down = StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        let tried = Mutex::new(Vec::new());
        let answers = one_by_one(&mut (), vec![1, 2, 4], down, &|_, group: &[u32]| {
            let answer = alone(&tried, group[0]);
            Box::pin(async move { answer })
        })
        .await;
        assert!(tried.lock().unwrap().is_empty(), "not tried one by one");
        assert_eq!(answers.len(), 3);
        assert!(answers.iter().all(|a| a.as_ref().is_err_and(StoreError::is_unavailable)));
    }

    #[tokio::test]
    async fn writes_alone_stop_at_the_first_that_finds_the_database_unavailable() {
        let tried = Mutex::new(Vec::new());
        let answers = each_alone(&mut (), vec![1, 2, 3, 4, 5], &|_, group: &[u32]| {
            let answer = alone(&tried, group[0]);
            Box::pin(async move { answer })
        })
        .await;
        assert_eq!(*tried.lock().unwrap(), [1, 2, 3], "nothing tried after the database went away");
        assert!(matches!(answers[..2], [Ok(1), Err(StoreError::PriceChanged(2))]), "{answers:?}");
        assert_eq!(answers.len(), 5);
        assert!(answers[2..].iter().all(|a| a.as_ref().is_err_and(StoreError::is_unavailable)), "{answers:?}");
    }
}
