//! Responses by kind of client (docs/behaviour.md §12), each opt-in on the layer:
//!
//! - [`WaitingPage`]: a browser that asks for a cold function (`GET`, `Accept: text/html`, no
//!   upgrade) gets a small HTML page that says the function is starting and reloads itself
//!   until it answers (a `<meta http-equiv="refresh">`, no JavaScript), instead of a blank tab
//!   for the length of the cold start. The cold start goes on meanwhile; API clients are held
//!   as before.
//! - gRPC statuses ([`ScaleFromZeroLayer::grpc_statuses`](crate::ScaleFromZeroLayer::grpc_statuses)):
//!   a request with `content-type: application/grpc*` that the layer refuses gets a gRPC
//!   response (HTTP 200, `grpc-status`, `grpc-message`), so gRPC clients see real codes;
//!   gRPC-Web calls (`application/grpc-web*`) get the same in gRPC-Web's content type.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::{ErrorKind, FunctionId, ScaleError};

/// The page a browser gets while its function starts; see [the module
/// docs](crate::middleware::clients). Set with
/// [`ScaleFromZeroLayer::waiting_page`](crate::ScaleFromZeroLayer::waiting_page).
///
/// A browser's request is held for [`after`](Self::after) (1 s by default) like any other:
/// a quick cold start shows no page. Past that, once the function is known to be starting (a
/// read showed it cold or scaling up; the refresh of a warm function, or reads that fail,
/// keep the browser held), it is answered `200` with the page,
/// `Cache-Control: no-store` and `Retry-After`; the page reloads itself every
/// [`refresh`](Self::refresh) (2 s by default) until the function answers. A function that
/// cannot start (unknown, failing) answers as usual, page or not: the reload gets the error.
///
/// ```
/// use std::time::Duration;
/// use tower_scale_from_zero::middleware::WaitingPage;
///
/// let page = WaitingPage::new()
///     .template("<!doctype html><title>{function}</title><p>{function} is waking up…")
///     .refresh(Duration::from_secs(3));
/// # let _ = page;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WaitingPage {
    template: Arc<str>,
    refresh: Duration,
    after: Duration,
}

