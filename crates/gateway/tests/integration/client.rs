//! The resilient client against the real simulator over HTTP: timeouts, retry, breaker,
//! bulkhead, each shown by what reached the PG (the simulator's ledger and counts).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::breaker::{BreakerConfig, Event, SlidingWindow, State};
use gateway::config::{BulkheadConfig, RetryConfig};
use gateway::observer::{GatewayEvent, GatewayObserver};
use gateway::wire::{CardType, PaymentRequest, TransactionStatus};
use gateway::{
    CancelOutcome, GatewayClient, GatewaySettings, LookupOutcome, NotDelivered, PaymentOutcome, ResilienceConfig,
    Unknown,
};
use gateway_sim::faults::{DownMode, MsRange, OutcomeSplit, StoreThenTimeout, StoreThenTimeoutMode};
use gateway_sim::{Faults, RunningSim, SimConfig};

#[derive(Default)]
struct Recorder(Mutex<Vec<GatewayEvent>>);

impl GatewayObserver for Recorder {
    fn on_event(&self, event: &GatewayEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn attempts(&self) -> usize {
        self.0.lock().unwrap().iter().filter(|e| matches!(e, GatewayEvent::Attempt { .. })).count()
    }

    fn count(&self, pred: impl Fn(&GatewayEvent) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| pred(e)).count()
    }
}

fn reliable() -> Faults {
    Faults { request_failure_rate: 0.0, ..Faults::instant() }
}

async fn sim(faults: Faults) -> RunningSim {
    let config = SimConfig { listen: "127.0.0.1:0".parse().unwrap(), seed: Some(11), faults, ..SimConfig::default() };
    gateway_sim::spawn(config).await.unwrap()
}

/// Fast, small settings so behaviours show within milliseconds.
fn config() -> ResilienceConfig {
    ResilienceConfig {
        connect_timeout: Duration::from_millis(200),
        response_timeout: Duration::from_millis(300),
        deadline: Duration::from_secs(3),
        retry: RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            budget_ratio: 10.0,
            budget_min_per_second: 100,
            ..RetryConfig::default()
        },
        payment_breaker: small_breaker(),
        status_breaker: small_breaker(),
        ..ResilienceConfig::default()
    }
}

fn small_breaker() -> BreakerConfig {
    BreakerConfig {
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 50.0,
        slow_call_duration: Duration::from_millis(200),
        sliding_window: SlidingWindow::Count(10),
        minimum_calls: 10,
        permitted_calls_in_half_open: 3,
        wait_in_open: Duration::from_millis(200),
        automatic_transition: true,
        ..BreakerConfig::default()
    }
}

fn client_for(url: &str, config: ResilienceConfig) -> (GatewayClient, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let settings = GatewaySettings {
        name: "pg".into(),
        base_url: url.into(),
        merchant_id: "merchant".into(),
        tls: Default::default(),
    };
    (GatewayClient::with_observer(settings, config, recorder.clone()).unwrap(), recorder)
}

fn payment(order_id: &str) -> PaymentRequest {
    PaymentRequest {
        order_id: order_id.into(),
        card_type: CardType::Samsung,
        card_no: "1234-5678-9814-1451".into(),
        amount: 5000,
        callback_url: "http://127.0.0.1:9/api/v1/payments/callback".into(),
    }
}

fn requests(sim: &RunningSim) -> u64 {
    sim.sim().ledger().counts.payment_requests
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_accepted_payment_returns_its_transaction_key() {
    let sim = sim(reliable()).await;
    let (client, _) = client_for(&sim.base_url(), config());
    let PaymentOutcome::Accepted { transaction_key } = client.request_payment(payment("ORD000001-1")).await else {
        panic!("accepted")
    };
    assert_eq!(sim.sim().ledger().transactions()[0].key, transaction_key);
}

#[tokio::test]
async fn a_pg_rejection_is_never_retried_and_not_counted_by_the_breaker() {
    let sim = sim(reliable()).await;
    let (client, recorder) = client_for(&sim.base_url(), config());
    let mut bad = payment("ORD000001-1");
    bad.amount = 0;
    let PaymentOutcome::Rejected(rejection) = client.request_payment(bad).await else { panic!("rejected") };
    assert_eq!((rejection.status, rejection.code.as_str()), (400, "Bad Request"));
    assert_eq!(rejection.reason, "결제금액은 양의 정수여야 합니다.");
    assert_eq!(requests(&sim), 1);
    assert_eq!(recorder.attempts(), 1);
    let m = client.payment_breaker().metrics();
    assert_eq!((m.buffered, m.failed), (1, 0));
}

#[tokio::test]
async fn card_declines_arrive_later_and_never_count_as_failures() {
    let declines = Faults { outcome: OutcomeSplit { limit_exceeded: 1.0, invalid_card: 0.0 }, ..reliable() };
    let sim = sim(declines).await;
    let (client, _) = client_for(&sim.base_url(), config());
    for i in 0..10 {
        assert!(matches!(
            client.request_payment(payment(&format!("ORD{i:06}"))).await,
            PaymentOutcome::Accepted { .. }
        ));
    }
    assert_eq!(client.payment_breaker().metrics().failed, 0);
    assert_eq!(client.payment_breaker().state(), State::Closed);
}

#[tokio::test]
async fn a_refused_connection_is_not_delivered_and_retried_to_max_attempts() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (client, recorder) = client_for(&url, config());
    let outcome = client.request_payment(payment("ORD000001-1")).await;
    assert!(matches!(outcome, PaymentOutcome::NotDelivered(NotDelivered::Connect(_))), "{outcome:?}");
    assert_eq!(recorder.attempts(), 4);
    assert_eq!(recorder.count(|e| matches!(e, GatewayEvent::Retry { .. })), 3);
}

