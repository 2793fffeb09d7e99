//! Group commit: writes of one kind that arrive while the previous group is being
//! written are written together, in one transaction, by one task. On SQLite every write
//! goes through one connection, and each statement is a trip to that connection's thread
//! and each commit a pass over the log: a group of checkouts shares its trips and its
//! commit (docs/benchmarks.md, "Checkout cost"). Nothing waits to fill a group: the
//! first write of a quiet moment is written at once, alone.
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

/// How many writes one group takes at most (a group's statements bind a handful of
/// parameters per write; SQLite takes 32,766 per statement, PostgreSQL 65,535).
const MAX_GROUP: usize = 64;

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;

/// The queue in front of the task that writes groups. Dropping the last clone stops it.
pub(crate) struct Batcher<I, O> {
    queue: mpsc::UnboundedSender<(I, Instant, Reply<O>)>,
    task: std::sync::Arc<Background>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher { queue: self.queue.clone(), task: self.task.clone() }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the task. `write` writes one group and answers each write in the order
    /// given. A write that waited longer than `timeout` for its group is answered
    /// unavailable without being written, as a statement that waited that long for a
    /// connection would be.
    pub(crate) fn start<F, Fut>(timeout: Duration, write: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Result<O, StoreError>>> + Send,
    {
        let (queue, mut arrivals) = mpsc::unbounded_channel::<(I, Instant, Reply<O>)>();
        let task = tokio::spawn(async move {
            while let Some(first) = arrivals.recv().await {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match arrivals.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let now = Instant::now();
                let (late, group): (Vec<_>, Vec<_>) =
                    group.into_iter().partition(|(_, queued, _)| now.duration_since(*queued) > timeout);
                for (_, _, reply) in late {
                    let _ = reply.send(Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)));
                }
                if group.is_empty() {
                    continue;
                }
                let (inputs, replies): (Vec<I>, Vec<Reply<O>>) =
                    group.into_iter().map(|(input, _, reply)| (input, reply)).unzip();
                // A bug that panics in one group must not stop every later write: that
                // group is answered unavailable (nothing of it committed) and the task goes on.
                let results = match AssertUnwindSafe(write(inputs)).catch_unwind().await {
                    Ok(results) => results,
                    Err(_) => {
                        tracing::error!(writes = replies.len(), "writing a group panicked; its writes were refused");
                        replies.iter().map(|_| Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed))).collect()
                    }
                };
                debug_assert_eq!(results.len(), replies.len(), "one answer per write");
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
        Batcher { queue, task: std::sync::Arc::new(Background(task)) }
    }

    /// Queues `input` for the next group and waits for its answer.
    pub(crate) async fn write(&self, input: I) -> Result<O, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((input, Instant::now(), reply))
            .map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))?;
        answer.await.map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))?
    }
}

/// The three writes every checkout makes, each with its group-commit task.
#[derive(Clone)]
pub(crate) struct Batchers {
    pub orders: Batcher<NewOrder, CreatedOrder>,
    pub pending: Batcher<MarkPending, Transition>,
    pub settlements: Batcher<Settle, Transition>,
}

/// Writes `group` in one go with `together` when `may_share` says its writes may share a
/// transaction; when they may not, each alone. When the group fails, `culprits` may name
/// the writes that failed it (found by a query: an order for a sold-out product, a
/// transaction key another attempt holds): those are written each alone and the others
/// together again. Otherwise, as `one_by_one` says. A group retried one by one costs a
/// commit per write: a sold-out product, or a few colliding keys a second, took half the
/// throughput on PostgreSQL (docs/benchmarks.md, "Third round").
pub(crate) async fn write_group<I, O>(
    group: Vec<I>,
    may_share: bool,
    together: impl for<'a> Fn(&'a [I]) -> BoxFuture<'a, Result<Vec<O>, StoreError>>,
    culprits: impl for<'a> Fn(&'a [I]) -> BoxFuture<'a, Result<Vec<usize>, StoreError>>,
) -> Vec<Result<O, StoreError>> {
    let alone = |input: I| {
        let together = &together;
        async move { Ok(together(std::slice::from_ref(&input)).await?.remove(0)) }
    };
    if !may_share {
        return each_alone(group, alone).await;
    }
    let error = match together(&group).await {
        Ok(written) => return written.into_iter().map(Ok).collect(),
        Err(error) => error,
    };
    if group.len() == 1 || error.is_unavailable() {
        return one_by_one(group, error, alone).await;
    }
    let apart = match culprits(&group).await {
        Ok(apart) if !apart.is_empty() && apart.len() < group.len() => apart,
        _ => return one_by_one(group, error, alone).await,
    };
    let size = group.len();
    let (set_apart, rest): (Vec<_>, Vec<_>) = group.into_iter().enumerate().partition(|(i, _)| apart.contains(i));
    let rest: Vec<I> = rest.into_iter().map(|(_, input)| input).collect();
    let rest_answers = match together(&rest).await {
        Ok(written) => written.into_iter().map(Ok).collect(),
        Err(error) => one_by_one(rest, error, &alone).await,
    };
    let apart_answers = each_alone(set_apart.into_iter().map(|(_, input)| input).collect(), &alone).await;
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
async fn one_by_one<I, O, F, Fut>(inputs: Vec<I>, error: StoreError, alone: F) -> Vec<Result<O, StoreError>>
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = Result<O, StoreError>>,
{
    if inputs.len() == 1 {
        return vec![Err(error)];
    }
    if error.is_unavailable() {
        let said = error.to_string();
        let mut answers: Vec<Result<O, StoreError>> = (1..inputs.len())
            .map(|_| Err(StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(said.clone())))))
            .collect();
        answers.insert(0, Err(error));
        return answers;
    }
    each_alone(inputs, alone).await
}

