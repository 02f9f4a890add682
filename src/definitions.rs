//! Reading segment definitions from disk. The core compiles text
//! ([`Definitions::from_source`]); this adapter reads the file and reports a file that cannot
//! be read the same way as one that does not compile: as diagnostics naming the file.

use std::path::Path;

use segstream_core::engine::{Engine, EngineConfig};
use segstream_core::segment::compile::Definitions;
use segstream_core::segment::diagnostic::{Diagnostic, Diagnostics};
use segstream_core::symbols::Symbols;

/// The file's text, or one diagnostic saying why it cannot be read.
pub fn read(path: &Path) -> Result<(String, String), Diagnostics> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((file, text)),
        Err(e) => Err(Diagnostics(vec![Diagnostic {
            file,
            line: 0,
            column: 0,
            message: format!("cannot read the definitions file: {e}"),
        }])),
    }
}

/// Reads and compiles a definitions file against `symbols`; every error is listed.
pub fn load(path: &Path, symbols: &mut Symbols) -> Result<Definitions, Diagnostics> {
    let (file, text) = read(path)?;
    Definitions::from_source(&file, &text, symbols)
}

/// An engine for the definitions in `path`; every error is listed.
pub fn load_engine(path: &Path, config: EngineConfig) -> Result<Engine, Diagnostics> {
    let (file, text) = read(path)?;
    Engine::from_source(&file, &text, config)
}
