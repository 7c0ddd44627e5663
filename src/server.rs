//! Server assembly: builds the pipeline, the HTTP server and the optional
//! OTLP/gRPC listener from the configuration, runs them, and shuts them down
//! gracefully.
//!
//! Shutdown order (within `apm-server.shutdown_timeout`): stop accepting
//! connections and let in-flight requests (HTTP and gRPC) finish, close the pipeline intake,
//! drain every stage in order, flush and close the outputs. Whatever is not
//! delivered by the deadline (plus a short grace, see
//! [`crate::pipeline::Pipeline::shutdown`]) is logged with its count and
//! counted as rejected or failed, so the final `shutdown complete` line
//! satisfies the accounting identity.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::http::client_ip::TrustedProxies;
use crate::http::cors::Cors;
use crate::http::response::ExtraHeaders;
use crate::http::{self, AppState, ServerInfo};
use crate::model::EncodeContext;
use crate::output::{self, OutputError, OutputFactory};
use crate::pipeline::{self, Pipeline, PipelineHooks, Resources};
use crate::ratelimit::RateLimiter;
use crate::sourcemap::{RumSettings, Store};
use crate::telemetry::Telemetry;
use actix_web::{middleware, App, HttpServer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::version::COMPAT_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot start threads: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Pipeline(#[from] pipeline::StartError),
    #[error(transparent)]
    Grpc(#[from] crate::grpc::GrpcStartError),
}

/// Builds a server; tests swap the output or add pipeline hooks.
pub struct ServerBuilder {
    cfg: Config,
    output: Option<Arc<dyn OutputFactory>>,
    hooks: PipelineHooks,
}

impl ServerBuilder {
    pub fn new(cfg: Config) -> Self {
        ServerBuilder {
            cfg,
            output: None,
            hooks: PipelineHooks::default(),
        }
    }

    /// Uses `output` instead of the configured one.
    pub fn output(mut self, output: Arc<dyn OutputFactory>) -> Self {
        self.output = Some(output);
        self
    }

    pub fn hooks(mut self, hooks: PipelineHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Starts the pipeline and the HTTP server on their own threads; returns once listening.
    pub fn spawn(self) -> Result<RunningServer, StartError> {
        let cfg = Arc::new(self.cfg);
        let telemetry = Arc::new(Telemetry::new());
        let output = match self.output {
            Some(o) => o,
            None => output::from_config(&cfg)?,
        };
        let encode_ctx = EncodeContext {
            observer_hostname: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            observer_version: COMPAT_VERSION.into(),
            namespace: cfg.apm_server.data_streams.namespace.clone(),
        };
        let rl = &cfg.apm_server.auth.anonymous.rate_limit;
        let limiter = Arc::new(
            RateLimiter::new(rl.ip_limit, rl.event_limit, cfg.pipeline.rate.instances)
                .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let rum = RumSettings::from_config(&cfg)
            .map_err(|e| StartError::Config(format!("apm-server.rum pattern: {e}")))?;
        let sourcemaps = match rum.source_mapping {
            true => Some(Arc::new(
                Store::start(&cfg, Some(&telemetry.registry))
                    .map_err(|e| StartError::Config(format!("source mapping: {e}")))?,
            )),
            false => None,
        };
        let pipeline = Arc::new(Pipeline::start(
            &cfg,
            Arc::clone(&telemetry),
            Resources {
                output: Arc::clone(&output),
                encode_ctx,
                limiter: Arc::clone(&limiter),
                sourcemaps: sourcemaps.clone(),
                hooks: self.hooks,
            },
        )?);
        let max_decoders = match cfg.apm_server.max_concurrent_decoders {
            0 => 2048,
            n => n,
        };
        if cfg.anonymous_enabled() && cfg.apm_server.auth.anonymous.trusted_proxies.is_empty() {
            tracing::warn!("anonymous access is on and apm-server.auth.anonymous.trusted_proxies is empty: Forwarded/X-Real-Ip/X-Forwarded-For are trusted from any client, so a client can choose its rate-limit bucket");
        }
        if cfg.auth_configured() && cfg.tls().is_none() {
            tracing::warn!("secret token or API keys are configured but TLS is off: credentials travel in clear text");
        }
        let ready_output = Arc::clone(&output);
        let kibana = crate::agentcfg::kibana::KibanaFetcher::from_config(&cfg)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let agent_configs = crate::agentcfg::AgentConfigs::with_fallback(kibana);
        let es_source = crate::agentcfg::es::EsSource::from_config(&cfg)
            .map_err(|e| StartError::Config(e.to_string()))?;
        crate::agentcfg::es::spawn_refresher(
            es_source,
            &agent_configs,
            crate::agentcfg::es::RefreshMetrics::new(&telemetry.registry),
        )?;
        let metrics = match cfg.monitoring.metrics_host.trim() {
            "" => None,
            host => Some(
                http::metrics::start(host, Arc::clone(&telemetry), Arc::clone(&pipeline)).map_err(
                    |source| StartError::Bind {
                        addr: host.to_string(),
                        source,
                    },
                )?,
            ),
        };
        let http_metrics = http::limits::HttpMetrics::new(&telemetry.registry)
            .map_err(|e| StartError::Config(e.to_string()))?;
        crate::http::sourcemap_upload::warn_if_anonymous(&cfg);
        let state = Arc::new(AppState {
            telemetry: Arc::clone(&telemetry),
            intake: pipeline.intake.clone(),
            budget: Arc::clone(&pipeline.budget),
            authenticator: Authenticator::try_new(&cfg)
                .map_err(|e| StartError::Config(e.to_string()))?,
            decoders: Arc::new(tokio::sync::Semaphore::new(max_decoders)),
            uploads: tokio::sync::Semaphore::new(cfg.apm_server.sourcemap.max_concurrent_uploads),
            headers: ExtraHeaders::from_config(&cfg.apm_server.response_headers)
                .map_err(StartError::Config)?,
            rum_headers: ExtraHeaders::from_config(&cfg.apm_server.rum.response_headers)
                .map_err(StartError::Config)?,
            info: ServerInfo {
                version: COMPAT_VERSION.into(),
                build_date: env!("APM_RS_BUILD_DATE").into(),
                build_sha: env!("APM_RS_BUILD_SHA").into(),
            },
            ready: Arc::new(move || ready_output.ready()),
            limiter,
            sourcemaps,
            cors: Cors::new(
                &cfg.apm_server.rum.allow_origins,
                &cfg.apm_server.rum.allow_headers,
            ),
            trusted: TrustedProxies::from_config(&cfg.apm_server.auth.anonymous)
                .map_err(|e| StartError::Config(e.to_string()))?,
            cfg: Arc::clone(&cfg),
            agent_configs: Arc::clone(&agent_configs),
            http_metrics: http_metrics.clone(),
        });

        let tls = match cfg.tls() {
            Some(t) => Some(
                crate::http::tls::server_config(t)
                    .map_err(|e| StartError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let grpc = match cfg.grpc_listen_addr() {
            Some(a) => Some(crate::grpc::listener::start(
                Arc::clone(&state),
                &a,
                tls.clone(),
            )?),
            None => None,
        };
        let addr = cfg.listen_addr();
        let (tx, rx) = std::sync::mpsc::channel();
        let http_cfg = Arc::clone(&cfg);
        let conn_hooks = http::limits::ConnHooks {
            metrics: http_metrics,
            idle_limit: cfg.apm_server.idle_timeout.get() + cfg.apm_server.read_timeout.get(),
            write_limit: Some(cfg.apm_server.write_timeout.get()).filter(|w| !w.is_zero()),
        };
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                sys.block_on(async move {
                    let a = &http_cfg.apm_server;
                    let st = Arc::clone(&state);
                    let mut server = HttpServer::new(move || {
                        App::new()
                            .wrap(middleware::from_fn(http::limits::connection_limits))
                            .wrap(middleware::from_fn(http::observe))
                            .configure(http::configure(Arc::clone(&st)))
                    })
                    .on_connect(move |io, ext| conn_hooks.on_connect(io, ext))
                    .disable_signals()
                    .keep_alive(a.idle_timeout.get())
                    .client_request_timeout(a.read_timeout.get())
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .h2_initial_window_size(a.http2.initial_window_size)
                    .h2_initial_connection_window_size(a.http2.initial_connection_window_size)
                    .shutdown_timeout(a.shutdown_timeout.get().as_secs().max(1));
                    // actix's limit is per worker: split the total so that
                    // the sum never exceeds it (0 = actix's 25,000 per worker)
                    if a.max_connections > 0 {
                        let workers = std::thread::available_parallelism()
                            .map(|n| n.get())
                            .unwrap_or(1)
                            .min(a.max_connections);
                        server = server
                            .workers(workers)
                            .max_connections(a.max_connections / workers);
                    }
                    let bound = match &tls {
                        Some(t) => server.bind_rustls_0_23(&addr, t.clone()),
                        None => server.bind(&addr),
                    };
                    let server = match bound {
                        Ok(s) => s,
                        Err(source) => {
                            let _ = tx.send(Err(StartError::Bind { addr, source }));
                            return;
                        }
                    };
                    let addrs = server.addrs();
                    let running = server.run();
                    let _ = tx.send(Ok((addrs, running.handle())));
                    if let Err(e) = running.await {
                        tracing::error!(error = %e, "http server stopped with an error");
                    }
                });
            })?;
        let started = rx
            .recv()
            .map_err(|_| StartError::Config("http thread exited early".into()))
            .and_then(|r| r);
        let (addrs, handle) = match started {
            Ok(s) => s,
            Err(e) => {
                if let Some(g) = grpc {
                    g.stop();
                }
                return Err(e);
            }
        };
        let addr = addrs
            .first()
            .copied()
            .ok_or_else(|| StartError::Config("no listen address".into()))?;
        tracing::info!(%addr, "apm-rs listening");
        if let Some(g) = &grpc {
            tracing::info!(addr = %g.addr, "apm-rs listening for OTLP/gRPC");
        }
        Ok(RunningServer {
            addr,
            grpc_addr: grpc.as_ref().map(|g| g.addr),
            grpc,
            telemetry,
            pipeline,
            handle,
            thread: Some(thread),
            shutdown_timeout: cfg.apm_server.shutdown_timeout.get(),
            metrics_addr: metrics.as_ref().map(|m| m.addr),
            metrics,
            agent_configs,
        })
    }
}

/// A started server.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Address of the OTLP/gRPC listener (`apm-server.otlp.grpc.host`), if on.
    pub grpc_addr: Option<SocketAddr>,
    grpc: Option<crate::grpc::GrpcServer>,
    pub telemetry: Arc<Telemetry>,
    pub pipeline: Arc<Pipeline>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
    shutdown_timeout: Duration,
    /// Address of the `/metrics` listener (`monitoring.metrics_host`), if on.
    pub metrics_addr: Option<SocketAddr>,
    metrics: Option<http::metrics::MetricsServer>,
    agent_configs: Arc<crate::agentcfg::AgentConfigs>,
}

impl RunningServer {
    /// Graceful shutdown; blocks. Returns true when everything drained in time.
    pub fn shutdown(mut self) -> bool {
        let deadline = Instant::now() + self.shutdown_timeout;
        tracing::info!("shutting down: finishing in-flight requests");
        if let Some(g) = &self.grpc {
            g.begin_stop();
        }
        let stop = self.handle.stop(true);
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(stop),
            Err(e) => tracing::error!(error = %e, "cannot stop the http server gracefully"),
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(g) = self.grpc.take() {
            g.stop();
        }
        self.agent_configs.stop();
        tracing::info!("shutting down: draining the pipeline");
        let ok = self.pipeline.shutdown(deadline);
        if let Some(m) = self.metrics.take() {
            m.stop();
        }
        let acc = self.telemetry.accounting();
        tracing::info!(
            received = acc.received,
            accepted = acc.accepted,
            rejected = acc.rejected,
            indexed = acc.indexed,
            failed = acc.failed,
            discarded = acc.discarded,
            aggregated = acc.produced,
            "shutdown complete"
        );
        ok
    }
}
