//! "Did you mean" hints: the one rule that picks a known name to suggest in place of a
//! misspelt one.
//!
//! The parser uses it for function names (`cuont(...)`), the compiler for event types,
//! event properties, profile attributes and segment names, so the same typo gets the same
//! hint wherever it is made.
//!
//! Note that for event types and properties a suggestion is more than a hint: a name close
//! to a known one is rejected as a typo instead of being taken as a custom name, so the
//! threshold decides which files are valid.

/// The known name closest to `word`, if one is close enough to be a likely typo of it.
///
/// Distance is the number of single-character insertions, deletions, substitutions and
/// transpositions of adjacent characters ([`edit_distance`]); case counts (`Count` is one
/// edit from `count`). A candidate of up to 5 characters may be 1 edit away, a longer one
/// 2. The nearest candidate wins; among equally near ones the alphabetically first, so the
/// order of `candidates` (which may come from a hash map) never matters. A candidate equal
/// to `word` is never suggested.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, c)| d <= max_distance(c))
        .min()
        .map(|(_, c)| c)
}

/// How many edits away from `candidate` a word may be and still be taken for a typo of it.
fn max_distance(candidate: &str) -> usize {
    if candidate.chars().count() <= 5 {
        1
    } else {
        2
    }
}

/// Edit distance with adjacent transpositions (optimal string alignment), for "did you
/// mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between the first i chars of a and the first j chars of b.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUNCTIONS: &[&str] = &["count", "sum", "since", "since_first", "in_segment"];
    const EVENTS: &[&str] = &[
        "page_view",
        "click",
        "ad_click",
        "email_sent",
        "email_open",
        "email_click",
        "purchase",
    ];

    fn s(word: &str, candidates: &[&'static str]) -> Option<&'static str> {
        suggest(word, candidates.iter().copied())
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_substitutions_and_transpositions() {
        assert_eq!(edit_distance("count", "count"), 0);
        assert_eq!(edit_distance("cuont", "count"), 1);
        assert_eq!(edit_distance("conut", "count"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("sums", "sum"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("email_opne", "email_open"), 1);
        // Optimal string alignment: a transposed pair is not edited again.
        assert_eq!(edit_distance("ca", "abc"), 3);
        // Characters, not bytes.
        assert_eq!(edit_distance("größe", "grösse"), 2);
    }

    #[test]
    fn typos_suggest_the_intended_name() {
        assert_eq!(s("cont", FUNCTIONS), Some("count"));
        assert_eq!(s("counts", FUNCTIONS), Some("count"));
        assert_eq!(s("sun", FUNCTIONS), Some("sum"));
        assert_eq!(s("in_segmnt", FUNCTIONS), Some("in_segment"));
        assert_eq!(s("since_firts", FUNCTIONS), Some("since_first"));
        assert_eq!(s("pruchase", EVENTS), Some("purchase"));
        assert_eq!(s("emial_sent", EVENTS), Some("email_sent"));
        assert_eq!(s("page-view", EVENTS), Some("page_view"));
    }

    #[test]
    fn a_transposition_is_one_edit() {
        assert_eq!(s("cuont", FUNCTIONS), Some("count"));
        assert_eq!(s("smu", FUNCTIONS), Some("sum"));
        assert_eq!(s("sicne", FUNCTIONS), Some("since"));
        assert_eq!(s("since_frist", FUNCTIONS), Some("since_first"));
        assert_eq!(s("email_opne", EVENTS), Some("email_open"));
        // Two transpositions in a long name are still a typo.
        assert_eq!(s("emial_opne", EVENTS), Some("email_open"));
    }

    #[test]
    fn case_differences_are_edits() {
        assert_eq!(s("Count", FUNCTIONS), Some("count"));
        assert_eq!(s("Purchase", EVENTS), Some("purchase"));
        assert_eq!(s("Page_View", EVENTS), Some("page_view"));
        // Every letter changed: not a typo.
        assert_eq!(s("COUNT", FUNCTIONS), None);
        assert_eq!(s("PURCHASE", EVENTS), None);
    }

    #[test]
    fn nothing_is_suggested_when_nothing_is_close() {
        assert_eq!(s("webinar", EVENTS), None);
        assert_eq!(s("signup", EVENTS), None);
        assert_eq!(s("", FUNCTIONS), None);
        assert_eq!(s("count", &[]), None);
        // Short names allow one edit, longer ones two.
        assert_eq!(s("cnt", FUNCTIONS), None);
        assert_eq!(s("block", EVENTS), None);
        assert_eq!(s("sense", FUNCTIONS), None);
        assert_eq!(s("pur_chse", EVENTS), Some("purchase"));
        assert_eq!(s("prchs", EVENTS), None);
    }

    #[test]
    fn the_word_itself_is_never_suggested() {
        assert_eq!(s("count", FUNCTIONS), None);
        assert_eq!(s("click", EVENTS), None);
        assert_eq!(s("vip", &["vip", "vips"]), Some("vips"));
    }

    #[test]
    fn the_nearest_name_wins_and_ties_go_to_the_alphabetically_first() {
        // `email_clik` is 1 edit from `email_click` and at least 3 from the others.
        assert_eq!(s("email_clik", EVENTS), Some("email_click"));
        // `since_firs` is 1 from `since_first`; `since` is too far for its length.
        assert_eq!(s("since_firs", FUNCTIONS), Some("since_first"));
        // `bat` is one edit from `bar`, `bas` and `cat`: the answer never depends on order.
        let names = ["cat", "bas", "bar"];
        assert_eq!(s("bat", &names), Some("bar"));
        let mut reversed = names;
        reversed.reverse();
        assert_eq!(s("bat", &reversed), Some("bar"));
        for i in 0..names.len() {
            let mut rotated = names;
            rotated.rotate_left(i);
            assert_eq!(s("bat", &rotated), Some("bar"));
        }
        // Nearer beats alphabetically first.
        assert_eq!(
            s("email_sentt", &["email_open", "email_sent"]),
            Some("email_sent")
        );
    }
}
