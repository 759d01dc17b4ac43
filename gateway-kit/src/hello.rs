//! The bundled `hello-world` function: the gateway binary itself, started by the local
//! provider as `--serve-function NAME --startup-ms N` with `PORT` set. It answers every
//! request with a greeting and the number of body bytes it read (streamed, never held whole),
//! and exits when its standard input closes (the gateway died).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tower_scale_from_zero::providers::ProcessSpec;

/// The bundled function's name.
pub const NAME: &str = "hello-world";

/// The bundled function's command: this very binary, in function mode.
pub fn spec(startup: Duration, idle: Option<Duration>) -> ProcessSpec {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let spec = ProcessSpec::new(exe)
        .arg("--serve-function")
        .arg(NAME)
        .arg("--startup-ms")
        .arg(startup.as_millis().to_string());
    match idle {
        Some(idle) => spec.scale_to_zero_after(idle),
        None => spec,
    }
}

/// The bundled function's own command line.
#[derive(clap::Parser)]
#[command(no_binary_name = true)]
struct FunctionMode {
    /// Serve as the function NAME
    #[arg(long, value_name = "NAME")]
    serve_function: String,
    /// Wait this long before listening (a slow runtime boot)
    #[arg(long, value_name = "MS", default_value_t = 0)]
    startup_ms: u64,
}

/// Function mode: when this process was started as `--serve-function NAME [--startup-ms N]`,
/// serves until its standard input closes and returns `true`. Returns `false` otherwise.
pub fn run_if_asked() -> bool {
    use clap::Parser;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("--serve-function") {
        return false;
    }
    let mode = FunctionMode::parse_from(args);
    let name = mode.serve_function;
    // Die with the gateway: it holds our stdin open for as long as it lives.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("{name}: PORT is not set");
            std::process::exit(2)
        });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve(name, port, Duration::from_millis(mode.startup_ms)));
    true
}

async fn serve(name: String, port: u16, startup: Duration) {
    tokio::time::sleep(startup).await; // a slow runtime boot, when asked for
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| {
            eprintln!("{name}: cannot listen on {port}: {e}");
            std::process::exit(1)
        });
    let name: Arc<str> = name.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let name = Arc::clone(&name);
                async move {
                    let path = req.uri().path().to_owned();
                    let mut body = req.into_body();
                    let mut received = 0usize;
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame?.into_data() {
                            received += data.len();
                        }
                    }
                    let greeting =
                        format!("Hello from {name}! path={path} received={received} bytes\n");
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(greeting))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
