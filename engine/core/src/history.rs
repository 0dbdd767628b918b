//! How long the refresh history grows before a refresh prunes it.
//!
//! Every refresh appends a row to `pgt_refresh_history`, and the history
//! keeps the newest [`KEPT`] rows per stream table. Pruning is an index scan
//! past those rows; run at every refresh it cost about a tenth of a small
//! differential refresh. So only about one refresh in [`PRUNE_ONE_IN`]
//! prunes, and a reader shows the newest [`KEPT`] rows.
//!
//! Which refresh prunes is a function of its history row's id. The ids are
//! shared by every stream table, so a fixed stride (every 32nd id) would
//! let a stream table refreshed in a fixed rotation with others prune at
//! every turn or at none: the id is hashed first.

/// Refresh-history rows shown per stream table (older ones are pruned).
pub const KEPT: usize = 1000;

/// About one refresh in this many prunes its stream table's history.
pub const PRUNE_ONE_IN: u64 = 32;

/// Whether the refresh whose history row has id `refresh_id` prunes its
/// stream table's history.
pub fn prunes(refresh_id: i64) -> bool {
    mixed(refresh_id as u64).is_multiple_of(PRUNE_ONE_IN)
}

/// A bijective 64-bit mix (the finaliser of SplitMix64), so that ids in
/// any arithmetic progression spread evenly over the residues.
fn mixed(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The longest run of ids `start, start + stride, ...` (n of them)
    /// none of which prunes.
    fn longest_gap(start: i64, stride: i64, n: i64) -> i64 {
        let (mut gap, mut longest) = (0, 0);
        for i in 0..n {
            if prunes(start + stride * i) {
                gap = 0;
            } else {
                gap += 1;
                longest = longest.max(gap);
            }
        }
        longest
    }

    #[test]
    fn about_one_refresh_in_thirty_two_prunes() {
        let due = (1..=320_000).filter(|&id| prunes(id)).count();
        assert!((9_000..11_000).contains(&due), "{due} of 320000 ids prune");
    }

    #[test]
    fn a_stream_table_in_any_fixed_rotation_prunes_within_a_few_hundred_refreshes() {
        // A stream table refreshed in turn with stride - 1 others gets
        // every stride-th id; whatever the rotation, it prunes often.
        for stride in 1..=128 {
            for start in [1, 7, 1_000_003] {
                let gap = longest_gap(start, stride, 20_000);
                assert!(
                    gap < 600,
                    "stride {stride} from {start}: {gap} refreshes without pruning"
                );
            }
        }
    }
}
