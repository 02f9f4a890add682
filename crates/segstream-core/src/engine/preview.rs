//! Previewing a candidate segment before it is launched: the population it would have
//! now, a sample of its members and its overlap with each running segment, without
//! activating anything or emitting a transition.
//!
//! The answer is what a reload with the candidate would produce: the candidate is compiled
//! together with the running file ([`Definitions::with_candidate`]), features with an
//! unchanged key keep their state and new ones start empty, the segments it uses keep
//! their memberships, and each profile is evaluated at its own clock, as
//! [`Engine::replace_definitions`] does.
//!
//! The work is split so that a caller can bound it: [`Preview::scan`] evaluates at most a
//! given number of profiles and returns, the [`Cursor`] remembering where to go on (the
//! caller may release the engine in between and stop at a deadline). One [`Tally`] can
//! collect the scans of several engines, each with its own [`Preview`] (a preview is tied
//! to the symbols and definitions of the engine it was compiled against) and cursor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::eval::Ctx;
use super::Engine;
use crate::profile::Profile;
use crate::segment::compile::Definitions;
use crate::segment::diagnostic::Diagnostics;

/// Member ids an answer lists unless its caller asks for another number.
pub const DEFAULT_SAMPLE: usize = 20;

/// A candidate segment compiled against one engine's definitions and symbols.
#[derive(Debug)]
pub struct Preview {
    /// The engine's definitions when it was compiled.
    base: Arc<Definitions>,
    /// The set a reload with the candidate would install.
    defs: Definitions,
    /// The candidate in `defs.segments`.
    index: usize,
    replaces: bool,
    /// Per feature of `base`: its index in `defs` (the same key), if it is kept.
    feature_map: Vec<Option<u16>>,
    /// Per segment of `defs` up to the candidate: the index in `base` whose membership a
    /// reload carries, or `None` if a reload evaluates it.
    carried: Vec<Option<usize>>,
    /// Whether the profiles can be read as they are: every kept feature at the same index,
    /// every segment before the candidate carried from the same index.
    direct: bool,
}

/// The engine's definitions changed (a reload) after the preview was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefinitionsChanged;

impl fmt::Display for DefinitionsChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the segment definitions were reloaded during the preview")
    }
}

impl std::error::Error for DefinitionsChanged {}

/// Where a scan over one engine goes on. The profiles to visit are the engine's customers
/// when the first scan starts; one that is gone by its turn is skipped, one added later is
/// not visited.
#[derive(Debug, Default)]
pub struct Cursor {
    ids: Option<Vec<Arc<str>>>,
    next: usize,
}

impl Cursor {
    /// Whether every profile of the engine has been visited.
    pub fn is_done(&self) -> bool {
        self.ids.as_ref().is_some_and(|ids| self.next >= ids.len())
    }
}

/// What the scans found so far (over one or several engines).
#[derive(Debug)]
pub struct Tally {
    segment: String,
    version: String,
    replaces: bool,
    definitions_version: String,
    sample_size: usize,
    population: u64,
    /// The smallest member ids, at most `sample_size`.
    sample: BTreeSet<Arc<str>>,
    /// Running segments in definition order, with members also in the candidate.
    overlap: Vec<(Arc<str>, u64)>,
    profiles: u64,
    scanned: u64,
    cursors: usize,
    cursors_done: usize,
}

/// The answer to a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewAnswer {
    /// The candidate's name (`preview` for a bare condition).
    pub segment: String,
    /// Its rule version, as a reload would give it.
    pub version: String,
    /// Whether it replaces a running segment of the same name.
    pub replaces: bool,
    /// The version of the running definitions it was compiled against.
    pub definitions_version: String,
    /// Profiles in the candidate.
    pub population: u64,
    /// Up to the requested number of member ids, the smallest in byte order, sorted.
    pub sample: Vec<String>,
    /// Per running segment: profiles in both it (now) and the candidate.
    pub overlap: BTreeMap<String, u64>,
    /// Profiles evaluated.
    pub profiles_scanned: u64,
    /// Profiles there were to visit when the scans started.
    pub profiles: u64,
    /// Whether every scan ran to its end (otherwise the counts are those of the profiles
    /// scanned so far).
    pub complete: bool,
}

impl Preview {
    /// Compiles `text` (one `[segments.NAME]` table, or a bare condition) against the
    /// engine's definitions; `file` names it in diagnostics. Names the candidate uses are
    /// interned in the engine's symbols, as a reload would; nothing else changes.
    pub fn compile(engine: &mut Engine, file: &str, text: &str) -> Result<Preview, Diagnostics> {
        let base = engine.defs.clone();
        let cand = base.with_candidate(file, text, &mut engine.symbols)?;
        let defs = cand.defs;
        let feature_map: Vec<Option<u16>> = base
            .features
            .iter()
            .map(|f| {
                defs.features
                    .iter()
                    .position(|g| g.key == f.key)
                    .map(|i| i as u16)
            })
            .collect();
        let carried: Vec<Option<usize>> = defs.segments[..=cand.index]
            .iter()
            .map(|s| {
                base.segment_index(&s.name)
                    .filter(|&j| base.segments[j].version == s.version)
            })
            .collect();
        let direct = feature_map
            .iter()
            .enumerate()
            .all(|(i, m)| *m == Some(i as u16))
            && carried[..cand.index]
                .iter()
                .enumerate()
                .all(|(i, c)| *c == Some(i));
        Ok(Preview {
            base,
            defs,
            index: cand.index,
            replaces: cand.replaces,
            feature_map,
            carried,
            direct,
        })
    }

