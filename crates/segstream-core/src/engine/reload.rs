//! Replacing the definitions at run time (a reload): features with an unchanged key keep
//! their state, segments are matched by name and rule version, and every customer's
//! memberships are settled against the new set.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::evaluate::{Schedule, Select, Trigger};
use super::Engine;
use crate::changelog::Codec;
use crate::segment::compile::{Cond, Definitions, Segment};
use crate::segment::diagnostic::Diagnostics;
use crate::transition::{Cause, Direction, Transition};

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub version: String,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Aggregates that are new in this set: they start empty and fill from now on.
    pub new_aggregates: usize,
    pub kept_aggregates: usize,
    pub transitions: usize,
}

/// A segment's name and rule version.
type NameVersion = (Arc<str>, Arc<str>);

/// The layout of a definitions set that profile state depends on.
struct Layout {
    segments: Vec<NameVersion>,
    feature_keys: Vec<String>,
}

impl Layout {
    fn of(defs: &Definitions) -> Self {
        Layout {
            segments: defs
                .segments
                .iter()
                .map(|s| (s.name.clone(), s.version.clone()))
                .collect(),
            feature_keys: defs.features.iter().map(|f| f.key.clone()).collect(),
        }
    }
}

impl Engine {
    /// Replaces the definitions. Features with an unchanged key keep their state; every
    /// customer's membership in added and changed segments is re-evaluated from the
    /// profile, and members of removed segments exit. Transitions carry cause `reload`.
    pub fn replace_definitions(
        &mut self,
        defs: Definitions,
        out: &mut Vec<Transition>,
    ) -> ReloadReport {
        let old = Layout::of(&self.defs);
        self.install(defs, &old, out)
    }

    /// Compiles `text` against this engine's symbols and replaces the definitions; an
    /// invalid file changes nothing and returns every error.
    pub fn reload_source(
        &mut self,
        file: &str,
        text: &str,
        out: &mut Vec<Transition>,
    ) -> Result<ReloadReport, Diagnostics> {
        let defs = Definitions::from_source(file, text, &mut self.symbols)?;
        Ok(self.replace_definitions(defs, out))
    }

    fn install(
        &mut self,
        defs: Definitions,
        old: &Layout,
        out: &mut Vec<Transition>,
    ) -> ReloadReport {
        let defs = Arc::new(defs);
        let mut report = ReloadReport {
            version: defs.version.to_string(),
            ..ReloadReport::default()
        };
        // Feature remapping by key.
        let new_index: HashMap<&str, u16> = defs
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key.as_str(), i as u16))
            .collect();
        let feature_map: Vec<Option<u16>> = old
            .feature_keys
            .iter()
            .map(|k| new_index.get(k.as_str()).copied())
            .collect();
        report.kept_aggregates = feature_map.iter().filter(|m| m.is_some()).count();
        report.new_aggregates = defs.features.len() - report.kept_aggregates;
        // Segment mapping by name.
        let old_by_name: HashMap<&str, (usize, &Arc<str>)> = old
            .segments
            .iter()
            .enumerate()
            .map(|(i, (n, v))| (&**n, (i, v)))
            .collect();
        let mut reevaluate = vec![false; defs.segments.len()];
        let mut carried: Vec<Option<usize>> = vec![None; defs.segments.len()];
        for (i, s) in defs.segments.iter().enumerate() {
            match old_by_name.get(&*s.name) {
                Some((j, v)) if **v == s.version => {
                    carried[i] = Some(*j);
                    report.unchanged.push(s.name.to_string());
                }
                Some((j, _)) => {
                    carried[i] = Some(*j);
                    reevaluate[i] = true;
                    report.changed.push(s.name.to_string());
                }
                None => {
                    reevaluate[i] = true;
                    report.added.push(s.name.to_string());
                }
            }
        }
        let removed: Vec<(usize, &NameVersion)> = old
            .segments
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| defs.segment_index(n).is_none())
            .collect();
        report.removed = removed.iter().map(|(_, (n, _))| n.to_string()).collect();

        let cause = Cause::Reload(defs.version.clone());
        let identical = report.added.is_empty()
            && report.changed.is_empty()
            && removed.is_empty()
            && old.feature_keys.len() == defs.features.len()
            && feature_map
                .iter()
                .enumerate()
                .all(|(i, m)| *m == Some(i as u16));
        if identical {
            // Same definitions (e.g. a restore): state and timers stay exactly as they were.
            self.timers.rebuild(&self.profiles);
            self.affected = vec![false; defs.segments.len()];
            self.codec = Codec::new(&defs);
            self.defs = defs;
            return report;
        }
        let mut ids: Vec<Arc<str>> = self.profiles.keys().map(Arc::from).collect();
        ids.sort();
        let before = out.len();
        self.timers.clear();
        let (profiles, mut ev) = self.split();
        ev.defs = &defs;
        for id in ids {
            let Some(profile) = profiles.get_mut(&id) else {
                continue;
            };
            ev.changes.touch(profile, &id);
            profile.remap_features(&|k| feature_map.get(k as usize).copied().flatten());
            let old_members = profile.take_members();
            let now = profile.clock;
            for (j, (name, version)) in removed.iter().map(|(j, s)| (*j, s)) {
                if old_members.contains(j) {
                    let seg = Segment {
                        name: name.clone(),
                        description: None,
                        version: version.clone(),
                        condition_text: String::new(),
                        cond: Cond::Const(false),
                        dependents: Vec::new(),
                        time_dependent: false,
                    };
                    let cause = cause.clone();
                    ev.emit(profile, &id, &seg, Direction::Exited, now, cause, out);
                }
            }
            let select = Select::Reload {
                reevaluate: &reevaluate,
                carried: &carried,
                old_members: &old_members,
            };
            let trigger = Trigger::Given(&cause);
            ev.evaluate(profile, &id, now, select, trigger, Schedule::Replace, out);
        }
        report.transitions = out.len() - before;
        self.affected = vec![false; defs.segments.len()];
        self.codec = Codec::new(&defs);
        self.defs = defs;
        report
    }
}
