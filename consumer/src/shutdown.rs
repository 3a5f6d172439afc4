//! A shutdown request that many waiters can observe, any number of times.

use std::future::Future;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Requested when `signal` completes.
    pub fn new(signal: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown is requested (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the sender is gone, i.e. the runtime is going down: stop too.
        let _ = rx.wait_for(|requested| *requested).await;
    }
}