    /// The candidate's name.
    pub fn name(&self) -> &str {
        &self.defs.segments[self.index].name
    }

    /// Evaluates the candidate for at most `max_profiles` more of the engine's profiles,
    /// from `cursor` on, into `tally`. Returns whether the engine is done (the cursor is at
    /// its end). The first call takes the list of the engine's customers (a copy of their
    /// ids).
    pub fn scan(
        &self,
        engine: &Engine,
        tally: &mut Tally,
        cursor: &mut Cursor,
        max_profiles: usize,
    ) -> Result<bool, DefinitionsChanged> {
        if !Arc::ptr_eq(&engine.defs, &self.base) {
            return Err(DefinitionsChanged);
        }
        if cursor.ids.is_none() {
            let ids: Vec<Arc<str>> = engine.profiles.keys().map(Arc::from).collect();
            tally.profiles += ids.len() as u64;
            tally.cursors += 1;
            cursor.ids = Some(ids);
        }
        let ids = cursor.ids.as_deref().unwrap_or_default();
        let end = ids.len().min(cursor.next.saturating_add(max_profiles));
        // Running segments by their index here, to the tally's order (by name: each engine
        // of a service has the same definitions, but each its own preview).
        let slots: Vec<Option<usize>> = self
            .base
            .segments
            .iter()
            .map(|s| tally.overlap.iter().position(|(n, _)| *n == s.name))
            .collect();
        for id in &ids[cursor.next..end] {
            let Some(profile) = engine.profiles.get(id) else {
                continue;
            };
            tally.scanned += 1;
            if !self.is_member(engine, profile) {
                continue;
            }
            tally.population += 1;
            for j in profile.members() {
                if let Some(Some(slot)) = slots.get(j) {
                    tally.overlap[*slot].1 += 1;
                }
            }
            if tally.sample_size > 0 {
                let full = tally.sample.len() >= tally.sample_size;
                if !full || tally.sample.last().is_some_and(|last| id < last) {
                    tally.sample.insert(id.clone());
                    if full {
                        tally.sample.pop_last();
                    }
                }
            }
        }
        let was_done = cursor.is_done();
        cursor.next = end;
        let done = cursor.is_done();
        if done && !was_done {
            tally.cursors_done += 1;
        }
        Ok(done)
    }

    /// Whether the profile would be in the candidate after a reload with it: at the
    /// profile's clock, with the features and memberships a reload would leave it.
    fn is_member(&self, engine: &Engine, profile: &Profile) -> bool {
        let now = profile.clock;
        let cond = &self.defs.segments[self.index].cond;
        if self.direct && self.carried[self.index].is_none() {
            let ctx = Ctx {
                defs: &self.defs,
                symbols: &engine.symbols,
                profile,
                now,
            };
            return ctx.eval(cond);
        }
        if let Some(j) = self.carried[self.index] {
            // Unchanged: a reload keeps the membership.
            return profile.is_member(j);
        }
        // The profile as a reload would leave it, up to the candidate.
        let mut p = profile.clone();
        let map = &self.feature_map;
        p.remap_features(&|k| map.get(usize::from(k)).copied().flatten());
        let old = p.take_members();
        for (i, seg) in self.defs.segments[..=self.index].iter().enumerate() {
            let is_in = match self.carried[i] {
                Some(j) => old.contains(j),
                None => Ctx {
                    defs: &self.defs,
                    symbols: &engine.symbols,
                    profile: &p,
                    now,
                }
                .eval(&seg.cond),
            };
            p.set_member(i, is_in);
        }
        p.is_member(self.index)
    }
}

impl Tally {
    /// An empty tally for `preview` (any of the engines' previews of one candidate),
    /// keeping up to `sample_size` member ids.
    pub fn new(preview: &Preview, sample_size: usize) -> Self {
        let seg = &preview.defs.segments[preview.index];
        Tally {
            segment: seg.name.to_string(),
            version: seg.version.to_string(),
            replaces: preview.replaces,
            definitions_version: preview.base.version.to_string(),
            sample_size,
            population: 0,
            sample: BTreeSet::new(),
            overlap: preview
                .base
                .segments
                .iter()
                .map(|s| (s.name.clone(), 0))
                .collect(),
            profiles: 0,
            scanned: 0,
            cursors: 0,
            cursors_done: 0,
        }
    }

    /// The answer so far; `complete` when every scan started has reached its end.
    pub fn finish(self) -> PreviewAnswer {
        PreviewAnswer {
            segment: self.segment,
            version: self.version,
            replaces: self.replaces,
            definitions_version: self.definitions_version,
            population: self.population,
            sample: self.sample.iter().map(|s| s.to_string()).collect(),
            overlap: self
                .overlap
                .into_iter()
                .map(|(n, c)| (n.to_string(), c))
                .collect(),
            profiles_scanned: self.scanned,
            profiles: self.profiles,
            complete: self.cursors > 0 && self.cursors_done == self.cursors,
        }
    }
}