#[tokio::test]
async fn a_connect_timeout_is_not_delivered_never_a_hang() {
    // A listener whose accept queue is full never completes new handshakes.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(100), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let (client, _) = client_for(
        &format!("http://{addr}"),
        ResilienceConfig { retry: RetryConfig { max_attempts: 1, ..config().retry }, ..config() },
    );
    let started = tokio::time::Instant::now();
    let outcome = client.request_payment(payment("ORD000001-1")).await;
    assert!(started.elapsed() < Duration::from_secs(1), "bounded by the timeouts");
    // Nothing was sent without a connection; some kernels answer the handshake and hold
    // the request instead, which must then be an unknown outcome, never a hang.
    assert!(
        matches!(
            outcome,
            PaymentOutcome::NotDelivered(NotDelivered::Connect(_)) | PaymentOutcome::Unknown(Unknown::Timeout(_))
        ),
        "{outcome:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn the_pg_unstable_500_is_retried_until_accepted() {
    // 40% failures with a fixed seed: some payments need retries, all get through. The
    // default breaker, not the small test one: 50% over 10 calls would flap at 40%.
    let sim = sim(Faults::instant()).await;
    let config = ResilienceConfig {
        retry: RetryConfig { max_attempts: 10, ..config().retry },
        payment_breaker: ResilienceConfig::default().payment_breaker,
        ..config()
    };
    let (client, recorder) = client_for(&sim.base_url(), config);
    for i in 0..30 {
        let outcome = client.request_payment(payment(&format!("ORD{i:06}"))).await;
        assert!(matches!(outcome, PaymentOutcome::Accepted { .. }), "{outcome:?}");
    }
    let retries = recorder.count(|e| matches!(e, GatewayEvent::Retry { .. }));
    assert!(retries > 0, "some first attempts failed");
    assert_eq!(requests(&sim) as usize, 30 + retries);
    assert_eq!(sim.sim().ledger().transactions().len(), 30, "exactly one transaction per payment");
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let sim = sim(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    let (client, _) = client_for(&sim.base_url(), config());
    let outcome = client.request_payment(payment("ORD000001-1")).await;
    assert!(
        matches!(outcome, PaymentOutcome::NotDelivered(NotDelivered::Unavailable { status: 500, .. })),
        "{outcome:?}"
    );
    assert_eq!(requests(&sim), 4);
    assert!(sim.sim().ledger().transactions().is_empty());
}

#[tokio::test]
async fn a_response_timeout_is_unknown_and_never_resent() {
    let sim = sim(Faults { hang: true, ..reliable() }).await;
    let (client, recorder) = client_for(&sim.base_url(), config());
    let started = tokio::time::Instant::now();
    let outcome = client.request_payment(payment("ORD000001-1")).await;
    assert_eq!(outcome, PaymentOutcome::Unknown(Unknown::Timeout(Duration::from_millis(300))));
    assert!(started.elapsed() < Duration::from_millis(600));
    assert_eq!(requests(&sim), 1, "a request whose fate is unknown is never re-sent");
    assert_eq!(recorder.count(|e| matches!(e, GatewayEvent::Retry { .. })), 0);
}

#[tokio::test]
async fn a_stored_then_timed_out_payment_is_unknown_and_the_pg_has_it() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Delay, rate: 1.0, delay_ms: 60_000 };
    let sim = sim(Faults { store_then_timeout: Some(stt), ..reliable() }).await;
    let (client, _) = client_for(&sim.base_url(), config());
    let outcome = client.request_payment(payment("ORD000001-1")).await;
    assert!(matches!(outcome, PaymentOutcome::Unknown(Unknown::Timeout(_))), "{outcome:?}");
    assert_eq!((requests(&sim), sim.sim().ledger().transactions().len()), (1, 1));
    // The way to settle it: ask by orderId, never re-send.
    let LookupOutcome::Found(list) = client.transactions_for_order("ORD000001-1").await else { panic!("found") };
    assert_eq!(list.transactions.len(), 1);
}

