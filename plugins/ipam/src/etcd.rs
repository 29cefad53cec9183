//! The etcd store: the [`Kv`] interface on etcd's v3 API, through a
//! current-thread tokio runtime. Every request is bounded by the configured
//! request timeout; failing it, or any transport error, is error 11.

use crate::kv::{Cmp, Entry, Kv, Read, ReadResult, Write};
use crate::store::EtcdConf;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};
use manifold_common::{CniError, CniResult, ErrorCode};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;
use tokio::runtime::Runtime;

/// A connection to an etcd cluster.
pub struct EtcdKv {
    rt: Runtime,
    client: Client,
    timeout: Duration,
    endpoints: String,
}

fn config_err(msg: String) -> CniError {
    CniError::config(msg)
}

fn read_pem(what: &str, path: &str) -> CniResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| config_err(format!("etcd tls {what} {path:?}: {e}")))
}

fn tls_options(conf: &EtcdConf) -> CniResult<Option<TlsOptions>> {
    let Some(tls) = &conf.tls else {
        return Ok(None);
    };
    let mut o = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        o = o.ca_certificate(Certificate::from_pem(read_pem("ca", ca)?));
    }
    match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => {
            o = o.identity(Identity::from_pem(
                read_pem("cert", c)?,
                read_pem("key", k)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(config_err(
                "etcd tls needs both \"cert\" and \"key\" for a client certificate, or neither"
                    .into(),
            ))
        }
    }
    Ok(Some(o))
}

impl EtcdKv {
    /// Connects (lazily: an unreachable cluster shows at the first request).
    pub fn connect(conf: &EtcdConf) -> CniResult<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CniError::new(ErrorCode::Io, format!("start etcd client runtime: {e}")))?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(conf.dial_timeout)
            .with_timeout(conf.request_timeout);
        if let Some(tls) = tls_options(conf)? {
            opts = opts.with_tls(tls);
        }
        if let Some((user, password)) = &conf.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        let endpoints = conf.endpoints.join(",");
        let timeout = conf.request_timeout;
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    conf.dial_timeout + timeout,
                    Client::connect(&conf.endpoints, Some(opts)),
                )
                .await
            })
            .map_err(|_| unreachable_err(&endpoints, "connect", timeout))?
            .map_err(|e| map_err(&endpoints, "connect", e))?;
        Ok(EtcdKv {
            rt,
            client,
            timeout,
            endpoints,
        })
    }

    /// Runs one request with the request timeout: `None` when it ran out.
    fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Option<Result<T, etcd_client::Error>> {
        let t = self.timeout;
        // The timer must be created inside the runtime.
        self.rt
            .block_on(async { tokio::time::timeout(t, f).await })
            .ok()
    }

    fn run<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> CniResult<T> {
        match self.bounded(f) {
            Some(r) => r.map_err(|e| map_err(&self.endpoints, what, e)),
            None => Err(unreachable_err(&self.endpoints, what, self.timeout)),
        }
    }
}

fn unreachable_err(endpoints: &str, what: &str, t: Duration) -> CniError {
    CniError::new(
        ErrorCode::TryAgainLater,
        format!("etcd {endpoints}: {what}: no answer within {t:?} (requestTimeout)"),
    )
}

fn map_err(endpoints: &str, what: &str, e: etcd_client::Error) -> CniError {
    let code = match e {
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
            ErrorCode::InvalidConfig
        }
        _ => ErrorCode::TryAgainLater,
    };
    CniError::new(code, format!("etcd {endpoints}: {what}: {e}"))
}

fn entry(kv: &etcd_client::KeyValue) -> CniResult<Entry> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let value = if kv.value().is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(kv.value()).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                format!("etcd key {key:?} does not hold JSON: {e}"),
            )
        })?
    };
    Ok(Entry {
        key,
        value,
        create_rev: kv.create_revision(),
        mod_rev: kv.mod_revision(),
        lease: kv.lease(),
    })
}

