//! A process-wide ceiling on request-body bytes held in memory at once
//! (`limits.max_body_memory_bytes`), counted after Content-Encoding is undone.
//!
//! A body whose Content-Length does not fit in what is free is refused with
//! 503 and Retry-After before any of it is read. A body of unknown length
//! (chunked, or compressed) takes room as its bytes arrive and is refused the
//! same way once it would pass the ceiling. The room is given back when the
//! response is ready, once the handler has dropped the body. Written by hand:
//! tower-http's limits bound one body or the number of requests, not the bytes
//! of all bodies together.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Problem;

/// Bytes one permit stands for.
const BYTES_PER_PERMIT: u64 = 1024;
/// Seconds a refused client is asked to wait.
const RETRY_AFTER_SECS: u64 = 5;

/// The shared ceiling.
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    /// Bodies declared larger than this are left to the per-upload limit (413).
    max_body_bytes: u64,
}

impl BodyBudget {
    /// A ceiling of `ceiling_bytes`; single bodies above `max_body_bytes` are
    /// refused by the body limit instead.
    pub fn new(ceiling_bytes: u64, max_body_bytes: u64) -> BodyBudget {
        let permits = ceiling_bytes
            .div_ceil(BYTES_PER_PERMIT)
            .clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
        BodyBudget {
            permits: Arc::new(Semaphore::new(permits)),
            max_body_bytes,
        }
    }

    /// Bytes free now.
    #[cfg(test)]
    fn free_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * BYTES_PER_PERMIT
    }
}

/// Room held by one request's body.
#[derive(Default)]
struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// Bytes the permits cover.
    covered: u64,
    /// Bytes of the body seen so far.
    seen: u64,
    /// The body would have passed the ceiling.
    refused: bool,
}

impl Held {
    /// Takes room for `bytes` in total, without waiting.
    fn cover(&mut self, budget: &BodyBudget, bytes: u64) -> bool {
        if bytes <= self.covered {
            return true;
        }
        let more = (bytes - self.covered).div_ceil(BYTES_PER_PERMIT);
        let Ok(more) = u32::try_from(more) else {
            return false;
        };
        match budget.permits.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                self.covered += u64::from(more) * BYTES_PER_PERMIT;
                true
            }
            Err(_) => false,
        }
    }
}

/// Middleware: admits each request's body into the budget.
pub async fn admit_body(
    State(budget): State<BodyBudget>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n <= budget.max_body_bytes)
        .unwrap_or(0);
    let held = Arc::new(Mutex::new(Held::default()));
    if !lock(&held).cover(&budget, declared) {
        return busy().into_response();
    }
    let request = request.map(|body| {
        Body::new(Counted {
            inner: body,
            budget: budget.clone(),
            held: held.clone(),
        })
    });
    let response = next.run(request).await;
    let refused = lock(&held).refused;
    if refused {
        busy().into_response()
    } else {
        response
    }
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    held.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn busy() -> Problem {
    Problem::unavailable(
        "request bodies in memory are at limits.max_body_memory_bytes; retry later",
        RETRY_AFTER_SECS,
    )
}

/// The body that cannot pass the ceiling.
#[derive(Debug, thiserror::Error)]
#[error("request bodies in memory are at the ceiling")]
struct CeilingReached;

/// A request body that takes room in the budget as its bytes arrive.
struct Counted {
    inner: Body,
    budget: BodyBudget,
    held: Arc<Mutex<Held>>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let mut held = lock(&self.held);
            held.seen += data.len() as u64;
            // Past the per-upload limit the body limit answers 413 instead.
            let seen = held.seen.min(self.budget.max_body_bytes);
            if !held.cover(&self.budget, seen) {
                held.refused = true;
                return Poll::Ready(Some(Err(axum::Error::new(CeilingReached))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::put;
    use tower::ServiceExt;

    fn app(budget: BodyBudget) -> Router {
        Router::new()
            .route(
                "/",
                put(|body: Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn_with_state(budget, admit_body))
    }

    fn put_request(body: Body, length: Option<usize>) -> Request {
        let mut builder = Request::put("/");
        if let Some(n) = length {
            builder = builder.header(header::CONTENT_LENGTH, n);
        }
        builder.body(body).unwrap()
    }

    #[tokio::test]
    async fn declared_length_beyond_free_room_is_refused_before_reading() {
        let budget = BodyBudget::new(64 << 10, 1 << 20);
        let response = app(budget.clone())
            .oneshot(put_request(
                Body::from(vec![0u8; 100 << 10]),
                Some(100 << 10),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(budget.free_bytes(), 64 << 10);
    }

    #[tokio::test]
    async fn streamed_body_is_refused_once_it_passes_the_ceiling() {
        let budget = BodyBudget::new(64 << 10, 1 << 20);
        // No Content-Length: the room is taken as the bytes arrive.
        let body = Body::from(vec![1u8; 100 << 10]);
        let response = app(budget.clone())
            .oneshot(put_request(body, None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(budget.free_bytes(), 64 << 10, "room is given back");
    }

    #[tokio::test]
    async fn bodies_within_the_ceiling_pass_and_give_the_room_back() {
        let budget = BodyBudget::new(64 << 10, 1 << 20);
        for length in [Some(40 << 10), None] {
            let response = app(budget.clone())
                .oneshot(put_request(Body::from(vec![0u8; 40 << 10]), length))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(budget.free_bytes(), 64 << 10);
        }
    }

    #[tokio::test]
    async fn room_is_held_while_a_body_is_in_use() {
        let budget = BodyBudget::new(64 << 10, 1 << 20);
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let slots = Arc::new(Mutex::new(Some((entered_tx, release_rx))));
        let slow = Router::new()
            .route(
                "/",
                put(move |body: Bytes| {
                    let slots = slots.clone();
                    async move {
                        let (entered, release) = slots.lock().unwrap().take().unwrap();
                        entered.send(()).unwrap();
                        release.await.unwrap();
                        body.len().to_string()
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                budget.clone(),
                admit_body,
            ));
        let first = tokio::spawn(
            slow.oneshot(put_request(Body::from(vec![0u8; 40 << 10]), Some(40 << 10))),
        );
        entered_rx.await.unwrap();
        let second = app(budget.clone())
            .oneshot(put_request(Body::from(vec![0u8; 40 << 10]), Some(40 << 10)))
            .await
            .unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        release_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        assert_eq!(budget.free_bytes(), 64 << 10);
    }
}
