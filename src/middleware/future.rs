//! The response future of [`ScaleFromZero`](crate::ScaleFromZero).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;
use crate::scaler::ActivityGuard;

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
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F>
    where
        F: Future,
    {
        Call { #[pin] future: F },
        // Scale to zero on: the request's place among its function's requests in flight,
        // handed to the response body, which keeps it until it has ended or is dropped. A
        // variant of its own, so that untracked futures are no larger.
        Tracked { #[pin] future: F, guard: Option<ActivityGuard> },
        // A cold start whose response gets a header: the call wrapped and boxed.
        Marked { future: BoxFuture<F::Output>, guard: Option<ActivityGuard> },
        Resolved { future: BoxFuture<Resolved<F>> },
        // Boxed: error responses are rare, and inline they would make every warm future larger.
        Respond { response: Option<Box<Response<Bytes>>> },
    }
}

/// How a cold wait ends.
pub(super) enum Resolved<F: Future> {
    /// The function is ready and the inner service was called: the call, and the request's
    /// activity guard.
    Call(F, Option<ActivityGuard>),
    /// The inner service was called, and its response gets a cold-start header (rare: boxed).
    Marked(BoxFuture<F::Output>, Option<ActivityGuard>),
    /// The middleware answers itself.
    Respond(Response<Bytes>),
    /// The inner service failed to become ready.
    Fail(F::Output),
    /// Another wait, in a future of its own (a paced release's).
    Paced(BoxFuture<Resolved<F>>),
}

impl<F: Future> ResponseFuture<F> {
    pub(super) fn call(future: F, guard: Option<ActivityGuard>) -> Self {
        let state = match guard {
            None => State::Call { future },
            Some(guard) => State::Tracked {
                future,
                guard: Some(guard),
            },
        };
        Self { state }
    }

    pub(super) fn cold(future: BoxFuture<Resolved<F>>) -> Self {
        Self {
            state: State::Resolved { future },
        }
    }

    pub(super) fn respond(response: Response<Bytes>) -> Self {
        Self {
            state: State::Respond {
                response: Some(Box::new(response)),
            },
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
            let mut state = self.as_mut().project().state;
            match state.as_mut().project() {
                StateProj::Call { future } => {
                    let out = ready!(future.poll(cx));
                    return Poll::Ready(out.map(|r| r.map(ResponseBody::inner)));
                }
                StateProj::Tracked { future, guard } => {
                    let out = ready!(future.poll(cx));
                    let guard = guard.take().expect("polled after completion");
                    return Poll::Ready(out.map(|r| r.map(|b| ResponseBody::tracked(b, guard))));
                }
                StateProj::Marked { future, guard } => {
                    let out = ready!(future.as_mut().poll(cx));
                    let guard = guard.take();
                    return Poll::Ready(out.map(|r| {
                        r.map(|b| match guard {
                            Some(guard) => ResponseBody::tracked(b, guard),
                            None => ResponseBody::inner(b),
                        })
                    }));
                }
                StateProj::Resolved { future } => match ready!(future.as_mut().poll(cx)) {
                    Resolved::Call(future, None) => state.set(State::Call { future }),
                    Resolved::Call(future, Some(guard)) => state.set(State::Tracked {
                        future,
                        guard: Some(guard),
                    }),
                    Resolved::Marked(future, guard) => state.set(State::Marked { future, guard }),
                    Resolved::Respond(response) => {
                        return Poll::Ready(Ok(response.map(ResponseBody::full)))
                    }
                    Resolved::Fail(out) => {
                        return Poll::Ready(out.map(|r| r.map(ResponseBody::inner)))
                    }
                    Resolved::Paced(future) => state.set(State::Resolved { future }),
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
            State::Tracked { .. } => "call (tracked)",
            State::Marked { .. } => "call (cold-start header)",
            State::Resolved { .. } => "cold",
            State::Respond { .. } => "respond",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
