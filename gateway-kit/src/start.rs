//! What both examples' `main` does before serving: the bundled function's mode, the command
//! line, logs, a runtime, the gateway and its listener. Errors end the process with a message:
//! status 2 for options, functions or platform settings, 1 when the address cannot be bound.

use std::future::Future;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;

use crate::{hello, logs, Gateway, Options};

/// Runs the example called `name`: `serve` gets the gateway and its bound listener, on a
/// multi-threaded Tokio runtime. When this binary was started as the bundled function, serves
/// that instead.
pub fn run<F, Fut>(name: &str, serve: F)
where
    F: FnOnce(Arc<Gateway>, TcpListener) -> Fut,
    Fut: Future<Output = ()>,
{
    // The bundled hello-world function is this binary, started by the gateway.
    if hello::run_if_asked() {
        return;
    }
    let options = Options::parse();
    logs::init(options.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let gateway = match Gateway::from_options(&options).await {
            Ok(gateway) => Arc::new(gateway),
            Err(message) => Options::fail(message),
        };
        let listen = options.listen;
        let listener = TcpListener::bind(listen).await.unwrap_or_else(|e| {
            eprintln!("error: cannot listen on {listen}: {e}");
            std::process::exit(1)
        });
        tracing::info!(
            "{name} on http://{listen}  (try: curl -i http://{listen}/function/hello-world)"
        );
        serve(gateway, listener).await;
    });
}
