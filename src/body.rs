//! [`ResponseBody`]: the inner service's body, or the middleware's own error body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::scaler::ActivityGuard;

pin_project! {
    /// The body of responses from [`ScaleFromZero`](crate::ScaleFromZero): the inner
    /// service's body, untouched, or the short body of an error response. Working with any
    /// inner body type is why the middleware wraps it rather than building one.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        // Scale to zero on: the request counts as in flight until this body has ended or is
        // dropped (streams, long polls and upgraded connections included). A variant of its
        // own, so that bodies without it are no larger.
        Tracked { #[pin] body: B, guard: Option<ActivityGuard> },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn tracked(body: B, guard: ActivityGuard) -> Self {
        Self {
            kind: Kind::Tracked {
                body,
                guard: Some(guard),
            },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Full { data },
        }
    }
}

/// An empty body, as layers such as tower-http's `Timeout` build for their own responses.
impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Tracked { body, guard } => {
                let frame = body.poll_frame(cx);
                if let Poll::Ready(None) = frame {
                    // Ended: the request is no longer in flight.
                    guard.take();
                }
                frame
            }
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } | Kind::Tracked { body, .. } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } | Kind::Tracked { body, .. } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
