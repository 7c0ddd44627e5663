//! Decoder stage: raw ndjson lines → typed events (simd-json, v2 and RUM v3).
//!
//! The first batch of a request carries its metadata line; the decoded
//! [`Metadata`](crate::model::Metadata) is stored on the request for later
//! batches. An invalid metadata line ends the request (terminal 400); an
//! invalid event line is reported and skipped. A batch without valid events
//! is answered here; the others go on to the validator.

use super::supervisor::{Actor, Loss, Message};
use super::{Batch, EventBatch, LineErr, Outcome, PipelineHooks, RawLine, Terminal};
use crate::model::{DecodeConfig, Decoder as ModelDecoder, LineError};
use crate::telemetry::{reject, Telemetry};
use crossbeam_channel::Sender;
use std::sync::Arc;

impl Message for Batch {
    fn loss(&self) -> Loss {
        // Nothing is counted received until the batch is decoded; what a
        // panic after that loses is reported by `Decoder::after_panic`.
        Loss {
            committed: false,
            events: 0,
        }
    }
}

pub struct Decoder {
    model: ModelDecoder,
    next: Sender<EventBatch>,
    telemetry: Arc<Telemetry>,
    hooks: PipelineHooks,
    /// Valid events of the batch in hand that are counted received but not
    /// yet handed on (what a panic now would lose).
    in_hand: usize,
}

impl Decoder {
    pub fn new(
        cfg: DecodeConfig,
        next: Sender<EventBatch>,
        telemetry: Arc<Telemetry>,
        hooks: PipelineHooks,
    ) -> Self {
        Decoder {
            model: ModelDecoder::new(cfg),
            next,
            telemetry,
            hooks,
            in_hand: 0,
        }
    }
}

impl Actor for Decoder {
    type Msg = Batch;

    /// The batch's valid events were counted received: they are rejected
    /// (`internal`); its invalid lines were already counted rejected.
    fn after_panic(&mut self, loss: Loss) -> Loss {
        Loss {
            committed: false,
            events: loss.events + std::mem::take(&mut self.in_hand),
        }
    }

    fn handle(&mut self, b: Batch) {
        let Batch {
            req,
            metadata_line,
            lines,
            ticket,
            permit,
        } = b;
        if ticket.cancelled() {
            self.telemetry.events_received.inc_by(lines.len() as u64);
            self.telemetry.reject(reject::QUEUE_FULL, lines.len());
            return;
        }
        if let Some(line) = metadata_line {
            match self.model.decode_metadata(&line, &req.base) {
                Ok(m) => {
                    let _ = req.metadata.set(m);
                }
                Err(e) => {
                    let _ = ticket.commit(Outcome {
                        terminal: Some(Terminal::Metadata {
                            message: e.to_string(),
                            document: line,
                        }),
                        ..Default::default()
                    });
                    return;
                }
            }
        }
        let Some(meta) = req.metadata.get() else {
            let _ = ticket.commit(Outcome {
                terminal: Some(Terminal::Internal("metadata missing".into())),
                ..Default::default()
            });
            return;
        };
        let mut events = Vec::with_capacity(lines.len());
        let mut errors = Vec::new();
        for line in lines {
            match line {
                RawLine::Json(bytes) => {
                    if let Err(e) = self.model.decode_event(&bytes, meta, &mut events) {
                        errors.push(LineErr {
                            error: e,
                            document: bytes,
                        });
                    }
                }
                RawLine::TooLarge(prefix) => errors.push(LineErr {
                    error: LineError::TooLarge,
                    document: prefix,
                }),
            }
        }
        let invalid = errors
            .iter()
            .filter(|e| e.error != LineError::TooLarge)
            .count();
        self.telemetry
            .events_received
            .inc_by((events.len() + errors.len()) as u64);
        self.telemetry.reject(reject::INVALID, invalid);
        self.telemetry
            .reject(reject::TOO_LARGE, errors.len() - invalid);
        self.in_hand = events.len();
        if let Some(hook) = &self.hooks.after_decode {
            hook(&events);
        }
        self.in_hand = 0;
        if events.is_empty() {
            let _ = ticket.commit(Outcome {
                accepted: 0,
                errors,
                terminal: None,
            });
            return;
        }
        let eb = EventBatch {
            req,
            events,
            errors,
            ticket: Some(ticket),
            permit: Arc::new(permit),
        };
        if let Err(e) = self.next.send(eb) {
            // Only during a broken shutdown: account for the events.
            let eb = e.into_inner();
            self.telemetry
                .reject(reject::SHUTTING_DOWN, eb.events.len());
        }
    }
}
