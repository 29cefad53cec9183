//! The verbs: ADD plans every attachment, delegates them in order and rolls
//! all back on any failure; DEL, CHECK and GC work from the cache; STATUS
//! asks the default network and the readiness file.

use crate::cache::{Cache, Lock, State};
use crate::config::ManifoldConf;
use crate::default_route;
use crate::delegate::Runner;
use crate::link_group::{self, DeferredLinks};
use crate::nad::Sources;
use crate::names;
use crate::plan::{self, Attachment, Inputs, PodRef};
use crate::report;
use crate::selection::NETWORK_STATUS_ANNOTATION;
use manifold_common::config::Attachment as ValidAttachment;
use manifold_common::dispatch::{Call, Plugin};
use manifold_common::env::CniEnv;
use manifold_common::{CniError, CniResult, ErrorCode, NetworkResult};
use manifold_kube::KubeClient;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// The `manifold` meta-plugin.
pub struct Manifold;

/// Everything a verb needs from the config and environment.
struct Ctx<'a> {
    call: &'a Call,
    conf: ManifoldConf,
    env: CniEnv,
    cache: Cache,
}

impl<'a> Ctx<'a> {
    fn new(call: &'a Call) -> CniResult<Self> {
        let conf = ManifoldConf::load(&call.conf)?;
        let env = CniEnv {
            path: conf.delegate_path(&call.env.path),
            ..call.env.clone()
        };
        let cache = Cache::new(&conf.cni_dir);
        Ok(Ctx {
            call,
            conf,
            env,
            cache,
        })
    }

