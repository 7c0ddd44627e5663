//! Decoder stage: raw ndjson lines → typed events (simd-json, v2 and RUM v3);
//! OTLP protobuf messages → the same events (see [`crate::model::otlp`]).
//!
//! The first batch of a request carries its metadata line; the decoded
//! [`Metadata`](crate::model::Metadata) is stored on the request for later
//! batches. An invalid metadata line ends the request (terminal 400); an
//! invalid event line is reported and skipped. A batch without valid events
//! is answered here; the others go on to the validator.

use crate::config::settings::Stage;
use crate::model::otlp::decode_otlp;
use crate::model::{DecodeConfig, Decoder as ModelDecoder, LineError};
use crate::pipeline::supervisor::{Actor, Loss, Message};
use crate::pipeline::topology::{StartError, Wiring};
use crate::pipeline::{Batch, EventBatch, LineErr, Outcome, PipelineHooks, RawLine, Terminal};
use crate::telemetry::{reject, Telemetry};
use bytes::Bytes;
use crossbeam_channel::Sender;
use std::sync::Arc;

/// Starts the decoders; their inbox is the pipeline's intake.
pub fn start(w: &mut Wiring<'_>, name: &'static str, sizing: Stage) -> Result<(), StartError> {
    let next = w.next_one()?;
    let telemetry = Arc::clone(w.telemetry);
    let hooks = w.resources.hooks.clone();
    let cfg = DecodeConfig {
        default_service_environment: w.cfg.apm_server.default_service_environment.clone(),
    };
    let inbox = w.spawn(name, sizing, None, move |_| {
        Decoder::new(
            cfg.clone(),
            next.clone(),
            Arc::clone(&telemetry),
            hooks.clone(),
        )
    })?;
    w.set_intake(inbox);
    Ok(())
}

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
        let meta = req.metadata.get();
        if meta.is_none() && lines.iter().any(|l| !matches!(l, RawLine::Otlp(..))) {
            let _ = ticket.commit(Outcome {
                terminal: Some(Terminal::Internal("metadata missing".into())),
                ..Default::default()
            });
            return;
        }
        let mut events = Vec::with_capacity(lines.len());
        let mut errors = Vec::new();
        for line in lines {
            match line {
                RawLine::Json(bytes) => {
                    let Some(meta) = meta else { continue };
                    if let Err(e) = self.model.decode_event(&bytes, meta, &mut events) {
                        errors.push(LineErr {
                            error: e,
                            document: bytes,
                        });
                    }
                }
                RawLine::Otlp(signal, bytes) => {
                    match decode_otlp(signal, &bytes, &req.base, &mut events) {
                        Ok(rejected) => errors.extend(rejected.into_iter().map(|r| LineErr {
                            error: LineError::Otlp(r.message),
                            document: Bytes::new(),
                        })),
                        Err(e) => errors.push(LineErr {
                            error: LineError::Otlp(e.to_string()),
                            document: Bytes::new(),
                        }),
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