fn read_op(r: &Read) -> TxnOp {
    match r {
        Read::Get(k) => TxnOp::get(k.as_str(), None),
        Read::Range {
            start,
            end,
            limit,
            keys_only,
        } => {
            let mut o = GetOptions::new()
                .with_range(end.as_str())
                .with_limit(*limit as i64);
            if *keys_only {
                o = o.with_keys_only();
            }
            TxnOp::get(start.as_str(), Some(o))
        }
        Read::Count { start, end } => TxnOp::get(
            start.as_str(),
            Some(GetOptions::new().with_range(end.as_str()).with_count_only()),
        ),
    }
}

/// True for etcd's "requested lease not found" (gRPC NOT_FOUND): a put under
/// a lease that expired (NOT_FOUND is gRPC code 5).
fn lease_gone(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() as i32 == 5 && s.message().contains("lease not found"))
}

/// The answers of a read-only transaction, one per read.
fn read_results(resp: &etcd_client::TxnResponse) -> CniResult<Vec<ReadResult>> {
    resp.op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => Ok(ReadResult {
                entries: g.kvs().iter().map(entry).collect::<CniResult<_>>()?,
                count: g.count() as u64,
            }),
            _ => Ok(ReadResult::default()),
        })
        .collect()
}

impl Kv for EtcdKv {
    fn read(&mut self, reads: Vec<Read>) -> CniResult<Vec<ReadResult>> {
        let ops: Vec<TxnOp> = reads.iter().map(read_op).collect();
        let mut kv = self.client.kv_client();
        let resp = self.run("read", kv.txn(Txn::new().and_then(ops)))?;
        read_results(&resp)
    }

    fn read_and_grant(&mut self, reads: Vec<Read>, ttl: u64) -> CniResult<(Vec<ReadResult>, i64)> {
        let ops: Vec<TxnOp> = reads.iter().map(read_op).collect();
        let (mut kv, mut lease) = (self.client.kv_client(), self.client.lease_client());
        // Both requests go out on the one HTTP/2 connection before either answer.
        let (read, grant) = self.run("read and grant lease", async {
            Ok(tokio::join!(
                kv.txn(Txn::new().and_then(ops)),
                lease.grant(ttl as i64, None)
            ))
        })?;
        let read = read.map_err(|e| map_err(&self.endpoints, "read", e))?;
        let grant = grant.map_err(|e| map_err(&self.endpoints, "grant lease", e))?;
        Ok((read_results(&read)?, grant.id()))
    }

    fn txn(&mut self, cmps: Vec<Cmp>, writes: Vec<Write>) -> CniResult<Option<i64>> {
        let cmps: Vec<Compare> = cmps
            .into_iter()
            .map(|c| match c {
                Cmp::Absent(k) => Compare::create_revision(k, CompareOp::Equal, 0),
                Cmp::ModRev(k, r) => Compare::mod_revision(k, CompareOp::Equal, r),
            })
            .collect();
        let ops: Vec<TxnOp> = writes
            .into_iter()
            .map(|w| match w {
                Write::Put { key, value, lease } => TxnOp::put(
                    key,
                    value.to_string(),
                    lease.map(|l| PutOptions::new().with_lease(l)),
                ),
                Write::Delete(k) => TxnOp::delete(k, None),
            })
            .collect();
        let mut kv = self.client.kv_client();
        let txn = Txn::new().when(cmps).and_then(ops);
        // A put under a lease that expired writes nothing, like a failed condition.
        let resp = self.run("transaction", async {
            match kv.txn(txn).await {
                Err(e) if lease_gone(&e) => Ok(None),
                r => r.map(Some),
            }
        })?;
        Ok(resp
            .filter(|r| r.succeeded())
            .map(|r| r.header().map_or(0, |h| h.revision())))
    }

    fn grant(&mut self, ttl: u64) -> CniResult<i64> {
        let mut lease = self.client.lease_client();
        let resp = self.run("grant lease", lease.grant(ttl as i64, None))?;
        Ok(resp.id())
    }

    fn finish(&mut self) -> CniResult<()> {
        Ok(())
    }
}
