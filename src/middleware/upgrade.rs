//! [`UpgradeActivity`]: a function stays active while an upgraded connection is open.

use crate::scaler::ActivityGuard;

/// The activity of an upgraded connection (a WebSocket, say): the function counts as in flight
/// until this is dropped.
///
/// With scale to zero on, the layer puts one in the extensions of each request that asks to
/// upgrade its connection (it has an `Upgrade` header): the response of an upgrade ends at once,
/// while the connection it opens may live for hours. A forwarding service that serves the
/// upgraded connection removes it from the request and keeps it until the connection closes
/// (a service that ignores it drops it with the request: the upgrade then counts only until its
/// response).
///
/// ```
/// # use http::Request;
/// use tower_scale_from_zero::middleware::UpgradeActivity;
///
/// fn forward(mut req: Request<()>) {
///     let activity = req.extensions_mut().remove::<UpgradeActivity>();
///     // ... after the upgrade: move `activity` into the task that copies both ways ...
///     drop(activity);
/// }
/// # forward(Request::new(()));
/// ```
///
/// A clone counts on its own (the function stays active until every clone is dropped).
#[derive(Debug)]
pub struct UpgradeActivity {
    guard: ActivityGuard,
}

impl Clone for UpgradeActivity {
    fn clone(&self) -> Self {
        Self {
            guard: self.guard.another(),
        }
    }
}

impl UpgradeActivity {
    /// Adds one to `req` (whose activity `guard` tracks) when it asks for an upgrade.
    pub(crate) fn attach<B>(req: &mut http::Request<B>, guard: &ActivityGuard) {
        if req.headers().contains_key(http::header::UPGRADE) {
            req.extensions_mut().insert(Self {
                guard: guard.another(),
            });
        }
    }
}
