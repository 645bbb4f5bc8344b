//! The DataLoader the API runs its batch functions through.
//!
//! async-graphql's own `DataLoader` collects keys for a fixed window and waits with
//! `tokio::time::sleep`, whose resolution is one millisecond: every nested loader level cost a
//! full timer tick or more, whatever the window (measured in `docs/performance.md`). This one
//! sends a batch when the operation that opened it next waits: when a poll of the operation ends
//! without the operation having been woken during it. An operation's fields and list items are
//! joined, not awaited one by one, so by then every key a level asks for is registered; the batch
//! goes out with no timer and no extra wait. (async-graphql's executor yields on purpose every
//! few fields — it wakes itself and returns — so "the end of a poll" alone would send a long
//! list's keys in many small batches; and receiving must not spend tokio's cooperative budget,
//! hence the channel below.)
//!
//! The end of a poll is marked by [`flush_scope`], which wraps the execution of every operation
//! (the `Observe` extension's `execute` hook), and by [`flush_scope_stream`] around every
//! subscription stream (its `subscribe` hook). A batch started outside such a scope — a spawned
//! task — falls back to the configured window on the tokio timer,
//! as before. Keys of concurrent operations still share a batch while it is open; values are not
//! kept between batches (the `domain` caches do that and know how to invalidate).
//!
//! The batch functions are async-graphql's [`Loader`] trait, so they are unchanged.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use async_graphql::dataloader::Loader;
// not tokio's oneshot: receiving from it spends the task's cooperative budget (128 per poll), so
// when a batch answered a long page, only the first 128 waiters went on in that poll and the
// executor (`FuturesUnordered`) left the rest for later polls: the next level's keys went out in
// several batches (the statement guard caught it: 101 statements for 50 products instead of 5)
use futures::channel::oneshot;

type Flush = Box<dyn FnOnce() + Send>;

tokio::task_local! {
    /// Batches opened during the current poll of an operation.
    static SCOPE: RefCell<Vec<Flush>>;
}

/// Batches opened by an operation and not sent yet; sent when dropped (an operation cancelled
/// between polls must not leave other operations waiting on a batch it opened).
#[derive(Default)]
struct Opened(Vec<Flush>);

impl Opened {
    fn send(&mut self) {
        for flush in self.0.drain(..) {
            flush();
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.send();
    }
}

/// A waker that notes whether it was woken: a poll during which the task was woken again is not
/// where the task waits (async-graphql's executor yields on purpose after every few fields and
/// list items, waking itself first), so batches are kept open across it.
struct Noting {
    woken: AtomicBool,
    inner: Waker,
}

impl Wake for Noting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
        self.inner.wake_by_ref();
    }
}

/// One poll of an operation inside the scope: batches it opens join `opened`, and all of them
/// go out when the poll ends with the operation really waiting (not woken during the poll) or
/// done.
fn poll_scoped<T>(
    opened: &mut Opened,
    cx: &mut Context<'_>,
    poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    let noting = Arc::new(Noting {
        woken: AtomicBool::new(false),
        inner: cx.waker().clone(),
    });
    let waker = Waker::from(noting.clone());
    let (result, started) = SCOPE.sync_scope(RefCell::new(Vec::new()), || {
        let result = poll(&mut Context::from_waker(&waker));
        (result, SCOPE.with(RefCell::take))
    });
    opened.0.extend(started);
    if result.is_ready() || !noting.woken.load(Ordering::Relaxed) {
        opened.send();
    }
    result
}

/// Runs `fut`, sending the batches it opens when it next waits for them.
pub async fn flush_scope<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut opened = Opened::default();
    std::future::poll_fn(|cx| poll_scoped(&mut opened, cx, |cx| fut.as_mut().poll(cx))).await
}

/// [`flush_scope`] for a stream: each event of a subscription resolves its fields in its polls.
pub fn flush_scope_stream<S: futures::Stream + Send>(
    stream: S,
) -> impl futures::Stream<Item = S::Item> + Send {
    let mut stream = Box::pin(stream);
    let mut opened = Opened::default();
    futures::stream::poll_fn(move |cx| {
        poll_scoped(&mut opened, cx, |cx| stream.as_mut().poll_next(cx))
    })
}

type Answer<K, V> = oneshot::Sender<async_graphql::Result<HashMap<K, V>>>;

/// The keys waiting for one batch of one key type, and who waits for which.
struct Pending<K, V> {
    keys: HashSet<K>,
    waiters: Vec<(Vec<K>, Answer<K, V>)>,
}

