//! The response future of [`ScaleFromZero`](crate::ScaleFromZero).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use pin_project_lite::pin_project;

use crate::activity::ActivityGuard;
use crate::ResponseBody;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`ScaleFromZero`](crate::ScaleFromZero): the inner call directly
    /// for warm functions; for cold ones a boxed wait for the scaler, then the inner call.
    pub struct ResponseFuture<F>
    where
        F: Future,
    {
        #[pin]
        state: State<F>,
        // The request's place among its function's requests in flight (scale to zero on):
        // handed to the response body, which keeps it until it has ended or is dropped.
        guard: Option<ActivityGuard>,
        // The cold-start header to add, if asked for (rare: boxed).
        header: Option<Box<(HeaderName, HeaderValue)>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F>
    where
        F: Future,
    {
        Call { #[pin] future: F },
        Cold { future: BoxFuture<Cold<F>> },
        // Boxed: error responses are rare, and inline they would make every warm future larger.
        Respond { response: Option<Box<Response<Bytes>>> },
    }
}

/// How a cold wait ends.
pub(super) enum Cold<F: Future> {
    /// The function is ready and the inner service was called: the call, the request's
    /// activity guard, and a cold-start header to add.
    Call(
        F,
        Option<ActivityGuard>,
        Option<Box<(HeaderName, HeaderValue)>>,
    ),
    /// The middleware answers itself.
    Respond(Response<Bytes>),
    /// The inner service failed to become ready.
    Fail(F::Output),
}

impl<F: Future> ResponseFuture<F> {
    pub(super) fn call(future: F, guard: Option<ActivityGuard>) -> Self {
        Self {
            state: State::Call { future },
            guard,
            header: None,
        }
    }

    pub(super) fn cold(future: BoxFuture<Cold<F>>) -> Self {
        Self {
            state: State::Cold { future },
            guard: None,
            header: None,
        }
    }

    pub(super) fn respond(response: Response<Bytes>) -> Self {
        Self {
            state: State::Respond {
                response: Some(Box::new(response)),
            },
            guard: None,
            header: None,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let mut state = this.state;
            match state.as_mut().project() {
                StateProj::Call { future } => {
                    let out = ready!(future.poll(cx));
                    let guard = this.guard.take();
                    let header = this.header.take();
                    return Poll::Ready(out.map(|mut response| {
                        if let Some(header) = header {
                            let (name, value) = *header;
                            response.headers_mut().insert(name, value);
                        }
                        response.map(|body| ResponseBody::inner(body, guard))
                    }));
                }
                StateProj::Cold { future } => match ready!(future.as_mut().poll(cx)) {
                    Cold::Call(future, guard, header) => {
                        *this.guard = guard;
                        *this.header = header;
                        state.set(State::Call { future });
                    }
                    Cold::Respond(response) => {
                        return Poll::Ready(Ok(response.map(ResponseBody::full)))
                    }
                    Cold::Fail(out) => {
                        return Poll::Ready(out.map(|r| r.map(|b| ResponseBody::inner(b, None))))
                    }
                },
                StateProj::Respond { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok((*response).map(ResponseBody::full)));
                }
            }
        }
    }
}

impl<F: Future> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Call { .. } => "call",
            State::Cold { .. } => "cold",
            State::Respond { .. } => "respond",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
