//! The Redis connection of one indexer instance: connects lazily to its
//! current host (instances start on different hosts), sends a pipelined
//! batch, and after a failure drops the connection and moves to the next
//! host, so the retry goes elsewhere when several hosts are configured.
//! Blocking I/O with timeouts: it runs on the indexer's own OS thread.

use super::config::RedisSettings;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisResult};

pub struct Service {
    settings: RedisSettings,
    host: usize,
    conn: Option<redis::Connection>,
}

impl Service {
    pub fn new(settings: RedisSettings, instance: usize) -> Self {
        let host = instance % settings.hosts.len().max(1);
        Service {
            settings,
            host,
            conn: None,
        }
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// The host the next round trip goes to (for logs).
    pub fn host(&self) -> String {
        let (h, p) = &self.settings.hosts[self.host];
        format!("{h}:{p}")
    }

    fn connect(&self) -> RedisResult<redis::Connection> {
        let s = &self.settings;
        let (host, port) = s.hosts[self.host].clone();
        let addr = match &s.tls {
            None => ConnectionAddr::Tcp(host, port),
            Some(t) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: t.insecure,
                tls_params: None,
            },
        };
        let mut redis_info = RedisConnectionInfo::default().set_db(s.db);
        if !s.password.is_empty() {
            redis_info = redis_info.set_password(s.password.expose());
        }
        let info = addr.into_connection_info()?.set_redis_settings(redis_info);
        let client = match s.tls.as_ref().and_then(|t| t.root_pem.clone()) {
            Some(root) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root),
                },
            )?,
            None => redis::Client::open(info)?,
        };
        let conn = client.get_connection_with_timeout(s.timeout)?;
        conn.set_read_timeout(Some(s.timeout))?;
        conn.set_write_timeout(Some(s.timeout))?;
        Ok(conn)
    }

    /// Sends one pipeline; on failure the connection is dropped and the next host becomes current.
    pub fn send(&mut self, pipeline: &redis::Pipeline) -> RedisResult<()> {
        let result = match self.conn.as_mut() {
            Some(c) => pipeline.query::<()>(c),
            None => match self.connect() {
                Ok(mut c) => {
                    let r = pipeline.query::<()>(&mut c);
                    self.conn = Some(c);
                    r
                }
                Err(e) => Err(e),
            },
        };
        if result.is_err() {
            self.conn = None;
            self.host = (self.host + 1) % self.settings.hosts.len().max(1);
        }
        result
    }
}