/// The page without a template of the user's.
const DEFAULT_TEMPLATE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>Starting {function}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; min-height: 100vh; display: grid;
         place-items: center; background: #f6f7f9; color: #1f2933; }
  main { text-align: center; padding: 2rem; }
  .spinner { width: 2.5rem; height: 2.5rem; margin: 0 auto 1.5rem; border-radius: 50%;
             border: 0.3rem solid #d9dee5; border-top-color: #3b82f6;
             animation: spin 1s linear infinite; }
  @keyframes spin { to { transform: rotate(360deg); } }
  p { color: #52606d; }
</style>
</head>
<body>
<main>
<div class="spinner" aria-hidden="true"></div>
<h1>{function} is starting</h1>
<p>This page reloads itself every {refresh} s until it is ready.</p>
</main>
</body>
</html>
"#;

impl Default for WaitingPage {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitingPage {
    /// The built-in page, reloading every 2 s, shown after 1 s.
    pub fn new() -> Self {
        Self {
            template: Arc::from(DEFAULT_TEMPLATE),
            refresh: Duration::from_secs(2),
            after: Duration::from_secs(1),
        }
    }

    /// The page's HTML. `{function}` becomes the function's name (`name.namespace`,
    /// HTML-escaped) and `{refresh}` the reload period in seconds; put a
    /// `<meta http-equiv="refresh" content="{refresh}">` in it (the response also carries a
    /// `Refresh` header, which browsers follow too).
    pub fn template(mut self, html: impl Into<String>) -> Self {
        self.template = Arc::from(html.into());
        self
    }

    /// How often the page reloads itself, in whole seconds (at least 1).
    ///
    /// # Panics
    ///
    /// If `every` is shorter than a second.
    pub fn refresh(mut self, every: Duration) -> Self {
        assert!(
            every >= Duration::from_secs(1),
            "the waiting page reloads at most once a second"
        );
        self.refresh = every;
        self
    }

    /// How long a browser's request is held before it gets the page (a cold start quicker
    /// than this shows no page). Zero shows it at once.
    pub fn after(mut self, wait: Duration) -> Self {
        self.after = wait;
        self
    }

    /// How long a browser's request is held before it gets the page.
    pub(crate) fn delay(&self) -> Duration {
        self.after
    }

    /// Whether `req` is a browser's page load: `GET`, HTML accepted, no upgrade.
    pub(crate) fn wants<B>(&self, req: &Request<B>) -> bool {
        req.method() == Method::GET
            && !req.headers().contains_key(header::UPGRADE)
            && req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|accept| accept.contains("text/html"))
    }

    /// The page for `function`.
    pub(crate) fn render(&self, function: &FunctionId) -> Response<Bytes> {
        let seconds = self.refresh.as_secs().max(1);
        let name = escape(&function.to_string());
        let html = self
            .template
            .replace("{function}", &name)
            .replace("{refresh}", &seconds.to_string());
        let mut response = Response::new(Bytes::from(html));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        headers.insert(
            header::HeaderName::from_static("refresh"),
            HeaderValue::from(seconds),
        );
        response
    }
}

/// `&`, `<`, `>`, `"` and `'` as HTML entities (names are DNS labels, but templates are the
/// user's and the escaping costs nothing).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How a refused gRPC call is answered: in its own protocol (gRPC, or gRPC-Web in binary or
/// text form), with or without the provider's own error text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GrpcCall {
    // Two bytes: it lives in every held gRPC request.
    web: GrpcWeb,
    provider_errors: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrpcWeb {
    No,
    Binary,
    Text,
}

impl GrpcCall {
    /// `req`'s kind of gRPC call, if it is one (`content-type: application/grpc`,
    /// `application/grpc+proto`, `application/grpc-web`, `application/grpc-web-text+proto`,
    /// ...; matched in any case, as media types are).
    pub(crate) fn of<B>(req: &Request<B>, provider_errors: bool) -> Option<Self> {
        let content_type = req.headers().get(header::CONTENT_TYPE)?.as_bytes();
        let starts = |prefix: &str| {
            content_type
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
        };
        let web = if starts("application/grpc-web-text") {
            GrpcWeb::Text
        } else if starts("application/grpc-web") {
            GrpcWeb::Binary
        } else if starts("application/grpc") {
            GrpcWeb::No
        } else {
            return None;
        };
        Some(Self {
            web,
            provider_errors,
        })
    }

    /// A "trailers-only" response for `error`: HTTP 200, the call's content type,
    /// `grpc-status` and a percent-encoded `grpc-message` (the client-facing text of
    /// [`ScaleError::public_message`], or with the provider's own text when opted in), no
    /// body; `Retry-After` kept when the refusal has one.
    pub(crate) fn response(self, error: &ScaleError) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        let content_type = match self.web {
            GrpcWeb::No => "application/grpc",
            GrpcWeb::Binary => "application/grpc-web",
            GrpcWeb::Text => "application/grpc-web-text",
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(
            header::HeaderName::from_static("grpc-status"),
            HeaderValue::from(grpc_code(error) as u16),
        );
        let text = if self.provider_errors {
            error.to_string()
        } else {
            error.public_message()
        };
        if let Ok(value) = HeaderValue::from_str(&percent_encode(&text)) {
            headers.insert(header::HeaderName::from_static("grpc-message"), value);
        }
        if let Some(after) = error.retry_after() {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        response
    }
}

/// gRPC status codes the layer answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    Unavailable = 14,
}

/// The gRPC status for a refusal: a name that is not one is `INVALID_ARGUMENT`, an unknown
/// function `NOT_FOUND`, a deadline `DEADLINE_EXCEEDED`; everything else (full queues, a
/// failing platform, a drain) is `UNAVAILABLE`, which gRPC clients may retry.
pub(crate) fn grpc_code(error: &ScaleError) -> GrpcCode {
    match error.kind() {
        ErrorKind::InvalidFunction => GrpcCode::InvalidArgument,
        ErrorKind::NotFound => GrpcCode::NotFound,
        ErrorKind::NotReady => GrpcCode::DeadlineExceeded,
        _ => GrpcCode::Unavailable,
    }
}

/// gRPC's percent-encoding of `grpc-message`: bytes outside printable ASCII, and `%`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