    fn runner(&self) -> Runner<'_> {
        Runner { env: &self.env }
    }

    fn api(&self) -> CniResult<Option<KubeClient>> {
        self.conf
            .kubeconfig
            .as_deref()
            .map(KubeClient::from_kubeconfig)
            .transpose()
    }

    fn readiness(&self, code: ErrorCode) -> CniResult<()> {
        match &self.conf.readiness_indicator_file {
            Some(f) if !f.exists() => Err(CniError::new(
                code,
                format!(
                    "readiness indicator file {} does not exist: the default network is not ready",
                    f.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    fn pod(&self) -> CniResult<Option<PodRef>> {
        let args = &self.call.env.args;
        let (Some(namespace), Some(name)) =
            (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME"))
        else {
            return Ok(None);
        };
        let bad = |e: CniError| CniError::env(format!("CNI_ARGS: {}", e.msg));
        names::check_namespace(namespace).map_err(bad)?;
        names::check_nad_name(name).map_err(bad)?;
        Ok(Some(PodRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }))
    }

    /// The pod's annotations from the API. A pod whose UID is not the one the
    /// runtime names (`K8S_POD_UID`) is a newer pod of the same name: its
    /// annotations are not this sandbox's (code 11, as the runtime will retry or
    /// tear the sandbox down).
    fn pod_from_api(&self, api: &KubeClient, p: &PodRef) -> CniResult<BTreeMap<String, String>> {
        let pod = api.pod(&p.namespace, &p.name)?;
        if let Some(uid) = self.call.env.args.get("K8S_POD_UID") {
            if !uid.is_empty() && uid != pod.uid {
                return Err(CniError::new(
                    ErrorCode::TryAgainLater,
                    format!(
                        "pod {}/{} has UID {:?} in the API, the runtime says {uid:?}: not the same pod",
                        p.namespace, p.name, pod.uid
                    ),
                ));
            }
        }
        Ok(pod.annotations)
    }

    /// Deletes attachments (concurrently, or in reverse order when
    /// `sequential`); returns those whose DEL failed (in their original
    /// order) and the first error. The links of Manifold's own delegates are
    /// deleted together, as soon as the last of those delegates is done (see
    /// [`DeferredLinks`]); if that fails, their attachments count as failed.
    fn delete_all(
        &self,
        atts: &[Attachment],
        sequential: bool,
    ) -> (Vec<Attachment>, Option<CniError>) {
        let runner = self.runner();
        let deferred = DeferredLinks::new(self.env.netns.as_deref(), atts);
        let del = |a: &Attachment| {
            let outcome = runner.del(a, &deferred.env_for(a));
            deferred.finished(a);
            outcome
        };
        let outcomes: Vec<CniResult<()>> = if sequential {
            let mut out: Vec<_> = atts.iter().rev().map(del).collect();
            out.reverse();
            out
        } else {
            concurrently(atts, del)
        };
        let links_left = deferred.into_error();
        let mut failed = Vec::new();
        let mut first = None;
        for (att, outcome) in atts.iter().zip(outcomes) {
            if outcome.is_err() || (links_left.is_some() && link_group::defers(att)) {
                failed.push(att.clone());
            }
            if let Err(e) = outcome {
                first.get_or_insert(
                    e.context(format!("network {:?} ({})", att.network, att.ifname)),
                );
            }
        }
        if let Some(e) = links_left {
            match first {
                Some(_) => tracing::error!(error = %e, "DEL: deferred links not deleted"),
                None => first = Some(e),
            }
        }
        (failed, first)
    }

    /// ADD of every attachment: concurrently, or in order stopping at the
    /// first failure. Returns the attachments that ran (with their results)
    /// and the first error, in attachment order.
    fn add_all(&self, atts: &mut Vec<Attachment>) -> Option<CniError> {
        let runner = self.runner();
        let outcomes: Vec<CniResult<Value>> = if self.conf.parallel_delegates {
            concurrently(atts, |a| runner.add(a))
        } else {
            let mut out = Vec::new();
            for a in atts.iter() {
                let r = runner.add(a);
                let failed = r.is_err();
                out.push(r);
                if failed {
                    break;
                }
            }
            // Those after a failure never ran: nothing to undo.
            atts.truncate(out.len());
            out
        };
        let mut first = None;
        for (att, outcome) in atts.iter_mut().zip(outcomes) {
            match outcome {
                Ok(r) => att.result = Some(r),
                Err(e) => {
                    first.get_or_insert(
                        e.context(format!("network {:?} ({})", att.network, att.ifname)),
                    );
                }
            }
        }
        first
    }

    /// Deletes what `state` holds and forgets it, or keeps what could not be deleted.
    fn forget(&self, lock: Lock, mut state: State, sequential: bool) -> CniResult<()> {
        let (failed, err) = self.delete_all(&state.attachments, sequential);
        match err {
            None => self.cache.remove(lock, &state.container_id),
            Some(e) => {
                state.attachments = failed;
                self.cache.store(&lock, &state)?;
                Err(e)
            }
        }
    }

    fn add(&self) -> CniResult<NetworkResult> {
        self.readiness(ErrorCode::TryAgainLater)?;
        let netns = self
            .call
            .env
            .netns
            .as_ref()
            .expect("ADD has a netns")
            .display()
            .to_string();
        let pod = self.pod()?;
        let api = self.api()?;
        let annotations = match (&self.call.conf.runtime_config.pod_annotations, &api, &pod) {
            (Some(a), _, _) => a.clone(),
            (None, Some(api), Some(p)) => self.pod_from_api(api, p)?,
            _ => BTreeMap::new(),
        };
        let sources = Sources {
            conf_dir: &self.conf.conf_dir,
            api: api.as_ref(),
        };
        let runtime_config = self
            .call
            .conf
            .raw
            .get("runtimeConfig")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(Map::new);
        let planned = plan::build(&Inputs {
            conf: &self.conf,
            sources: &sources,
            pod: pod.as_ref(),
            annotations: &annotations,
            ifname: &self.call.env.ifname,
            pod_uid: self.call.env.args.get("K8S_POD_UID"),
            runtime_config,
        })?;

        let id = &self.call.env.container_id;
        let lock = self.cache.lock(id)?;
        if let Some(stale) = self.cache.load(id)? {
            tracing::warn!(container = %id, "ADD: removing the attachments of an earlier ADD first");
            let (failed, err) = self.delete_all(&stale.attachments, !self.conf.parallel_delegates);
            if let Some(e) = err {
                self.cache.store(
                    &lock,
                    &State {
                        attachments: failed,
                        ..stale
                    },
                )?;
                return Err(e.context("remove the earlier ADD's attachments"));
            }
        }
        let mut state = State {
            container_id: id.clone(),
            netns: netns.clone(),
            pod: pod.clone(),
            attachments: Vec::new(),
            network_status: None,
        };
        // Recorded before any delegate runs: a call killed mid-way is still
        // cleaned up by DEL (a DEL of an attachment never made is harmless).
        state.attachments = planned;
        self.cache.store(&lock, &state)?;
        if let Some(e) = self.add_all(&mut state.attachments) {
            return Err(self.rollback(lock, state, e));
        }
        if let Err(e) = default_route::apply(std::path::Path::new(&netns), &mut state.attachments) {
            return Err(self.rollback(lock, state, e));
        }
        let merged = report::merge(&state.attachments);
        let status = report::network_status(&state.attachments, &netns);
        let (merged, status) = match (merged, status) {
            (Ok(m), Ok(s)) => (m, s),
            (Err(e), _) | (_, Err(e)) => return Err(self.rollback(lock, state, e)),
        };
        state.network_status = Some(status.clone());
        self.cache.store(&lock, &state)?;
        if let (Some(api), Some(p)) = (&api, &pod) {
            let value = serde_json::to_string_pretty(&status).expect("status serializes");
            let ann = BTreeMap::from([(NETWORK_STATUS_ANNOTATION.to_string(), value)]);
            if let Err(e) = api.patch_pod_annotations(&p.namespace, &p.name, &ann) {
                tracing::warn!(pod = %format!("{}/{}", p.namespace, p.name), error = %e, "could not patch network-status");
            }
        }
        Ok(merged)
    }

    /// Undoes a failed ADD: every attachment made so far, the failed one
    /// included, one after another in reverse order.
    fn rollback(&self, lock: Lock, state: State, cause: CniError) -> CniError {
        tracing::warn!(error = %cause, "ADD failed: rolling back");
        if let Err(e) = self.forget(lock, state, true) {
            tracing::error!(error = %e, "rollback incomplete; a later DEL retries it");
            return cause.with_details(format!("rollback incomplete: {e}"));
        }
        cause
    }

    fn del(&self) -> CniResult<()> {
        let id = &self.call.env.container_id;
        let lock = self.cache.lock(id)?;
        match self.cache.load(id)? {
            Some(state) => self.forget(lock, state, !self.conf.parallel_delegates),
            None => {
                tracing::debug!(container = %id, "DEL: nothing cached");
                self.cache.remove(lock, id)
            }
        }
    }

    fn check(&self) -> CniResult<()> {
        let id = &self.call.env.container_id;
        let lock = self.cache.lock(id)?;
        let Some(state) = self.cache.load(id)? else {
            self.cache.remove(lock, id)?;
            return Err(CniError::new(
                ErrorCode::CheckFailed,
                format!("no attachment recorded for container {id:?}"),
            ));
        };
        let runner = self.runner();
        for att in &state.attachments {
            runner
                .check(att)
                .map_err(|e| e.context(format!("network {:?} ({})", att.network, att.ifname)))?;
        }
        Ok(())
    }

    fn gc(&self) -> CniResult<()> {
        let valid = self.call.conf.valid_attachments.as_ref().ok_or_else(|| {
            CniError::config("GC needs \"cni.dev/valid-attachments\" in the config")
        })?;
        let live: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        let mut first_err = None;
        let mut networks: BTreeMap<String, (Value, Vec<ValidAttachment>)> = BTreeMap::new();
        for id in self.cache.containers()? {
            let lock = self.cache.lock(&id)?;
            let Some(state) = self.cache.load(&id)? else {
                self.cache.remove(lock, &id)?;
                continue;
            };
            if live.contains(id.as_str()) {
                for att in &state.attachments {
                    let name = att
                        .config
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let entry = networks
                        .entry(name.to_string())
                        .or_insert_with(|| (att.config.clone(), Vec::new()));
                    entry.1.push(ValidAttachment {
                        container_id: id.clone(),
                        ifname: att.ifname.clone(),
                    });
                }
                continue;
            }
            tracing::info!(container = %id, "GC: removing stale attachments");
            let mut env = self.env.clone();
            env.container_id = id.clone();
            env.netns = Some(PathBuf::from(&state.netns)).filter(|p| p.exists());
            let ctx = Ctx {
                call: self.call,
                conf: self.conf.clone(),
                env,
                cache: Cache::new(&self.conf.cni_dir),
            };
            if let Err(e) = ctx.forget(lock, state, !self.conf.parallel_delegates) {
                first_err.get_or_insert(e);
            }
        }
        let sources = Sources {
            conf_dir: &self.conf.conf_dir,
            api: None,
        };
        if let Ok(default) = plan::default_network(&self.conf, &sources, &BTreeMap::new()) {
            networks
                .entry(default.list.name.clone())
                .or_insert_with(|| (default.config, Vec::new()));
        }
        let runner = self.runner();
        for (name, (config, valid)) in &networks {
            if let Err(e) = runner.gc(config, valid) {
                first_err.get_or_insert(e.context(format!("GC of network {name:?}")));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn status(&self) -> CniResult<()> {
        self.readiness(ErrorCode::PluginNotAvailable)?;
        let api = self.api()?;
        let sources = Sources {
            conf_dir: &self.conf.conf_dir,
            api: api.as_ref(),
        };
        let default = plan::default_network(&self.conf, &sources, &BTreeMap::new())
            .map_err(|e| CniError::new(ErrorCode::PluginNotAvailable, e.msg))?;
        self.runner()
            .status(&default.config)
            .map_err(|e| e.context(format!("default network {:?}", default.key)))
    }
}

impl Plugin for Manifold {
    fn add(&self, call: &Call) -> CniResult<NetworkResult> {
        Ctx::new(call)?.add()
    }

    fn del(&self, call: &Call) -> CniResult<()> {
        Ctx::new(call)?.del()
    }

    fn check(&self, call: &Call) -> CniResult<()> {
        Ctx::new(call)?.check()
    }

    fn gc(&self, call: &Call) -> CniResult<()> {
        Ctx::new(call)?.gc()
    }

    fn status(&self, call: &Call) -> CniResult<()> {
        Ctx::new(call)?.status()
    }
}

/// Runs `f` on every attachment at once, one thread each (a delegate mostly
/// waits on the kernel, a store or its own start-up), results in order.
fn concurrently<T: Send>(
    atts: &[Attachment],
    f: impl Fn(&Attachment) -> CniResult<T> + Sync,
) -> Vec<CniResult<T>> {
    std::thread::scope(|s| {
        let running: Vec<_> = atts.iter().map(|a| s.spawn(|| f(a))).collect();
        running
            .into_iter()
            .map(|t| t.join().expect("a delegate thread panicked"))
            .collect()
    })
}