#[tokio::test]
async fn a_connection_dropped_after_sending_is_unknown() {
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Drop, rate: 1.0, delay_ms: 0 };
    let sim = sim(Faults { store_then_timeout: Some(stt), ..reliable() }).await;
    let (client, _) = client_for(&sim.base_url(), config());
    let outcome = client.request_payment(payment("ORD000001-1")).await;
    assert!(matches!(outcome, PaymentOutcome::Unknown(Unknown::ConnectionLost(_))), "{outcome:?}");
    assert_eq!(requests(&sim), 1);
}

#[tokio::test]
async fn retries_never_run_past_the_total_deadline() {
    let slow_failures =
        Faults { request_failure_rate: 1.0, request_latency_ms: MsRange::new(100, 100), ..Faults::instant() };
    let sim = sim(slow_failures).await;
    let config = ResilienceConfig {
        deadline: Duration::from_millis(700),
        retry: RetryConfig { max_attempts: 20, ..config().retry },
        ..config()
    };
    let (client, recorder) = client_for(&sim.base_url(), config);
    let started = tokio::time::Instant::now();
    let outcome = client.request_payment(payment("ORD000001-1")).await;
    assert!(matches!(outcome, PaymentOutcome::NotDelivered(_)), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_millis(700));
    // Each attempt takes ~100 ms and a retry starts only if a whole attempt (300 ms) fits.
    assert!((3..=5).contains(&requests(&sim)), "{} attempts", requests(&sim));
    assert_eq!(recorder.count(|e| matches!(e, GatewayEvent::RetryDeadlineReached { .. })), 1);
}

