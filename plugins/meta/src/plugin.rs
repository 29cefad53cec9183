//! The verbs: ADD plans every attachment, delegates them in order and rolls
//! all back on any failure; DEL, CHECK and GC work from the cache (DEL
//! rebuilds the plan when there is none); STATUS asks the default network and
//! the readiness file.

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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often ADD looks for `readinessindicatorfile` while it waits.
const READINESS_POLL: Duration = Duration::from_millis(100);

/// What network-status is set to when the pod's attachments go (as Multus: an empty list).
const NO_NETWORK_STATUS: &str = "[]";

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

    /// Waits up to `wait` (polling every [`READINESS_POLL`]) for
    /// `readinessindicatorfile`; error `code` if it is still missing then.
    fn readiness(&self, code: ErrorCode, wait: Duration) -> CniResult<()> {
        let Some(f) = &self.conf.readiness_indicator_file else {
            return Ok(());
        };
        let deadline = Instant::now() + wait;
        while !f.exists() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let waited = if wait.is_zero() {
                    String::new()
                } else {
                    format!(" after waiting {}s (readinessTimeout)", wait.as_secs_f64())
                };
                return Err(CniError::new(
                    code,
                    format!(
                        "readiness indicator file {} does not exist{waited}: the default network is not ready",
                        f.display()
                    ),
                ));
            }
            std::thread::sleep(left.min(READINESS_POLL));
        }
        Ok(())
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

    /// The runtime's runtimeConfig, for the default network.
    fn runtime_config(&self) -> Map<String, Value> {
        self.call
            .conf
            .raw
            .get("runtimeConfig")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }

    /// What the plan of this call is built from.
    fn inputs<'b>(
        &'b self,
        sources: &'b Sources<'b>,
        pod: Option<&'b PodRef>,
        annotations: &'b BTreeMap<String, String>,
    ) -> Inputs<'b> {
        Inputs {
            conf: &self.conf,
            sources,
            pod,
            annotations,
            ifname: &self.call.env.ifname,
            pod_uid: self.call.env.args.get("K8S_POD_UID"),
            runtime_config: self.runtime_config(),
        }
    }

    /// Deletes attachments (concurrently, or in reverse order when
    /// `sequential`); returns those whose DEL failed (in their original
    /// order) and the first error. The links of Manifold's own delegates are
    /// deleted together, at once where no DEL needs them, else as soon as the
    /// last of those delegates is done (see [`DeferredLinks`]); if that
    /// fails, their attachments count as failed.
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
        let outcomes: Vec<CniResult<()>> = std::thread::scope(|s| {
            // Links no DEL needs go at once, beside the delegates.
            s.spawn(|| deferred.delete_up_front());
            if sequential {
                let mut out: Vec<_> = atts.iter().rev().map(del).collect();
                out.reverse();
                out
            } else {
                concurrently(atts, del)
            }
        });
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
        self.readiness(ErrorCode::TryAgainLater, self.conf.readiness_timeout)?;
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
        let planned = plan::build(&self.inputs(&sources, pod.as_ref(), &annotations))?;

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
                tracing::warn!(pod = %pod_name(p), error = %e, "could not patch network-status");
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

    /// DEL: clears the pod's network-status (with an API, while the netns
    /// exists), then deletes what ADD cached or, with no cache, what the
    /// current config and annotations name.
    fn del(&self) -> CniResult<()> {
        let id = &self.call.env.container_id;
        let lock = self.cache.lock(id)?;
        let cached = self.cache.load(id)?;
        let netns_exists = self.env.netns.as_deref().is_some_and(Path::exists);
        let from_runtime = self.call.conf.runtime_config.pod_annotations.as_ref();
        let pod = self
            .pod()
            .inspect_err(|e| tracing::warn!(error = %e, "DEL: ignoring the pod"))
            .ok()
            .flatten();
        let api = pod.as_ref().and_then(|_| self.del_api());
        // The pod (its UID checked) is read only if something needs it.
        let need_pod = netns_exists || (cached.is_none() && from_runtime.is_none());
        let from_api = match (&api, &pod) {
            (Some(api), Some(p)) if need_pod => Some(self.pod_from_api(api, p).inspect_err(|e| {
                tracing::warn!(pod = %pod_name(p), error = %e, "DEL: cannot read the pod");
            })),
            _ => None,
        };
        if let (true, Some(api), Some(p), Some(Ok(_))) = (netns_exists, &api, &pod, &from_api) {
            clear_network_status(api, p);
        }
        let Some(state) = cached else {
            // An API that did not answer (or names another pod) is not asked again.
            let api_down = matches!(&from_api, Some(Err(e)) if e.code == ErrorCode::TryAgainLater);
            let annotations = match (from_runtime, from_api) {
                (Some(a), _) => a.clone(),
                (None, Some(Ok(a))) => a,
                _ => BTreeMap::new(),
            };
            let sources = Sources {
                conf_dir: &self.conf.conf_dir,
                api: api.as_ref().filter(|_| !api_down),
            };
            let result = self.del_uncached(&self.inputs(&sources, pod.as_ref(), &annotations));
            self.cache.remove(lock, id)?;
            return result;
        };
        self.forget(lock, state, !self.conf.parallel_delegates)
    }

    /// The API client for DEL, if configured. Its requests are bounded by
    /// half of [`manifold_kube::DEFAULT_TIMEOUT`], so that the two DEL makes
    /// (read the pod, clear its network-status) never delay DEL beyond it. A
    /// bad kubeconfig is logged: DEL works without the API.
    fn del_api(&self) -> Option<KubeClient> {
        let kubeconfig = self.conf.kubeconfig.as_deref()?;
        KubeClient::from_kubeconfig_with_timeout(kubeconfig, manifold_kube::DEFAULT_TIMEOUT / 2)
            .inspect_err(|e| tracing::warn!(error = %e, "DEL: no Kubernetes API client"))
            .ok()
    }

    /// DEL with nothing cached (cache lost, or ADD stopped before writing
    /// it): deletes every attachment the current config and annotations still
    /// resolve to, as Multus does, so that no address leaks. Nothing is
    /// cached; the first delegate error is returned, for the runtime to retry.
    fn del_uncached(&self, inputs: &Inputs) -> CniResult<()> {
        let atts = plan::rebuild(inputs);
        tracing::info!(
            container = %self.call.env.container_id,
            networks = ?atts.iter().map(|a| a.network.as_str()).collect::<Vec<_>>(),
            "DEL: nothing cached, deleting what the config and annotations name"
        );
        self.delete_all(&atts, !self.conf.parallel_delegates)
            .1
            .map_or(Ok(()), Err)
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
        self.readiness(ErrorCode::PluginNotAvailable, Duration::ZERO)?;
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

fn pod_name(p: &PodRef) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// Sets the pod's network-status to [`NO_NETWORK_STATUS`] (Multus'
/// `SetNetworkStatus(nil)`), best effort: a failure is only logged.
fn clear_network_status(api: &KubeClient, p: &PodRef) {
    let ann = BTreeMap::from([(
        NETWORK_STATUS_ANNOTATION.to_string(),
        NO_NETWORK_STATUS.to_string(),
    )]);
    match api.patch_pod_annotations(&p.namespace, &p.name, &ann) {
        Ok(()) => tracing::debug!(pod = %pod_name(p), "DEL: network-status cleared"),
        Err(e) => {
            tracing::warn!(pod = %pod_name(p), error = %e, "DEL: could not clear network-status")
        }
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
