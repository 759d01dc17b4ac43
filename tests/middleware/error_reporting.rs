//! Provider failures: logs carry the whole cause chain; clients get the function and the kind
//! of failure only, unless the responder opts in; "function ready" is logged once per actual
//! cold start, never for refreshes of a warm function.

use crate::support::harness as common;

use std::error::Error as StdError;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{ms, Echo, Harness, Reply};
use http::StatusCode;
use tower::{Layer, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, Fault};
use tower_scale_from_zero::{DefaultResponder, QueryError, ScaleFromZeroLayer, ScalingConfig};

/// Everything logged while the guard lives, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || sink.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // A callsite that another test's thread registered while this subscriber was being
        // set may have cached "never" for it (tracing's interest cache races with scoped
        // subscribers): ask every callsite again.
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An error shaped like hyper-util's: the useful part is only in `source()`.
#[derive(Debug)]
struct ClientError(std::io::Error);

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("client error (Connect)")
    }
}

impl StdError for ClientError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

fn refused() -> QueryError {
    QueryError::from_source(ClientError(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "tcp connect error: Connection refused (os error 111) at 10.0.0.7:8080",
    )))
}

#[tokio::test(start_paused = true)]
async fn logs_carry_the_whole_cause_chain_and_the_client_gets_only_the_kind() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let h = Harness::new(ScalingConfig::builder().max_scale_attempts(2).build())
        .with_function("echo", FakeFunction::new());
    h.provider.fail_get(Fault::Error(refused()), usize::MAX);

    let reply = h.get("/function/echo").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        reply.body,
        "provider error for function echo.openfaas-fn: the provider could not be reached\n"
    );
    let logged = logs.text();
    let line = logged
        .lines()
        .find(|l| l.contains("cold start failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{logged}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("client error (Connect): tcp connect error: Connection refused"),
        "{line}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_providers_text_reaches_clients_only_when_the_responder_opts_in() {
    let h = Harness::new(ScalingConfig::builder().max_scale_attempts(1).build())
        .with_function("echo", FakeFunction::new());
    let secret = QueryError::provider("quota of tenant 42 exceeded on node-7")
        .with_status(StatusCode::INTERNAL_SERVER_ERROR);
    h.provider.fail_set(Fault::Error(secret), usize::MAX);

    let hidden = h.get("/function/echo").await;
    assert_eq!(hidden.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        hidden.body,
        "could not scale function echo.openfaas-fn after 1 attempts: \
         the provider answered 500 Internal Server Error\n"
    );

    let open = ScaleFromZeroLayer::new(h.scaler.clone())
        .responder(DefaultResponder::new().expose_provider_errors(true))
        .layer(Echo::default());
    let req = http::Request::get("/function/echo")
        .body(String::new())
        .unwrap();
    let shown = Reply::from(open.oneshot(req).await.unwrap()).await;
    assert_eq!(shown.status, StatusCode::BAD_GATEWAY);
    assert!(shown.body.contains("quota of tenant 42"), "{}", shown.body);
}

#[tokio::test(start_paused = true)]
async fn function_ready_is_logged_once_per_cold_start_and_never_for_warm_refreshes() {
    let logs = Logs::default();
    let _guard = logs.capture();
    let h = Harness::new(ScalingConfig::default())
        .with_function("warm", FakeFunction::new().running(1))
        .with_function("cold", FakeFunction::new().startup_delay(ms(300)));

    // 10 s of warm traffic: the 250 ms cache entry is refreshed about 40 times.
    for _ in 0..200 {
        assert_eq!(h.get("/function/warm").await.status, 200);
        tokio::time::sleep(ms(50)).await;
    }
    assert!(h.provider.get_calls() >= 30, "{}", h.provider.get_calls());
    // Other tests' threads register the cold start's callsites meanwhile, racing this
    // thread's subscriber in tracing's interest cache: ask them all again.
    tracing::callsite::rebuild_interest_cache();
    assert_eq!(h.get("/function/cold").await.status, 200);

    let logged = logs.text();
    let ready: Vec<_> = logged
        .lines()
        .filter(|l| l.contains("function ready"))
        .collect();
    assert_eq!(ready.len(), 1, "{logged}");
    assert!(ready[0].contains("cold.openfaas-fn"), "{}", ready[0]);
}