#[tokio::test]
async fn the_retry_budget_caps_the_extra_load() {
    let sim = sim(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    let config = ResilienceConfig {
        retry: RetryConfig { max_attempts: 10, budget_ratio: 0.5, budget_min_per_second: 0, ..config().retry },
        payment_breaker: BreakerConfig {
            sliding_window: SlidingWindow::Count(1000),
            minimum_calls: 1000,
            ..small_breaker()
        },
        ..config()
    };
    let (client, recorder) = client_for(&sim.base_url(), config);
    for i in 0..40 {
        client.request_payment(payment(&format!("ORD{i:06}"))).await;
    }
    let retries = recorder.count(|e| matches!(e, GatewayEvent::Retry { .. }));
    assert!(retries <= 20, "retries add at most 50% of the calls: {retries}");
    assert!(recorder.count(|e| matches!(e, GatewayEvent::RetryBudgetExhausted { .. })) > 0);
    assert_eq!(requests(&sim) as usize, 40 + retries);
}

#[tokio::test]
async fn the_breaker_opens_on_failure_rate_and_then_sends_nothing() {
    let sim = sim(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    let (client, _) = client_for(
        &sim.base_url(),
        ResilienceConfig { retry: RetryConfig { max_attempts: 1, ..config().retry }, ..config() },
    );
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let sink = reasons.clone();
    client.payment_breaker().subscribe(move |name, event| {
        if let Event::StateTransition { from, to, reason } = event {
            sink.lock().unwrap().push((name.to_string(), *from, *to, reason.clone()));
        }
    });
    for i in 0..10 {
        client.request_payment(payment(&format!("ORD{i:06}"))).await;
    }
    assert_eq!(client.payment_breaker().state(), State::Open);
    assert_eq!(
        reasons.lock().unwrap()[0],
        (
            "pg.payments".to_string(),
            State::Closed,
            State::Open,
            "failure rate 100% >= 50% over last 10 calls".to_string()
        )
    );
    let before = requests(&sim);
    for i in 0..5 {
        let outcome = client.request_payment(payment(&format!("ORX{i:06}"))).await;
        assert!(matches!(outcome, PaymentOutcome::NotDelivered(NotDelivered::CircuitOpen { .. })), "{outcome:?}");
    }
    assert_eq!(requests(&sim), before, "an open breaker sends nothing");
    assert!(sim.sim().ledger().transactions().is_empty());
}

#[tokio::test]
async fn the_breaker_opens_on_slow_calls() {
    let slow = Faults { request_latency_ms: MsRange::new(220, 220), ..reliable() };
    let sim = sim(slow).await;
    let (client, _) = client_for(&sim.base_url(), config());
    let calls = (0..10).map(|i| {
        let client = client.clone();
        async move { client.request_payment(payment(&format!("ORD{i:06}"))).await }
    });
    let outcomes = futures_join_all(calls).await;
    assert!(outcomes.iter().all(|o| matches!(o, PaymentOutcome::Accepted { .. })), "slow, yet answered");
    assert_eq!(client.payment_breaker().state(), State::Open);
    let m = client.payment_breaker().metrics();
    assert_eq!((m.failed, m.slow), (0, 10));
}

async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn after_the_wait_half_open_probes_close_or_reopen_the_breaker() {
    let sim = sim(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    let (client, _) = client_for(
        &sim.base_url(),
        ResilienceConfig { retry: RetryConfig { max_attempts: 1, ..config().retry }, ..config() },
    );
    for i in 0..10 {
        client.request_payment(payment(&format!("ORD{i:06}"))).await;
    }
    let breaker = client.payment_breaker().clone();
    assert_eq!(breaker.state(), State::Open);
    eventually("half-open after the wait", || breaker.state() == State::HalfOpen).await;
    // Three probes decide; the PG's first two "try again" answers are handed back.
    for i in 0..5 {
        assert_eq!(breaker.state(), State::HalfOpen, "probe {i} is still undecided");
        client.request_payment(payment(&format!("ORP{i:06}"))).await;
    }
    assert_eq!(breaker.state(), State::Open, "failing probes reopen");

    sim.sim().set_faults(reliable()).unwrap();
    eventually("half-open again", || breaker.state() == State::HalfOpen).await;
    for i in 0..3 {
        let outcome = client.request_payment(payment(&format!("ORQ{i:06}"))).await;
        assert!(matches!(outcome, PaymentOutcome::Accepted { .. }));
    }
    assert_eq!(breaker.state(), State::Closed, "healthy probes close");
}

#[tokio::test]
async fn the_breaker_opens_on_a_real_outage_in_each_mode() {
    for down in [
        Faults { down: Some(DownMode::Refuse), ..reliable() },
        Faults { down: Some(DownMode::Unavailable), ..reliable() },
        Faults { hang: true, ..reliable() },
    ] {
        let sim = sim(reliable()).await;
        let (client, _) = client_for(&sim.base_url(), config());
        sim.sim().set_faults(down).unwrap();
        for i in 0..10 {
            client.request_payment(payment(&format!("ORD{i:06}"))).await;
        }
        // A timed-out payment counts once the PG was asked about it.
        let breaker = client.payment_breaker().clone();
        eventually("opened on its 10-call window", || breaker.state() == State::Open).await;
    }
}

#[tokio::test]
async fn operators_can_force_disable_and_reset() {
    let sim = sim(Faults { request_failure_rate: 1.0, ..Faults::instant() }).await;
    let (client, _) = client_for(
        &sim.base_url(),
        ResilienceConfig { retry: RetryConfig { max_attempts: 1, ..config().retry }, ..config() },
    );
    let breaker = client.payment_breaker();
    breaker.force_open();
    assert!(matches!(
        client.request_payment(payment("ORD000001-1")).await,
        PaymentOutcome::NotDelivered(NotDelivered::CircuitOpen { state: State::ForcedOpen, .. })
    ));
    assert_eq!(requests(&sim), 0);
    breaker.disable();
    for i in 0..15 {
        client.request_payment(payment(&format!("ORD{i:06}"))).await;
    }
    assert_eq!(breaker.state(), State::Disabled, "a disabled breaker never opens");
    assert_eq!(requests(&sim), 15);
    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.metrics().buffered, 0);
}

#[tokio::test]
async fn a_full_bulkhead_refuses_at_once_without_sending() {
    let sim = sim(Faults { hang: true, ..reliable() }).await;
    let config = ResilienceConfig {
        response_timeout: Duration::from_millis(2_000),
        bulkhead: BulkheadConfig { max_concurrent_calls: 2, max_wait: Duration::ZERO },
        ..config()
    };
    let (client, _) = client_for(&sim.base_url(), config);
    let hung: Vec<_> = (0..2)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.request_payment(payment(&format!("ORD{i:06}"))).await })
        })
        .collect();
    eventually("both hung calls reached the PG", || requests(&sim) == 2).await;
    let started = tokio::time::Instant::now();
    let outcome = client.request_payment(payment("ORD000009-1")).await;
    assert_eq!(outcome, PaymentOutcome::NotDelivered(NotDelivered::BulkheadFull));
    assert!(started.elapsed() < Duration::from_millis(100), "refused at once");
    assert_eq!(requests(&sim), 2, "the refused call sent nothing");
    for h in hung {
        h.abort();
    }
}

