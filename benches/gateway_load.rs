//! The gateway `benches/load.sh` puts wrk in front of: every function already running at
//! `--upstream`, with the scale-from-zero layer or `--without-scale-from-zero`. Not a
//! benchmark by itself: without `--listen` (as `cargo bench` runs it) it does nothing.
//!
//! `cargo bench --all-features --bench gateway_load -- --listen 127.0.0.1:18192 --upstream 127.0.0.1:18190`

#[path = "support/gateway.rs"]
mod gateway;

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Address to serve on
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where every function runs
    #[arg(long, default_value = "127.0.0.1:18190")]
    upstream: SocketAddr,
    /// The same gateway without the layer
    #[arg(long)]
    without_scale_from_zero: bool,
    /// Passed by `cargo bench`
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    let Some(listen) = args.listen else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let app = gateway::static_router(args.upstream, !args.without_scale_from_zero);
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
}
