//! gRPC handlers of the pub/sub API: `PublishEvent`, `BulkPublishEvent(Alpha1)` and the
//! streaming subscription `SubscribeTopicEventsAlpha1`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use mecha_proto::runtime as rt;
use rt::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In;
use rt::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out;
use tokio::sync::oneshot;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::pubsub::{BulkPublishEntry, Publish};
use crate::sidecar::Services;

/// The stream of `SubscribeTopicEventsAlpha1`.
pub(super) type EventStream =
    Pin<Box<dyn Stream<Item = Result<rt::SubscribeTopicEventsResponseAlpha1, Status>> + Send>>;

fn text(md: &MetadataMap, key: &str) -> Option<String> {
    md.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `PublishEvent`.
pub(super) async fn publish(
    s: &Arc<Services>,
    req: Request<rt::PublishEventRequest>,
) -> Result<Response<()>, Status> {
    let traceparent = text(req.metadata(), "traceparent");
    let tracestate = text(req.metadata(), "tracestate");
    let req = req.into_inner();
    s.pubsub
        .publish(Publish {
            pubsub: req.pubsub_name,
            topic: req.topic,
            data: Bytes::from(req.data),
            content_type: Some(req.data_content_type).filter(|c| !c.is_empty()),
            metadata: req.metadata,
            traceparent,
            tracestate,
        })
        .await?;
    Ok(Response::new(()))
}

/// `BulkPublishEvent` and `BulkPublishEventAlpha1`: entries that failed are listed in the
/// answer.
pub(super) async fn bulk_publish(
    s: &Arc<Services>,
    req: Request<rt::BulkPublishRequest>,
) -> Result<Response<rt::BulkPublishResponse>, Status> {
    let traceparent = text(req.metadata(), "traceparent");
    let req = req.into_inner();
    let entries = req
        .entries
        .into_iter()
        .map(|e| BulkPublishEntry {
            entry_id: e.entry_id,
            data: Bytes::from(e.event),
            content_type: if e.content_type.is_empty() {
                "text/plain".to_owned()
            } else {
                e.content_type
            },
            metadata: e.metadata,
        })
        .collect();
    let failed = s
        .pubsub
        .bulk_publish(
            &req.pubsub_name,
            &req.topic,
            entries,
            req.metadata,
            traceparent.as_deref(),
        )
        .await?;
    Ok(Response::new(rt::BulkPublishResponse {
        failed_entries: failed
            .into_iter()
            .map(|f| rt::BulkPublishResponseFailedEntry {
                entry_id: f.entry_id,
                error: f.error,
            })
            .collect(),
    }))
}

/// `SubscribeTopicEventsAlpha1`: the first message names the topic; the sidecar answers with
/// an initial response, then sends events, each answered by an `EventProcessed` message with
/// the event's id. Events not answered when the stream ends are delivered again later.
pub(super) async fn subscribe_stream(
    s: &Arc<Services>,
    req: Request<Streaming<rt::SubscribeTopicEventsRequestAlpha1>>,
) -> Result<Response<EventStream>, Status> {
    let mut inbound = req.into_inner();
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the stream ended before the initial request"))?;
    let Some(In::InitialRequest(init)) = first.subscribe_topic_events_request_type else {
        return Err(Status::invalid_argument(
            "the first message of SubscribeTopicEventsAlpha1 must be the initial request",
        ));
    };
    let (handle, events) = s
        .pubsub
        .subscribe_stream(
            &init.pubsub_name,
            &init.topic,
            init.metadata,
            init.dead_letter_topic,
            s.health.clone(),
        )
        .await?;
    type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Option<rt::TopicEventResponse>>>>>;
    let pending: Pending = Arc::default();
    let answers = pending.clone();
    tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(m)) => match m.subscribe_topic_events_request_type {
                    Some(In::EventProcessed(p)) => {
                        let waiting = answers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&p.id);
                        match waiting {
                            Some(tx) => {
                                let _ = tx.send(p.status);
                            }
                            None => {
                                tracing::warn!(id = %p.id, "Streaming subscriber answered an unknown event id")
                            }
                        }
                    }
                    Some(In::InitialRequest(_)) => {
                        tracing::warn!(
                            "A second initial request on a streaming subscription is ignored"
                        )
                    }
                    None => {}
                },
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "Streaming subscription closed by the client");
                    break;
                }
            }
        }
        // Unanswered events go back to the broker.
        answers.lock().unwrap_or_else(|e| e.into_inner()).clear();
    });
    let initial = rt::SubscribeTopicEventsResponseAlpha1 {
        subscribe_topic_events_response_type: Some(Out::InitialResponse(
            rt::SubscribeTopicEventsResponseInitialAlpha1 {},
        )),
    };
    // The state carries the subscription handle: the subscription lives as long as the
    // answer stream, and ends when the client goes away.
    let rest = futures::stream::unfold(
        (events, handle, pending),
        |(mut events, handle, pending)| async move {
            let ev = events.recv().await?;
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ev.event.id.clone(), ev.answer);
            let msg = rt::SubscribeTopicEventsResponseAlpha1 {
                subscribe_topic_events_response_type: Some(Out::EventMessage(ev.event)),
            };
            Some((Ok(msg), (events, handle, pending)))
        },
    );
    let stream = futures::stream::once(async move { Ok(initial) }).chain(rest);
    Ok(Response::new(Box::pin(stream)))
}
