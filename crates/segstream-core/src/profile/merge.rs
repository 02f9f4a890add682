//! PLACEHOLDER in the identity worktree until the real merge lands from main.
use super::Profile;
use crate::time::Millis;
pub enum FeatureMerge {
    Window {
        resolution: u32,
        retention: u32,
        sum: bool,
    },
    Recency,
    Absence,
}
pub fn merge(
    into: &mut Profile,
    from: &Profile,
    _f: &[FeatureMerge],
    _h: Option<Millis>,
    _now: Millis,
) {
    into.clock = into.clock.max(from.clock);
}
