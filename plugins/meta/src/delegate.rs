//! Running one attachment's delegate conf or conflist the way libcni does:
//! ADD through the plugins in order (each gets the previous result), DEL in
//! reverse with the cached result, CHECK against it, GC and STATUS per plugin.

use crate::plan::Attachment;
use manifold_common::config::{Attachment as ValidAttachment, NetConfList};
use manifold_common::delegate::{self, Invocation, DEFAULT_TIMEOUT};
use manifold_common::env::{CniEnv, Command};
use manifold_common::{CniError, CniResult, CniVersion, ErrorCode};
use serde_json::{Map, Value};

/// The environment shared by every delegate of a call: the runtime's, with
/// `binDir` put in front of `CNI_PATH`.
pub struct Runner<'a> {
    /// The runtime's environment (container, netns, args, path).
    pub env: &'a CniEnv,
}

/// The config plugin `i` of the attachment's list gets: libcni's, plus `args.cni`.
fn plugin_config(att: &Attachment, list: &NetConfList, i: usize, prev: Option<&Value>) -> Value {
    let mut p = list.plugin_config(i, prev, &att.runtime_config);
    if let Some(extra) = &att.cni_args {
        let obj = p.as_object_mut().expect("plugin config is an object");
        let args = obj
            .entry("args")
            .or_insert_with(|| Value::Object(Map::new()));
        if !args.is_object() {
            *args = Value::Object(Map::new());
        }
        let cni = args
            .as_object_mut()
            .expect("object")
            .entry("cni")
            .or_insert_with(|| Value::Object(Map::new()));
        if !cni.is_object() {
            *cni = Value::Object(Map::new());
        }
        let cni = cni.as_object_mut().expect("object");
        for (k, v) in extra {
            cni.insert(k.clone(), v.clone());
        }
    }
    p
}

fn plugin_configs(att: &Attachment, list: &NetConfList, prev: Option<&Value>) -> Vec<Value> {
    (0..list.plugins.len())
        .map(|i| plugin_config(att, list, i, prev))
        .collect()
}

fn plugin_type(p: &Value) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or_default()
}

impl Runner<'_> {
    fn exec(&self, att_if: &str, command: Command, conf: &Value) -> CniResult<Option<Value>> {
        self.exec_with_env(att_if, command, conf, &[])
    }

    fn exec_with_env(
        &self,
        att_if: &str,
        command: Command,
        conf: &Value,
        extra_env: &[(&str, String)],
    ) -> CniResult<Option<Value>> {
        let env = CniEnv {
            command,
            ifname: att_if.to_string(),
            ..self.env.clone()
        };
        delegate::exec_with_env(
            &Invocation {
                plugin: plugin_type(conf),
                command,
                env: &env,
                stdin: conf.to_string().as_bytes(),
                timeout: DEFAULT_TIMEOUT,
            },
            extra_env,
        )
    }

    fn list(att: &Attachment) -> CniResult<NetConfList> {
        NetConfList::from_value(&att.config)
            .map_err(|e| e.context(format!("network {:?}", att.network)))
    }

    /// ADD: runs the plugins in order; returns the last result (in the delegate's version).
    pub fn add(&self, att: &Attachment) -> CniResult<Value> {
        let list = Self::list(att)?;
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let c = &plugin_config(att, &list, i, prev.as_ref());
            let out = self.exec(&att.ifname, Command::Add, c)?.ok_or_else(|| {
                CniError::new(
                    ErrorCode::Delegate,
                    format!("{} ADD printed no result", plugin_type(c)),
                )
            })?;
            prev = Some(out);
        }
        Ok(prev.expect("a conflist has at least one plugin"))
    }

    /// DEL: every plugin in reverse order, with the cached result as prevResult
    /// and `extra_env` added to their environment. Every plugin runs even when
    /// one fails; the first error is returned.
    pub fn del(&self, att: &Attachment, extra_env: &[(&str, String)]) -> CniResult<()> {
        let list = Self::list(att)?;
        let prev = att
            .result
            .as_ref()
            .filter(|_| list.cni_version.supports_check());
        tracing::debug!(network = %att.network, ifname = %att.ifname, "delegate DEL");
        let mut first_err = None;
        for c in plugin_configs(att, &list, prev).iter().rev() {
            if let Err(e) = self.exec_with_env(&att.ifname, Command::Del, c, extra_env) {
                tracing::warn!(network = %att.network, error = %e, "delegate DEL failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK: every plugin against the cached result (skipped for versions
    /// before 0.4.0 and for `disableCheck`).
    pub fn check(&self, att: &Attachment) -> CniResult<()> {
        let list = Self::list(att)?;
        if !list.cni_version.supports_check() || list.disable_check {
            return Ok(());
        }
        let prev = att.result.as_ref().ok_or_else(|| {
            CniError::new(ErrorCode::CheckFailed, "no cached result to check against")
        })?;
        for c in plugin_configs(att, &list, Some(prev)) {
            self.exec(&att.ifname, Command::Check, &c)?;
        }
        Ok(())
    }

    /// GC: every plugin of `config` with the attachments still in use (1.1.0 only).
    pub fn gc(&self, config: &Value, valid: &[ValidAttachment]) -> CniResult<()> {
        let list = NetConfList::from_value(config)?;
        if list.cni_version < CniVersion::V1_1_0 || list.disable_gc {
            return Ok(());
        }
        let valid = serde_json::to_value(valid).expect("attachments serialize");
        for i in 0..list.plugins.len() {
            let mut c = list.plugin_config(i, None, &Map::new());
            c["cni.dev/valid-attachments"] = valid.clone();
            self.exec("", Command::Gc, &c)?;
        }
        Ok(())
    }

    /// STATUS: every plugin of `config` (1.1.0 only; older plugins cannot tell).
    pub fn status(&self, config: &Value) -> CniResult<()> {
        let list = NetConfList::from_value(config)?;
        if list.cni_version < CniVersion::V1_1_0 {
            return Ok(());
        }
        for i in 0..list.plugins.len() {
            self.exec(
                "",
                Command::Status,
                &list.plugin_config(i, None, &Map::new()),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configs_get_capabilities_and_cni_args() {
        let att = Attachment {
            network: "ns/n".into(),
            ifname: "net1".into(),
            config: json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
                {"type": "macvlan", "capabilities": {"mac": true}, "args": {"cni": {"keep": 1}}},
                {"type": "tuning"}]}),
            runtime_config: json!({"mac": "0a:00:00:00:00:01"})
                .as_object()
                .unwrap()
                .clone(),
            cni_args: Some(json!({"x": "y"}).as_object().unwrap().clone()),
            default: false,
            default_route: None,
            result: None,
        };
        let list = NetConfList::from_value(&att.config).unwrap();
        let prev = json!({"cniVersion": "1.0.0"});
        let c = plugin_configs(&att, &list, Some(&prev));
        assert_eq!(c[0]["runtimeConfig"], json!({"mac": "0a:00:00:00:00:01"}));
        assert_eq!(c[0]["args"]["cni"], json!({"keep": 1, "x": "y"}));
        assert!(c[1].get("runtimeConfig").is_none());
        assert_eq!(c[1]["args"]["cni"], json!({"x": "y"}));
        assert_eq!(c[1]["prevResult"], prev);
        assert_eq!(c[1]["name"], "n");
    }
}