impl<K, V> Default for Pending<K, V> {
    fn default() -> Self {
        Self {
            keys: HashSet::new(),
            waiters: Vec::new(),
        }
    }
}

struct Inner<T> {
    loader: T,
    /// One `Pending<K, T::Value>` per key type, by `TypeId::of::<K>()`.
    pending: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
}

/// Batches calls to the [`Loader`] implementations of `T`, one batch per key type at a time.
pub struct Batcher<T> {
    inner: Arc<Inner<T>>,
    window: Duration,
    max_batch_size: usize,
    at_poll_end: bool,
}

enum Next<K, V> {
    /// The batch is full: send it now.
    Send(Pending<K, V>),
    /// This call opened the batch: arrange for it to be sent.
    Schedule,
    /// The batch was already open; whoever opened it sends it.
    Wait,
}

impl<T: Send + Sync + 'static> Batcher<T> {
    /// `window`: how long a batch collects keys when it is not sent at the end of a poll (opened
    /// outside [`flush_scope`], or `at_poll_end` off).
    pub fn new(loader: T, window: Duration, max_batch_size: usize, at_poll_end: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                loader,
                pending: Mutex::new(HashMap::new()),
            }),
            window,
            max_batch_size: max_batch_size.max(1),
            at_poll_end,
        }
    }

    /// Loads one value; `None` when the batch function did not return it.
    pub async fn load_one<K>(&self, key: K) -> async_graphql::Result<Option<T::Value>>
    where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        T: Loader<K, Error = async_graphql::Error>,
    {
        let mut found = self.load_many(std::iter::once(key.clone())).await?;
        Ok(found.remove(&key))
    }

    /// Loads several values; keys the batch function did not return are absent from the map.
    pub async fn load_many<K, I>(&self, keys: I) -> async_graphql::Result<HashMap<K, T::Value>>
    where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        I: IntoIterator<Item = K>,
        T: Loader<K, Error = async_graphql::Error>,
    {
        let mut wanted: Vec<K> = Vec::new();
        let mut seen = HashSet::new();
        for key in keys {
            if seen.insert(key.clone()) {
                wanted.push(key);
            }
        }
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let (tx, rx) = oneshot::channel();
        let next = {
            let mut pending = self.inner.pending.lock().expect("loader lock");
            let typed = pending
                .entry(TypeId::of::<K>())
                .or_insert_with(|| Box::new(Pending::<K, T::Value>::default()))
                .downcast_mut::<Pending<K, T::Value>>()
                .expect("one pending type per key type");
            let opened = typed.keys.is_empty();
            typed.keys.extend(seen);
            typed.waiters.push((wanted, tx));
            if typed.keys.len() >= self.max_batch_size {
                Next::Send(std::mem::take(typed))
            } else if opened {
                Next::Schedule
            } else {
                Next::Wait
            }
        };
        match next {
            Next::Send(batch) => {
                tokio::spawn(run(self.inner.clone(), batch));
            }
            Next::Schedule => {
                let inner = self.inner.clone();
                let send: Flush = Box::new(move || flush::<T, K>(&inner));
                let deferred =
                    self.at_poll_end && SCOPE.try_with(|s| s.borrow_mut().push(send)).is_ok();
                if !deferred {
                    let inner = self.inner.clone();
                    let window = self.window;
                    tokio::spawn(async move {
                        tokio::time::sleep(window).await;
                        flush::<T, K>(&inner);
                    });
                }
            }
            Next::Wait => {}
        }
        rx.await
            .unwrap_or_else(|_| Err(async_graphql::Error::new("a batch load ended unanswered")))
    }
}

/// Sends the open batch of key type `K`, if any is still open.
fn flush<T, K>(inner: &Arc<Inner<T>>)
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    T: Loader<K, Error = async_graphql::Error>,
{
    let batch = {
        let mut pending = inner.pending.lock().expect("loader lock");
        pending
            .get_mut(&TypeId::of::<K>())
            .and_then(|p| p.downcast_mut::<Pending<K, T::Value>>())
            .map(std::mem::take)
    };
    if let Some(batch) = batch.filter(|b| !b.keys.is_empty()) {
        tokio::spawn(run(inner.clone(), batch));
    }
}

