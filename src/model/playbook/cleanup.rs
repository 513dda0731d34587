//! A composite module's `always` steps: its cleanup, loaded after its
//! steps and marked so the walk runs them on every host that began the
//! call, however the run goes on.

use super::loader::{Inherit, Loader};
use super::Source;
use crate::model::error::{Error, Result};
use crate::model::yaml;

impl Loader<'_> {
    /// A composite module's `always` steps, after its steps (`ids`): they
    /// wait for all of them and are marked as the call's cleanup, each
    /// bounded by the module's `always_timeout`. Returns every id the call
    /// produced.
    pub(super) fn always(
        &mut self,
        msrc: Source<'_>,
        module: &crate::model::playbook::module::CompositeFile,
        child: &Inherit,
        call: &str,
        mut ids: Vec<String>,
    ) -> Result<Vec<String>> {
        if module.always.is_empty() {
            return Ok(ids);
        }
        let timeout = match &module.always_timeout {
            Some(t) => crate::model::parse_duration(t).map_err(|m| {
                Error::invalid(
                    crate::model::playbook::module::WHAT,
                    "always_timeout",
                    m,
                    yaml::locate(msrc.text, msrc.path, &["always_timeout"]),
                )
            })?,
            None => crate::model::playbook::module::ALWAYS_TIMEOUT,
        };
        for (k, spec) in module.always.iter().enumerate() {
            if spec.on_failure.is_some() {
                return Err(Error::invalid(
                    crate::model::playbook::module::WHAT,
                    format!("always[{k}].on_failure"),
                    format!(
                        "step `{}`: an `always` step runs however the call ended; `on_failure` belongs in `steps`",
                        spec.id.value
                    ),
                    Some(msrc.pos(spec.id.referenced)),
                ));
            }
        }
        let first = self.steps.len();
        let more = self
            .list(msrc, &module.always, Some(child), Some(ids.clone()))
            .map_err(in_always)?;
        for st in &mut self.steps[first..] {
            st.always = Some(call.to_string());
            st.timeout = Some(timeout);
        }
        ids.extend(more);
        Ok(ids)
    }
}

/// An error in a module's `always` list names its field there.
fn in_always(e: Error) -> Error {
    match e {
        Error::Invalid(mut d) => {
            if let Some(rest) = d.field.strip_prefix("steps[") {
                d.field = format!("always[{rest}");
            }
            Error::Invalid(d)
        }
        other => other,
    }
}
