//! `model_update`: what the aggregator runs on a SubmitUpdate's bytes,
//! [`kernel::validate_update`] against a global model, and the safetensors
//! reader under it ([`kernel::parse`]).
//!
//! The global models are the node's embedded ones (the audio classifier and
//! the occupancy forecaster), with the norm bound of a round at clip norm 1,
//! noise multiplier 1 and 2 nodes.
//!
//! Invariants: no input panics; a parsed file holds exactly the values its
//! shapes promise; an accepted update has the global model's length, only
//! finite values and a norm within the bound, FedAvg of it alone accepts it
//! with the same norm and returns it unchanged, and it survives a
//! re-encoding.

use std::sync::OnceLock;

use veil_aggregator::rounds::kernel::{self, Flat};
use veil_aggregator::rounds::store::norm_bound;
use veil_privacy::model_update::RoundPrivacy;

const GLOBALS: [&[u8]; 2] = [
    include_bytes!("../../node/models/audio-classifier.safetensors"),
    include_bytes!("../../node/models/occupancy-forecaster.safetensors"),
];

/// The global models with their rounds' norm bounds.
fn globals() -> &'static [(Flat, f64)] {
    static GLOBAL: OnceLock<Vec<(Flat, f64)>> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let privacy = RoundPrivacy::new(1.0, 1.0, 2).expect("valid round parameters");
        GLOBALS
            .iter()
            .map(|bytes| {
                let flat = kernel::parse(bytes).expect("the embedded models parse");
                let bound = norm_bound(&privacy, flat.values.len());
                (flat, bound)
            })
            .collect()
    })
}

/// Validates the input as an update to each global model.
pub fn model_update(data: &[u8]) {
    if let Ok(flat) = kernel::parse(data) {
        let promised: usize = flat
            .layout
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum();
        assert_eq!(flat.values.len(), promised);
    }
    for (global, bound) in globals() {
        let Ok(values) = kernel::validate_update(data, &global.layout, *bound) else {
            continue;
        };
        assert_eq!(values.len(), global.values.len());
        assert!(values.iter().all(|v| v.is_finite()));
        let norm = kernel::check_values(&values, *bound).expect("an accepted update checks");
        assert!(norm <= *bound);
        let mut mean = vec![0.0f32; values.len()];
        let verdicts = kernel::fedavg(&[&values], *bound, 1, &mut mean);
        assert_eq!(verdicts, vec![Ok(norm)]);
        assert!(mean == values, "FedAvg of one update changed it");
        let again = kernel::encode(&global.layout, &values, Default::default())
            .expect("an accepted update re-encodes");
        assert_eq!(
            kernel::validate_update(&again, &global.layout, *bound),
            Ok(values)
        );
    }
}
