//! Shutting down on SIGTERM or Ctrl-C: the server stops accepting and finishes what is in
//! flight, while the scaler drains (no new cold starts; requests waiting for one get up to the
//! drain budget, then 503).

use tower_scale_from_zero::FunctionScaler;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Resolves on Ctrl-C or SIGTERM, having started `scaler`'s drain with `budget`: give it to
/// the server's graceful shutdown.
pub async fn signal_then_drain(scaler: FunctionScaler, budget: std::time::Duration) {
    signal().await;
    tokio::spawn(async move {
        let drained = scaler.drain(budget).await;
        tracing::info!(
            took_ms = drained.took.as_millis() as u64,
            cut_short = drained.cut_short,
            "drained"
        );
    });
}
