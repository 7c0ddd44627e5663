//! Sourcemap applier stage: the RUM frame processors (docs/sourcemaps.md)
//! on every event of batches from the RUM endpoints, then forwarding to the
//! indexer.
//!
//! Per batch, in order: source mapping of span and error stack traces (one
//! deadline of `rum.source_mapping.timeout` for the whole batch), library
//! flagging, exclude-from-grouping flagging (both skipped for errors with a
//! span part, as apm-server does), culprit update (only with source mapping),
//! and the error grouping key recomputed over the final frames.
//!
//! Invariants: every event of every batch is forwarded (source-map failures
//! are recorded on frames, never drop events), except a poison event: when
//! a batch panics, its events are processed again one by one from their
//! state before the batch, and one that panics alone too is buried in the
//! dead-letter file ([`crate::queue::dead_letter`]) as it was before source
//! mapping; the only blocking is a source-map fetch, bounded by the batch
//! deadline.

use crate::config::settings::Stage;
use crate::model::{EncodeContext, Event, Frame};
use crate::pipeline::supervisor::Actor;
use crate::pipeline::topology::EventsHook;
use crate::pipeline::topology::{StartError, Wiring};
use crate::pipeline::EventBatch;
use crate::queue::dead_letter::{panic_text, DeadLetter};
use crate::sourcemap::frame::{apply_sourcemaps, FrameAccess, MapSource, Mapped};
use crate::sourcemap::RumSettings;
use crate::telemetry::{fail, Telemetry};
use crossbeam_channel::Sender;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

/// Starts the appliers with the RUM settings and the server's source-map
/// store (if source mapping is on).
pub fn start(w: &mut Wiring<'_>, name: &'static str, sizing: Stage) -> Result<(), StartError> {
    let settings = RumSettings::from_config(w.cfg)
        .map_err(|e| StartError::Config(format!("apm-server.rum pattern: {e}")))?;
    let source = w
        .resources
        .sourcemaps
        .clone()
        .map(|s| s as Arc<dyn MapSource + Send + Sync>);
    let rum = Arc::new(RumProcessor::new(settings, source));
    let next = w.next_one()?;
    let telemetry = Arc::clone(w.telemetry);
    let hook = w.resources.hooks.before_sourcemap.clone();
    let burial = Arc::new(Burial {
        dead_letter: Arc::clone(&w.dead_letter),
        ctx: w.resources.encode_ctx.clone(),
    });
    let inbox = w.spawn(name, sizing, None, move |_| {
        SourcemapApplier::new(
            next.clone(),
            Arc::clone(&telemetry),
            Arc::clone(&rum),
            Arc::clone(&burial),
        )
        .with_hook(hook.clone())
    })?;
    w.set_next(vec![inbox]);
    Ok(())
}

impl FrameAccess for Frame {
    fn abs_path(&self) -> &str {
        Frame::abs_path(self)
    }
    fn filename(&self) -> &str {
        Frame::filename(self)
    }
    fn lineno(&self) -> Option<i64> {
        Frame::lineno(self)
    }
    fn colno(&self) -> Option<i64> {
        Frame::colno(self)
    }
    fn library_frame(&self) -> bool {
        Frame::library_frame(self)
    }
    fn mark_library_frame(&mut self, is_library: bool) {
        Frame::mark_library_frame(self, is_library)
    }
    fn set_exclude_from_grouping(&mut self, v: bool) {
        Frame::set_exclude_from_grouping(self, v)
    }
    fn set_sourcemap_error(&mut self, e: String) {
        Frame::set_sourcemap_error(self, e)
    }
    fn apply_mapping(&mut self, m: Mapped) {
        self.apply_sourcemap(
            m.filename,
            m.abs_path,
            m.lineno,
            m.colno,
            m.function,
            m.context_line,
            m.pre_context,
            m.post_context,
        )
    }
}

/// The RUM frame processors with their settings and map source.
pub struct RumProcessor {
    settings: RumSettings,
    /// `Some` iff source mapping is active.
    source: Option<Arc<dyn MapSource + Send + Sync>>,
}

impl RumProcessor {
    /// With an explicit map source (`None` = source mapping off).
    pub fn new(settings: RumSettings, source: Option<Arc<dyn MapSource + Send + Sync>>) -> Self {
        let source = source.filter(|_| settings.source_mapping);
        RumProcessor { settings, source }
    }