/// Calls the batch function once and answers every waiter with its own keys.
async fn run<T, K>(inner: Arc<Inner<T>>, batch: Pending<K, T::Value>)
where
    K: Send + Sync + Hash + Eq + Clone + 'static,
    T: Loader<K, Error = async_graphql::Error>,
{
    let keys: Vec<K> = batch.keys.into_iter().collect();
    let result = inner.loader.load(&keys).await;
    for (wanted, tx) in batch.waiters {
        let answer = match &result {
            Ok(values) => Ok(wanted
                .into_iter()
                .filter_map(|k| values.get(&k).map(|v| (k, v.clone())))
                .collect()),
            Err(e) => Err(e.clone()),
        };
        // a waiter that went away (its request was cancelled) needs no answer
        let _ = tx.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Doubles its keys and records every batch it was called with.
    #[derive(Default)]
    struct Doubler {
        batches: Mutex<Vec<Vec<u32>>>,
        calls: AtomicUsize,
    }

    impl Loader<u32> for Doubler {
        type Value = u64;
        type Error = async_graphql::Error;

        async fn load(&self, keys: &[u32]) -> async_graphql::Result<HashMap<u32, u64>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut sorted = keys.to_vec();
            sorted.sort_unstable();
            self.batches.lock().unwrap().push(sorted);
            if keys.contains(&1013) {
                return Err(async_graphql::Error::new("unlucky"));
            }
            Ok(keys
                .iter()
                .filter(|k| **k != 7)
                .map(|k| (*k, u64::from(*k) * 2))
                .collect())
        }
    }

    fn batcher(window: Duration) -> Arc<Batcher<Doubler>> {
        Arc::new(Batcher::new(Doubler::default(), window, 1_000, true))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_of_one_poll_go_out_as_one_batch_without_waiting_for_the_window() {
        // a window of a minute: only the end of the poll can have sent this batch
        let b = batcher(Duration::from_secs(60));
        let started = std::time::Instant::now();
        let values = flush_scope(futures::future::join_all(
            (1..=20u32).map(|k| b.load_one(k)),
        ))
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        for (k, v) in (1..=20u32).zip(values) {
            let v = v.unwrap();
            assert_eq!(v, (k != 7).then_some(u64::from(k) * 2), "key {k}");
        }
        assert_eq!(
            *b.inner.loader.batches.lock().unwrap(),
            vec![(1..=20).collect::<Vec<u32>>()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_larger_than_the_cooperative_budget_is_still_one_batch_per_level() {
        use futures::StreamExt as _;
        // 300 two-level lookups in one `FuturesUnordered`, as the executor resolves a long list.
        // When the first batch answers, all 300 waiters are ready in one poll; had receiving
        // spent tokio's cooperative budget (128 per poll, in a spawned task like a request),
        // the rest would have been left for later polls and their second-level keys sent as
        // further batches
        let b = batcher(Duration::from_secs(60));
        let task = b.clone();
        let values = tokio::spawn(async move {
            let pending: futures::stream::FuturesUnordered<_> = (1..=300u32)
                .map(|k| {
                    let b = task.clone();
                    async move {
                        b.load_one(k).await?;
                        b.load_one(k + 2_000).await
                    }
                })
                .collect();
            flush_scope(pending.collect::<Vec<_>>()).await
        })
        .await
        .unwrap();
        assert_eq!(values.len(), 300);
        assert!(values.iter().all(Result::is_ok));
        let batches = b.inner.loader.batches.lock().unwrap();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![300, 300]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn items_that_yield_part_way_still_share_one_batch() {
        use futures::StreamExt as _;
        // async-graphql resolves an object's fields in a `FuturesUnordered`, which wakes its task
        // and returns after polling each of them once; the list around them then stops after two
        // such items. Sent at the end of every poll, these 50 items' keys went out two at a time.
        let b = batcher(Duration::from_secs(60));
        let task = b.clone();
        let items = tokio::spawn(flush_scope(async move {
            let items: futures::stream::FuturesUnordered<_> = (1..=50u32)
                .map(|k| {
                    let b = task.clone();
                    async move {
                        let fields: futures::stream::FuturesUnordered<_> = [k, k + 100, k + 200]
                            .into_iter()
                            .map(|k| b.load_one(k))
                            .collect();
                        fields.collect::<Vec<_>>().await
                    }
                })
                .collect();
            items.collect::<Vec<_>>().await
        }))
        .await
        .unwrap();
        assert_eq!(items.len(), 50);
        let sizes: Vec<usize> = b
            .inner
            .loader
            .batches
            .lock()
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![150]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_opened_by_a_cancelled_operation_still_goes_out() {
        let b = batcher(Duration::from_secs(60));
        // operation A opens the batch and is dropped after one poll (its client went away) while
        // it keeps the batch open (it woke itself); B joined the batch and must still be answered
        let (a, b2) = (b.clone(), b.clone());
        let mut op_a = Box::pin(flush_scope(async move {
            let wanted = a.load_one(1);
            futures::pin_mut!(wanted);
            let _ = futures::poll!(wanted.as_mut());
            // wakes itself during the poll, as the executor does: the batch stays open
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if std::mem::replace(&mut yielded, true) {
                    Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
            wanted.await
        }));
        let _ = futures::poll!(op_a.as_mut());
        // B, outside any scope, joins the open batch (were it to open its own, it would wait
        // the minute's window and time out below)
        let mut op_b = Box::pin(b2.load_one(2));
        assert!(futures::poll!(op_b.as_mut()).is_pending());
        drop(op_a);
        let got = tokio::time::timeout(Duration::from_secs(5), op_b)
            .await
            .expect("B answered")
            .unwrap();
        assert_eq!(got, Some(4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nested_levels_each_go_out_at_the_end_of_their_poll() {
        let b = batcher(Duration::from_secs(60));
        // level two asks for keys that depend on level one's answers
        let result = flush_scope(futures::future::join_all((1..=5u32).map(|k| {
            let b = b.clone();
            async move {
                let first = b.load_one(k).await.unwrap().unwrap();
                b.load_one(u32::try_from(first).unwrap() + 100)
                    .await
                    .unwrap()
            }
        })))
        .await;
        assert_eq!(
            result,
            vec![Some(204), Some(208), Some(212), Some(216), Some(220)]
        );
        assert_eq!(
            *b.inner.loader.batches.lock().unwrap(),
            vec![vec![1, 2, 3, 4, 5], vec![102, 104, 106, 108, 110]]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outside_a_scope_the_window_collects_keys() {
        let b = batcher(Duration::from_millis(50));
        assert!(SCOPE.try_with(|_| ()).is_err());
        let (x, y) = tokio::join!(b.load_one(1), async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            b.load_many([2, 3, 2]).await
        });
        assert_eq!(x.unwrap(), Some(2));
        let y = y.unwrap();
        assert_eq!((y.len(), y[&2], y[&3]), (2, 4, 6));
        assert_eq!(*b.inner.loader.batches.lock().unwrap(), vec![vec![1, 2, 3]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_reaches_every_waiter_of_its_batch_and_the_next_batch_is_fresh() {
        let b = batcher(Duration::from_secs(60));
        let (x, y) = flush_scope(async { tokio::join!(b.load_one(1013), b.load_one(1)) }).await;
        assert_eq!(x.unwrap_err().message, "unlucky");
        assert_eq!(y.unwrap_err().message, "unlucky");
        let z = flush_scope(b.load_one(1)).await.unwrap();
        assert_eq!(z, Some(2));
        assert_eq!(b.inner.loader.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_poll_end_batching_off_a_batch_waits_for_its_window() {
        let b = Batcher::new(Doubler::default(), Duration::from_millis(300), 100, false);
        let started = std::time::Instant::now();
        assert_eq!(flush_scope(b.load_one(2)).await.unwrap(), Some(4));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_batch_goes_out_at_once() {
        let b = Arc::new(Batcher::new(
            Doubler::default(),
            Duration::from_secs(60),
            4,
            true,
        ));
        // outside any scope and with a minute's window: only the size can send these
        let got = tokio::time::timeout(Duration::from_secs(5), b.load_many(1..=4u32))
            .await
            .expect("a full batch must not wait for the window")
            .unwrap();
        assert_eq!(got.len(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_operations_on_both_workers_all_get_their_own_answers() {
        let b = batcher(Duration::from_millis(1));
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move {
                    let keys: Vec<u32> = (i % 10 * 3..i % 10 * 3 + 3).collect();
                    let got = flush_scope(b.load_many(keys.clone())).await.unwrap();
                    for k in keys {
                        assert_eq!(got.get(&k).copied(), (k != 7).then_some(u64::from(k) * 2));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let batches = b.inner.loader.batches.lock().unwrap();
        let asked: usize = batches.iter().map(Vec::len).sum();
        assert!(asked >= 30 && !batches.iter().any(Vec::is_empty));
    }
}
