//! Placement routing, one type for reads, replication and repair: in which order the
//! locations holding a blob are tried, and which are skipped because their circuit is open.

use std::sync::Arc;

use super::Registry;
use crate::metadata::BlobRecord;
use crate::names::LocationId;
use crate::storage::StorageEngine;

/// The locations to read a blob from, nearest first by this instance's preference (drained
/// locations last), handed out one at a time: a location whose circuit is open is skipped (and noted in
/// [`Route::skipped`]); one whose circuit is half-open is handed out as its one trial. Taking
/// the next location only when the previous one failed keeps trials for the locations
/// actually used.
#[derive(Debug)]
pub struct Route<'a> {
    registry: &'a Registry,
    order: std::vec::IntoIter<LocationId>,
    skipped: Vec<LocationId>,
}

impl<'a> Route<'a> {
    pub(super) fn new(
        registry: &'a Registry,
        blob: &BlobRecord,
        exclude: Option<&LocationId>,
    ) -> Self {
        let mut order: Vec<LocationId> =
            order_placements(&registry.inner.config.preference, &blob.locations)
                .into_iter()
                .filter(|l| Some(l) != exclude)
                .collect();
        // Drained locations are read last (stable: the preference order stays otherwise).
        order.sort_by_key(|l| registry.is_drained(l));
        Route {
            registry,
            order: order.into_iter(),
            skipped: Vec::new(),
        }
    }

    /// Locations passed over so far because their circuit is open.
    pub fn skipped(&self) -> &[LocationId] {
        &self.skipped
    }
}

impl Iterator for Route<'_> {
    type Item = (LocationId, Arc<dyn StorageEngine>);

    fn next(&mut self) -> Option<Self::Item> {
        for location in self.order.by_ref() {
            // A placement in a location this instance does not configure cannot be read here.
            let Some(storage) = self.registry.inner.locations.get(&location) else {
                continue;
            };
            if !self.registry.inner.health.allow(&location) {
                self.skipped.push(location);
                continue;
            }
            return Some((location, storage.clone()));
        }
        None
    }
}

impl Registry {
    /// The route to read `blob` from, without `exclude` (the target of a copy).
    pub fn route(&self, blob: &BlobRecord, exclude: Option<&LocationId>) -> Route<'_> {
        Route::new(self, blob, exclude)
    }
}

/// Orders the locations that hold a blob for reading: those in `preference` first, in
/// preference order, then the others in their given order. Every placement appears exactly
/// once; duplicates in the input are dropped.
pub fn order_placements(preference: &[LocationId], placements: &[LocationId]) -> Vec<LocationId> {
    let mut ordered: Vec<LocationId> = Vec::with_capacity(placements.len());
    for preferred in preference {
        if placements.contains(preferred) && !ordered.contains(preferred) {
            ordered.push(preferred.clone());
        }
    }
    for placement in placements {
        if !ordered.contains(placement) {
            ordered.push(placement.clone());
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(names: &[&str]) -> Vec<LocationId> {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn preferred_first_then_the_rest() {
        let order = order_placements(&ids(&["eu", "us"]), &ids(&["ap", "us", "eu"]));
        assert_eq!(order, ids(&["eu", "us", "ap"]));
    }

    proptest! {
        #[test]
        fn order_holds_every_placement_once_preferred_first(
            preference in proptest::collection::vec("[a-e]", 0..6),
            placements in proptest::collection::vec("[a-h]", 0..8),
        ) {
            let pref: Vec<LocationId> = preference.iter().map(|s| s.parse().unwrap()).collect();
            let places: Vec<LocationId> = placements.iter().map(|s| s.parse().unwrap()).collect();
            let order = order_placements(&pref, &places);
            // Every placement exactly once, nothing else.
            let mut distinct = places.clone();
            distinct.sort();
            distinct.dedup();
            let mut got = order.clone();
            got.sort();
            prop_assert_eq!(&got, &distinct);
            // Preferred placements come first, in preference order.
            let first_pos = |id: &LocationId| pref.iter().position(|p| p == id);
            let preferred: Vec<&LocationId> = order.iter().take_while(|id| first_pos(id).is_some()).collect();
            prop_assert!(order.iter().skip(preferred.len()).all(|id| first_pos(id).is_none()));
            let positions: Vec<usize> = preferred.iter().filter_map(|id| first_pos(id)).collect();
            prop_assert!(positions.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