    /// Processes the events of one RUM batch in place.
    pub fn process(&self, events: &mut [Event]) {
        let deadline = Instant::now() + self.settings.timeout;
        for ev in events {
            let is_error = match ev.kind() {
                "span" => false,
                "error" => true,
                _ => continue,
            };
            let skip_flags = is_error && ev.has_span_part();
            let service = ev.service_name().to_owned();
            let version = ev.service_version().to_owned();
            for st in ev.stacktraces_mut() {
                if let Some(src) = &self.source {
                    apply_sourcemaps(
                        st.as_mut_slice(),
                        &service,
                        &version,
                        src.as_ref(),
                        deadline,
                    );
                }
                if !skip_flags {
                    self.settings.patterns.mark_library(st.as_mut_slice());
                    self.settings.patterns.mark_exclude(st.as_mut_slice());
                }
            }
            if is_error {
                if self.source.is_some() {
                    ev.update_culprit();
                }
                ev.update_grouping_key();
            }
        }
    }
}

/// Where poison events go, and how they are encoded for it.
pub struct Burial {
    pub dead_letter: Arc<DeadLetter>,
    pub ctx: EncodeContext,
}

pub struct SourcemapApplier {
    hook: Option<EventsHook>,
    burial: Arc<Burial>,
    next: Sender<EventBatch>,
    telemetry: Arc<Telemetry>,
    rum: Arc<RumProcessor>,
}

impl SourcemapApplier {
    pub fn new(
        next: Sender<EventBatch>,
        telemetry: Arc<Telemetry>,
        rum: Arc<RumProcessor>,
        burial: Arc<Burial>,
    ) -> Self {
        SourcemapApplier {
            hook: None,
            burial,
            next,
            telemetry,
            rum,
        }
    }
}

impl SourcemapApplier {
    /// Test seam: runs on each batch before it is processed.
    pub fn with_hook(mut self, hook: Option<EventsHook>) -> Self {
        self.hook = hook;
        self
    }

    /// The hook and the RUM processors on `events`, a panic caught.
    fn process(&self, events: &mut [Event], rum: bool) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| {
            if let Some(hook) = &self.hook {
                hook(events);
            }
            if rum {
                self.rum.process(events);
            }
        }))
        .map_err(|p| panic_text(&*p))
    }

    /// Processes the events of a batch that panicked one at a time, from
    /// their state before the batch (`before` restores those with frames);
    /// buries those that panic alone too.
    fn one_by_one(&self, eb: &mut EventBatch, before: Vec<(usize, Event)>, rum: bool) {
        for (i, ev) in before {
            if let Some(slot) = eb.events.get_mut(i) {
                *slot = ev;
            }
        }
        let events = std::mem::take(&mut eb.events);
        let mut kept = Vec::with_capacity(events.len());
        for mut ev in events {
            let pristine = (rum && ev.has_frames()).then(|| ev.clone());
            match self.process(std::slice::from_mut(&mut ev), rum) {
                Ok(()) => kept.push(ev),
                Err(p) => self.bury(pristine.unwrap_or(ev), &p, eb.ticket.is_some()),
            }
        }
        eb.events = kept;
    }

    /// Writes a poison event to the dead-letter file and counts it. With
    /// the disk queue the batch is not answered yet (`open`): the event is
    /// counted accepted now, as it is kept in the dead-letter file.
    fn bury(&self, ev: Event, panic: &str, open: bool) {
        if open {
            self.telemetry.events_accepted.inc();
        }
        let reason = format!("panic: {panic}");
        let b = &self.burial;
        b.dead_letter
            .bury("sourcemap", &reason, &ev, &b.ctx, &self.telemetry);
    }
}

/// The events with stack frames, by position, as they are before processing.
fn frames_before(events: &[Event]) -> Vec<(usize, Event)> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.has_frames())
        .map(|(i, e)| (i, e.clone()))
        .collect()
}

impl Actor for SourcemapApplier {
    type Msg = EventBatch;

    fn handle(&mut self, mut eb: EventBatch) {
        let rum = eb.req.base.rum;
        // Source mapping rewrites stack frames in place (culprit and grouping
        // key are recomputed from them): keep the events with frames as they
        // were, in case the batch panics half-way.
        let before = if rum {
            frames_before(&eb.events)
        } else {
            Vec::new()
        };
        if let Err(p) = self.process(&mut eb.events, rum) {
            tracing::warn!(panic = %p, events = eb.events.len(), "processing a batch panicked; trying its events one by one");
            self.one_by_one(&mut eb, before, rum);
        }
        if let Err(e) = self.next.send(eb) {
            self.telemetry
                .fail(fail::SHUTDOWN, e.into_inner().events.len());
        }
    }
}