/// Each write alone, one after the other, each in its own transaction.
async fn each_alone<I, O, F, Fut>(inputs: Vec<I>, alone: F) -> Vec<Result<O, StoreError>>
where
    F: Fn(I) -> Fut,
    Fut: Future<Output = Result<O, StoreError>>,
{
    let mut answers = Vec::with_capacity(inputs.len());
    for input in inputs {
        answers.push(alone(input).await);
    }
    answers
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::{Batcher, one_by_one};
    use crate::store::StoreError;

    #[tokio::test]
    async fn writes_arriving_while_a_group_is_written_go_together_in_the_next_one() {
        let groups = Arc::new(Mutex::new(Vec::new()));
        let (release, held) = tokio::sync::watch::channel(false);
        let seen = groups.clone();
        let batcher: Batcher<u32, u32> = Batcher::start(Duration::from_secs(60), move |inputs: Vec<u32>| {
            seen.lock().unwrap().push(inputs.clone());
            let mut held = held.clone();
            async move {
                // The first group is held until every other write has queued.
                let _ = held.wait_for(|go| *go).await;
                inputs.into_iter().map(|i| Ok(i * 10)).collect()
            }
        });
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.write(1).await }
        });
        while groups.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Polled once, each of the next four writes queues and waits.
        let mut rest: Vec<_> = (2..=5).map(|i| Box::pin(batcher.write(i))).collect();
        for write in &mut rest {
            assert!(write.now_or_never().is_none(), "waits for its group");
        }
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 10);
        for (i, write) in (2..=5).zip(rest) {
            assert_eq!(write.await.unwrap(), i * 10, "each write gets its own answer");
        }
        assert_eq!(*groups.lock().unwrap(), vec![vec![1], vec![2, 3, 4, 5]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waited_past_the_timeout_is_answered_unavailable_and_not_written() {
        let written = Arc::new(Mutex::new(Vec::new()));
        let seen = written.clone();
        let batcher: Batcher<u32, ()> = Batcher::start(Duration::from_secs(1), move |inputs: Vec<u32>| {
            let seen = seen.clone();
            async move {
                // The first group takes 2 s: the write queued behind it waits too long.
                if inputs.contains(&1) {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                seen.lock().unwrap().extend(inputs.iter().copied());
                inputs.iter().map(|_| Ok(())).collect()
            }
        });
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.write(1).await }
        });
        tokio::task::yield_now().await;
        let late = batcher.write(2).await;
        assert!(matches!(late, Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))), "{late:?}");
        first.await.unwrap().unwrap();
        assert_eq!(*written.lock().unwrap(), vec![1], "the late write was never written");
    }

    #[tokio::test]
    async fn a_group_that_panics_is_refused_and_the_next_group_is_written() {
        let batcher: Batcher<u32, u32> = Batcher::start(Duration::from_secs(60), |inputs: Vec<u32>| async move {
            assert!(!inputs.contains(&13), "a bug");
            inputs.into_iter().map(Ok).collect()
        });
        let refused = batcher.write(13).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed))), "{refused:?}");
        assert_eq!(batcher.write(7).await.unwrap(), 7, "the task still writes");
    }

    /// `write_group` over writes of which 2 fails any transaction it is in, as a taken
    /// key does; `named` is what the culprits query finds. The groups tried, and the answers.
    async fn written(named: Vec<usize>) -> (Vec<Vec<u32>>, Vec<Result<u32, StoreError>>) {
        let tried = Mutex::new(Vec::new());
        let answers = super::write_group(
            vec![1, 2, 3, 4],
            true,
            |group: &[u32]| {
                tried.lock().unwrap().push(group.to_vec());
                let answer = if group.contains(&2) {
                    Err(StoreError::KeyTaken("K".into()))
                } else {
                    Ok(group.iter().map(|i| i * 10).collect())
                };
                Box::pin(async move { answer })
            },
            |_: &[u32]| {
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

    #[tokio::test]
    async fn a_failed_group_is_retried_one_by_one_unless_the_database_is_unavailable() {
        let alone = |i: u32| async move { if i == 2 { Err(StoreError::PriceChanged(2)) } else { Ok(i) } };
        let answers = one_by_one(vec![1, 2, 3], StoreError::PriceChanged(2), alone).await;
        assert!(matches!(answers[..], [Ok(1), Err(StoreError::PriceChanged(2)), Ok(3)]), "{answers:?}");

        let down = StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        let answers = one_by_one(vec![1, 2, 3], down, |_: u32| async { unreachable!("not tried one by one") }).await;
        assert_eq!(answers.len(), 3);
        assert!(answers.iter().all(|a: &Result<u32, StoreError>| a.as_ref().is_err_and(StoreError::is_unavailable)));
    }
}