#[tokio::test]
async fn with_a_wait_calls_beyond_the_bulkhead_queue_and_are_not_timed_as_slow() {
    // One place, PG answers in 100 ms (half the breaker's 200 ms slow-call bar): ten
    // calls at once go one after the other, eight waiting 200 ms or more for the place.
    // The breaker times only the PG's part, so it stays closed and all are taken.
    let sim = sim(Faults { request_latency_ms: MsRange::new(100, 100), ..reliable() }).await;
    let config = ResilienceConfig {
        response_timeout: Duration::from_millis(1_000),
        deadline: Duration::from_secs(5),
        bulkhead: BulkheadConfig { max_concurrent_calls: 1, max_wait: Duration::from_secs(4) },
        ..config()
    };
    let (client, _) = client_for(&sim.base_url(), config);
    let started = tokio::time::Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.request_payment(payment(&format!("ORD{i:06}"))).await })
        })
        .collect();
    for call in calls {
        assert!(matches!(call.await.unwrap(), PaymentOutcome::Accepted { .. }));
    }
    assert!(started.elapsed() >= Duration::from_millis(1_000), "one at a time: ten answers of 100 ms in a row");
    assert_eq!(requests(&sim), 10);
    assert_eq!(client.payment_breaker().state(), State::Closed, "waiting for a place is not a slow call");
}

#[tokio::test]
async fn a_call_that_waits_out_the_bulkhead_is_refused_unsent() {
    let sim = sim(Faults { hang: true, ..reliable() }).await;
    let config = ResilienceConfig {
        response_timeout: Duration::from_millis(2_000),
        bulkhead: BulkheadConfig { max_concurrent_calls: 1, max_wait: Duration::from_millis(200) },
        ..config()
    };
    let (client, _) = client_for(&sim.base_url(), config);
    let hung = {
        let client = client.clone();
        tokio::spawn(async move { client.request_payment(payment("ORD000001-1")).await })
    };
    eventually("the hung call reached the PG", || requests(&sim) == 1).await;
    let started = tokio::time::Instant::now();
    let outcome = client.request_payment(payment("ORD000002-1")).await;
    assert_eq!(outcome, PaymentOutcome::NotDelivered(NotDelivered::BulkheadFull));
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited for a place first");
    assert_eq!(requests(&sim), 1, "the refused call sent nothing");
    hung.abort();
}

#[tokio::test]
async fn status_lookups_have_their_own_breaker() {
    let sim = sim(reliable()).await;
    let (client, _) = client_for(&sim.base_url(), config());
    let PaymentOutcome::Accepted { transaction_key } = client.request_payment(payment("ORD000001-1")).await else {
        panic!()
    };
    client.payment_breaker().force_open();
    let LookupOutcome::Found(detail) = client.transaction(&transaction_key).await else { panic!("lookup works") };
    assert_eq!(detail.order_id, "ORD000001-1");
    client.payment_breaker().reset();
    client.status_breaker().force_open();
    assert!(matches!(client.request_payment(payment("ORD000002-1")).await, PaymentOutcome::Accepted { .. }));
    assert!(matches!(
        client.transaction(&transaction_key).await,
        LookupOutcome::NotDelivered(NotDelivered::CircuitOpen { .. })
    ));
}

#[tokio::test]
async fn lookups_find_by_key_and_by_order_newest_first() {
    let sim = sim(Faults { processing_delay_ms: MsRange::new(0, 0), ..reliable() }).await;
    let (client, _) = client_for(&sim.base_url(), config());
    let mut keys = Vec::new();
    for _ in 0..2 {
        let PaymentOutcome::Accepted { transaction_key } = client.request_payment(payment("ORD000001-1")).await else {
            panic!()
        };
        keys.push(transaction_key);
    }
    let LookupOutcome::Found(list) = client.transactions_for_order("ORD000001-1").await else { panic!() };
    let listed: Vec<_> = list.transactions.iter().map(|t| t.transaction_key.clone()).collect();
    assert_eq!(listed, [keys[1].clone(), keys[0].clone()]);
    assert_eq!(client.transaction("20000101:TR:000000").await, LookupOutcome::NotFound);
    assert_eq!(client.transactions_for_order("NOPE000000").await, LookupOutcome::NotFound);
    tokio::time::timeout(Duration::from_secs(5), sim.sim().settled()).await.unwrap();
    let LookupOutcome::Found(detail) = client.transaction(&keys[0]).await else { panic!() };
    assert_ne!(detail.status, TransactionStatus::Pending);
}

