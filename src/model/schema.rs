//! JSON Schemas of the playbook and inventory files, generated from the
//! very types that parse them, so editors (YAML language servers) validate
//! and complete runbooks. The shipped copies live in `schema/`; a test
//! fails when they fall out of sync with the types.

use crate::model::error::{Error, Result};

/// Which file format's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A playbook (schema/playbook.schema.json).
    Playbook,
    /// An inventory (schema/inventory.schema.json).
    Inventory,
    /// A composite module file (schema/module.schema.json).
    Module,
    /// A script module's `module.yml` (schema/script-module.schema.json).
    ScriptModule,
}

impl Kind {
    /// Path of the shipped schema, relative to the repository root.
    pub fn shipped_path(self) -> &'static str {
        match self {
            Kind::Playbook => "schema/playbook.schema.json",
            Kind::Inventory => "schema/inventory.schema.json",
            Kind::Module => "schema/module.schema.json",
            Kind::ScriptModule => "schema/script-module.schema.json",
        }
    }
}

/// The schema document, pretty JSON with a trailing newline.
pub fn generate(kind: Kind) -> Result<String> {
    let (mut schema, title) = match kind {
        Kind::Playbook => (
            schemars::schema_for!(crate::model::playbook::PlaybookFile),
            "drover playbook",
        ),
        Kind::Inventory => (
            schemars::schema_for!(crate::model::inventory::InventoryFile),
            "drover inventory",
        ),
        Kind::Module => (
            schemars::schema_for!(crate::model::playbook::module::CompositeFile),
            "drover composite module",
        ),
        Kind::ScriptModule => (
            schemars::schema_for!(crate::model::playbook::module::ScriptFile),
            "drover script module (module.yml)",
        ),
    };
    schema.insert("title".into(), title.into());
    schema.insert(
        "$id".into(),
        format!("https://drover.invalid/{}", kind.shipped_path()).into(),
    );
    let mut text = serde_json::to_string_pretty(&schema)
        .map_err(|e| Error::Internal(format!("cannot serialise the schema: {e}")))?;
    text.push('\n');
    Ok(text)
}
