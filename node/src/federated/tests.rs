use super::*;
use crate::inference::{Mlp, embedded_weights};
use veil_privacy::model_update::l2_norm;

fn data() -> Dataset {
    let series: Vec<f64> = (0..60)
        .map(|i| 200.0 + 150.0 * (f64::from(i) / 9.0).sin())
        .collect();
    let (x, y) = forecast_dataset(&series, 0);
    Dataset { x, y }
}

#[test]
fn local_training_lowers_local_loss() {
    let global = embedded_weights(FORECASTER_SPEC.name).unwrap();
    let u = local_update(FORECASTER_SPEC, global, &data(), 30, 0.05).unwrap();
    assert!(
        u.loss_after < u.loss_before,
        "{} -> {}",
        u.loss_before,
        u.loss_after
    );
    assert_eq!(u.delta.len(), 4);
    assert_eq!(u.examples, 50);
}

#[test]
fn privatized_update_is_clipped_noised_safetensors() {
    let global = embedded_weights(FORECASTER_SPEC.name).unwrap();
    let u = local_update(FORECASTER_SPEC, global, &data(), 30, 0.5).unwrap();
    // Tiny noise so the clip is visible through it.
    let p = RoundPrivacy::new(0.01, 1e-3, 1).unwrap();
    let bytes = privatize(&u, &p).unwrap();
    let tensors = mlp::decode(&bytes).unwrap();
    let flat: Vec<f32> = tensors.iter().flat_map(|(_, _, v)| v.clone()).collect();
    assert_eq!(flat.len(), FORECASTER_SPEC.parameters());
    assert!(l2_norm(&flat) < 0.012, "{}", l2_norm(&flat));
    // Names and shapes match the model.
    let mut want = FORECASTER_SPEC.tensors();
    want.sort();
    let got: Vec<_> = tensors
        .iter()
        .map(|(n, s, _)| (n.clone(), s.clone()))
        .collect();
    assert_eq!(got, want);
    // Applying an update keeps a loadable model.
    let _ = Mlp::from_safetensors(FORECASTER_SPEC, global).unwrap();
}

#[test]
fn bad_rounds_are_refused_locally() {
    let global = embedded_weights(FORECASTER_SPEC.name).unwrap();
    let mut r = Round {
        model: "nope".into(),
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        min_nodes: 1,
        local_steps: 1,
        learning_rate: 0.1,
        ..Round::default()
    };
    assert!(matches!(
        build_submission(&r, global, &data()),
        Err(FederatedError::UnknownModel(_))
    ));
    r.model = FORECASTER_SPEC.name.into();
    r.noise_multiplier = 0.0;
    assert!(build_submission(&r, global, &data()).is_err());
    r.noise_multiplier = 1.0;
    r.learning_rate = f64::NAN;
    assert!(build_submission(&r, global, &data()).is_err());
    r.learning_rate = 0.1;
    assert!(build_submission(&r, global, &data()).is_ok());
}

#[test]
fn a_secure_update_is_laid_out_as_the_aggregator_reads_the_model() {
    // The aggregator reads a safetensors file's tensors in name order
    // (`rounds::kernel::parse`); a secure round's vector must line up.
    let global = embedded_weights(FORECASTER_SPEC.name).unwrap();
    let u = local_update(FORECASTER_SPEC, global, &data(), 5, 0.05).unwrap();
    let flat = flat_by_name(&u.delta);
    let bytes = mlp::encode(&HashMap::new(), &u.delta).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let want: Vec<f32> = names
        .iter()
        .flat_map(|n| {
            st.tensor(n)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(flat, want);
    // Not the canonical (layer) order, which puts each weight first.
    let canonical: Vec<f32> = u.delta.iter().flat_map(|(_, _, v)| v.clone()).collect();
    assert_ne!(flat, canonical);
}