#[tokio::test]
async fn recovery_is_tried_with_real_payments_whatever_the_status_api_says() {
    let sim = sim(reliable()).await;
    // Only the refusals can bring a trial on: the wait is far beyond this test.
    let trials = BreakerConfig {
        permitted_calls_in_half_open: 1,
        half_open_after_refusals: 5,
        min_wait_in_open: Duration::from_millis(20),
        wait_in_open: Duration::from_secs(60),
        ..small_breaker()
    };
    let config = ResilienceConfig {
        payment_breaker: trials,
        retry: RetryConfig { max_attempts: 1, ..config().retry },
        ..config()
    };
    let (client, _) = client_for(&sim.base_url(), config);
    // The payment back end is down, its status API answers.
    sim.sim().set_faults(Faults { down: Some(DownMode::PaymentsUnavailable), ..reliable() }).unwrap();
    for i in 0..10 {
        client.request_payment(payment(&format!("ORD{i:06}"))).await;
    }
    let breaker = client.payment_breaker().clone();
    assert_eq!(breaker.state(), State::Open);
    let refuse_five = async |prefix: &str| {
        for i in 0..5 {
            let outcome = client.request_payment(payment(&format!("{prefix}{i:06}"))).await;
            assert!(matches!(outcome, PaymentOutcome::NotDelivered(NotDelivered::CircuitOpen { .. })), "{outcome:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let sent = requests(&sim);
    refuse_five("ORR").await;
    assert_eq!(requests(&sim), sent, "refused: nothing sent");
    let trial = client.request_payment(payment("ORT000001")).await;
    assert!(matches!(trial, PaymentOutcome::NotDelivered(NotDelivered::Unavailable { .. })), "{trial:?}");
    assert_eq!(requests(&sim), sent + 1, "one trial payment, whatever the status API says");
    assert_eq!(breaker.state(), State::Open, "a failed trial opens it again");

    sim.sim().set_faults(reliable()).unwrap();
    refuse_five("ORS").await;
    let trial = client.request_payment(payment("ORT000002")).await;
    assert!(matches!(trial, PaymentOutcome::Accepted { .. }), "{trial:?}");
    assert_eq!(breaker.state(), State::Closed, "one accepted trial closes it");
    assert_eq!(sim.sim().ledger().counts.status_queries, 0, "recovery asked nothing of the status API");
}

#[tokio::test]
async fn a_pg_that_answers_late_but_holds_every_payment_keeps_the_breaker_closed() {
    // Stored, then answered after 500 ms: above this client's 300 ms response timeout.
    let late = StoreThenTimeout { mode: StoreThenTimeoutMode::Delay, rate: 1.0, delay_ms: 500 };
    let sim = sim(Faults { store_then_timeout: Some(late), ..reliable() }).await;
    let config = ResilienceConfig {
        // As in the defaults: slowness alone never opens the payment breaker.
        payment_breaker: BreakerConfig {
            open_after_unanswered: 3,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: Duration::from_secs(60),
            ..small_breaker()
        },
        ..config()
    };
    let (client, _) = client_for(&sim.base_url(), config);
    for i in 0..12 {
        let outcome = client.request_payment(payment(&format!("ORD{i:06}"))).await;
        assert!(matches!(outcome, PaymentOutcome::Unknown(Unknown::Timeout(_))), "{outcome:?}");
    }
    let breaker = client.payment_breaker().clone();
    eventually("every timed-out payment judged", || breaker.metrics().buffered == 10).await;
    let m = breaker.metrics();
    assert_eq!((m.successful, m.failed), (10, 0), "the PG holds them: slow successes");
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(requests(&sim), 12, "nothing re-sent");
}

#[tokio::test]
async fn a_hung_pg_is_cut_off_by_a_run_of_unanswered_payments() {
    let sim = sim(Faults { hang: true, ..reliable() }).await;
    let config = ResilienceConfig {
        payment_breaker: BreakerConfig { open_after_unanswered: 3, minimum_calls: 100, ..small_breaker() },
        ..config()
    };
    let (client, _) = client_for(&sim.base_url(), config);
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let sink = reasons.clone();
    client.payment_breaker().subscribe(move |_, event| {
        if let Event::StateTransition { to: State::Open, reason, .. } = event {
            sink.lock().unwrap().push(reason.clone());
        }
    });
    let calls = (0..3).map(|i| {
        let client = client.clone();
        async move { client.request_payment(payment(&format!("ORD{i:06}"))).await }
    });
    let outcomes = futures_join_all(calls).await;
    assert!(outcomes.iter().all(|o| matches!(o, PaymentOutcome::Unknown(Unknown::Timeout(_)))));
    let breaker = client.payment_breaker().clone();
    eventually("open once the PG was asked and said nothing", || breaker.state() == State::Open).await;
    assert_eq!(reasons.lock().unwrap().as_slice(), ["3 calls in a row unanswered"]);
    assert_eq!(sim.sim().ledger().counts.status_queries, 3, "one question per timed-out payment");
}

#[tokio::test]
async fn the_default_breaker_rides_out_a_brownout_and_opens_on_an_outage() {
    // 70% of payment requests fail: a PG that still takes 30% must keep getting them.
    let sim = sim(Faults { request_failure_rate: 0.7, ..Faults::instant() }).await;
    let defaults = ResilienceConfig {
        retry: RetryConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryConfig::default()
        },
        ..ResilienceConfig::default()
    };
    let (client, _) = client_for(&sim.base_url(), defaults);
    let mut accepted = 0;
    for i in 0..300 {
        if matches!(client.request_payment(payment(&format!("ORB{i:06}"))).await, PaymentOutcome::Accepted { .. }) {
            accepted += 1;
        }
    }
    assert_eq!(client.payment_breaker().state(), State::Closed, "never opened on a PG that takes payments");
    assert!(accepted > 90, "more than the 30% one attempt each would get: {accepted} of 300");
    // A PG that takes nothing opens it within the window.
    sim.sim().set_faults(Faults { down: Some(DownMode::Unavailable), ..Faults::instant() }).unwrap();
    let mut calls = 0;
    while client.payment_breaker().state() == State::Closed {
        client.request_payment(payment(&format!("ORO{calls:06}"))).await;
        calls += 1;
        assert!(calls <= 100, "opened within its 100-call window");
    }
    assert_eq!(client.payment_breaker().state(), State::Open);
}

#[tokio::test]
async fn with_a_gateway_to_fail_over_to_a_payment_spends_only_its_first_attempts() {
    let sim = sim(Faults { down: Some(DownMode::Unavailable), ..reliable() }).await;
    let config = ResilienceConfig {
        payment_breaker: BreakerConfig { failure_rate_threshold: 100.0, minimum_calls: 1_000, ..small_breaker() },
        retry: RetryConfig { max_attempts: 6, attempts_before_failover: 2, ..config().retry },
        ..config()
    };
    let (client, _) = client_for(&sim.base_url(), config);
    let outcome = client.request_payment_before_failover(payment("ORD000001")).await;
    assert!(matches!(outcome, PaymentOutcome::NotDelivered(_)), "{outcome:?}");
    assert_eq!(requests(&sim), 2, "two attempts, then it is the next gateway's");
    client.request_payment(payment("ORD000002")).await;
    assert_eq!(requests(&sim), 2 + 6, "alone, the whole retry sequence");
}

/// A simulator with its refund API, every payment approved at once.
async fn refunding_sim() -> RunningSim {
    let faults = Faults { outcome: OutcomeSplit { limit_exceeded: 0.0, invalid_card: 0.0 }, ..reliable() };
    let config = SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        seed: Some(11),
        faults,
        refunds: true,
        ..SimConfig::default()
    };
    gateway_sim::spawn(config).await.unwrap()
}

/// A payment the PG approved: its transaction key.
async fn paid(sim: &RunningSim, client: &GatewayClient) -> String {
    let PaymentOutcome::Accepted { transaction_key } = client.request_payment(payment("ORD000001-1")).await else {
        panic!("accepted")
    };
    tokio::time::timeout(Duration::from_secs(5), sim.sim().settled()).await.expect("decided");
    transaction_key
}

fn refund(amount: i64) -> gateway::wire::CancelRequest {
    gateway::wire::CancelRequest { cancel_amount: amount, cancel_reason: "buyer cancelled".into(), callback_url: None }
}

#[tokio::test]
async fn a_cancel_is_held_pending_and_then_decided_by_the_pg() {
    let sim = refunding_sim().await;
    let (client, _) = client_for(&sim.base_url(), config());
    let key = paid(&sim, &client).await;
    let CancelOutcome::Accepted(cancel) = client.request_cancel(&key, "refund-1", refund(2_000)).await else {
        panic!("accepted")
    };
    assert_eq!(
        (cancel.status, cancel.cancel_amount, cancel.transaction_key.as_str()),
        (TransactionStatus::Pending, 2_000, key.as_str())
    );
    tokio::time::timeout(Duration::from_secs(5), sim.sim().settled()).await.expect("decided");
    let LookupOutcome::Found(list) = client.cancels(&key).await else { panic!("found") };
    assert_eq!(
        list.cancels.iter().map(|c| (c.cancel_key.clone(), c.status)).collect::<Vec<_>>(),
        [(cancel.cancel_key, TransactionStatus::Success)]
    );
    assert_eq!(sim.sim().ledger().transactions()[0].refunded(), 2_000);
}

#[tokio::test]
async fn a_cancel_whose_answer_was_lost_is_unknown_and_sent_again_under_its_key_refunds_once() {
    let sim = refunding_sim().await;
    let (client, _) = client_for(&sim.base_url(), config());
    let key = paid(&sim, &client).await;
    let stt = StoreThenTimeout { mode: StoreThenTimeoutMode::Drop, rate: 1.0, delay_ms: 0 };
    sim.sim().set_faults(Faults { store_then_timeout: Some(stt), ..sim.sim().faults() }).unwrap();
    let outcome = client.request_cancel(&key, "refund-1", refund(5_000)).await;
    assert!(matches!(outcome, CancelOutcome::Unknown(_)), "{outcome:?}");
    assert_eq!(sim.sim().ledger().counts.cancel_requests, 1, "an unknown outcome is not re-sent by the client");
    sim.sim().set_faults(Faults { store_then_timeout: None, ..sim.sim().faults() }).unwrap();
    let CancelOutcome::Accepted(again) = client.request_cancel(&key, "refund-1", refund(5_000)).await else {
        panic!("the same cancel")
    };
    tokio::time::timeout(Duration::from_secs(5), sim.sim().settled()).await.expect("decided");
    let ledger = sim.sim().ledger();
    assert_eq!(ledger.transactions()[0].cancels.len(), 1, "one cancel for the key");
    assert_eq!(
        (ledger.transactions()[0].cancels[0].key.as_str(), ledger.transactions()[0].refunded()),
        (again.cancel_key.as_str(), 5_000)
    );
}

#[tokio::test]
async fn a_cancel_the_pg_refuses_is_rejected_and_never_retried() {
    let sim = refunding_sim().await;
    let (client, _) = client_for(&sim.base_url(), config());
    let key = paid(&sim, &client).await;
    let CancelOutcome::Rejected(refused) = client.request_cancel(&key, "refund-1", refund(5_001)).await else {
        panic!("rejected")
    };
    assert_eq!((refused.status, refused.reason.as_str()), (400, gateway::wire::message::CANCEL_AMOUNT_EXCEEDED));
    assert_eq!(sim.sim().ledger().counts.cancel_requests, 1);
    assert_eq!(client.refund_breaker().state(), State::Closed);
}

#[tokio::test]
async fn a_pg_without_a_cancel_api_answers_not_found() {
    let sim = sim(reliable()).await;
    let (client, _) = client_for(&sim.base_url(), config());
    let PaymentOutcome::Accepted { transaction_key } = client.request_payment(payment("ORD000001-1")).await else {
        panic!("accepted")
    };
    assert_eq!(client.request_cancel(&transaction_key, "refund-1", refund(1_000)).await, CancelOutcome::NotFound);
}

#[tokio::test]
async fn a_cancel_the_pg_surely_did_not_take_is_retried_like_a_payment_and_stores_nothing() {
    let sim = refunding_sim().await;
    let (client, recorder) = client_for(&sim.base_url(), config());
    let key = paid(&sim, &client).await;
    // The PG's "unstable" 500 comes before anything is stored: safe to send again.
    sim.sim().set_faults(Faults { request_failure_rate: 1.0, ..sim.sim().faults() }).unwrap();
    let attempts_before = recorder.attempts();
    let outcome = client.request_cancel(&key, "refund-1", refund(1_000)).await;
    assert!(
        matches!(outcome, CancelOutcome::NotDelivered(NotDelivered::Unavailable { status: 500, .. })),
        "{outcome:?}"
    );
    assert_eq!(recorder.attempts() - attempts_before, 4, "retried to max attempts");
    assert_eq!(sim.sim().ledger().counts.cancel_requests, 4);
    assert!(sim.sim().ledger().transactions()[0].cancels.is_empty());
    assert_eq!(client.payment_breaker().state(), State::Closed, "failing refunds leave payments alone");
}
