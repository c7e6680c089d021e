//! Privacy accounting: exact composition of costs, conversion of zCDP to
//! (epsilon, delta)-DP, and a [`Budget`] that refuses any spend it cannot
//! cover.
//!
//! Costs stay in their own unit: epsilon for pure mechanisms, rho for zCDP
//! ones, (epsilon, delta) for approximate ones. Composition sums each unit
//! with every addition rounded *up* (OpenDP's `InfAdd`), so a reported total
//! is never below the true one. A pure epsilon also counts as
//! rho = epsilon^2 / 2 (Bun-Steinke 2016, Prop. 1.4) when that gives the
//! tighter (epsilon, delta).

use opendp::{
    combinators::ConcentratedMeasure,
    measures::ZeroConcentratedDivergence,
    traits::{InfAdd, InfDiv, InfMul, InfSub},
};

use crate::{Cost, Delta, Epsilon, PrivacyError, Rho};

/// rho such that an epsilon-DP mechanism is rho-zCDP: epsilon^2 / 2,
/// rounded up.
///
/// # Citations
/// Bun, Steinke. Concentrated Differential Privacy: Simplifications,
/// Extensions, and Lower Bounds (TCC 2016), Prop. 1.4.
pub fn pure_to_zcdp(epsilon: Epsilon) -> Result<Rho, PrivacyError> {
    let e = epsilon.get();
    Rho::new(e.inf_mul(&e)?.inf_div(&2.0)?)
}

/// The smallest epsilon (as found by OpenDP's search, on the safe side) such
/// that a rho-zCDP mechanism is (epsilon, delta)-DP, using the optimal
/// conversion of Canonne-Kamath-Steinke (OpenDP's `make_zCDP_to_approxDP`
/// privacy profile). Infinite when `delta` is 0.
///
/// # Citations
/// Canonne, Kamath, Steinke. The Discrete Gaussian for Differential Privacy
/// (NeurIPS 2020), Prop. 12 / Cor. 13. Bun, Steinke (TCC 2016), Prop. 1.3
/// (the looser rho + 2 sqrt(rho ln(1/delta))).
pub fn zcdp_to_approx_dp(rho: f64, delta: f64) -> Result<f64, PrivacyError> {
    let rho_ok = rho.is_finite() && rho >= 0.0;
    if !rho_ok || !(0.0..1.0).contains(&delta) {
        return Err(PrivacyError::InvalidParameter {
            name: "rho/delta",
            reason: format!("need finite rho >= 0 and delta in [0, 1), got {rho}, {delta}"),
        });
    }
    if rho == 0.0 {
        return Ok(0.0);
    }
    if delta == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(ZeroConcentratedDivergence::convert(rho)?.epsilon(delta)?)
}

/// The composed cost of a sequence of releases. Every field only grows, and
/// every addition rounds up.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Composition {
    pure_epsilon: f64,
    pure_as_rho: f64,
    rho: f64,
    approx_epsilon: f64,
    approx_delta: f64,
}

impl Composition {
    /// Nothing spent.
    pub fn new() -> Self {
        Self::default()
    }

    /// `self` followed by a release of cost `cost`.
    pub fn compose(&self, cost: Cost) -> Result<Self, PrivacyError> {
        let mut next = *self;
        match cost {
            Cost::Pure(e) => {
                next.pure_epsilon = next.pure_epsilon.inf_add(&e.get())?;
                next.pure_as_rho = next.pure_as_rho.inf_add(&pure_to_zcdp(e)?.get())?;
            }
            Cost::Zcdp(r) => next.rho = next.rho.inf_add(&r.get())?,
            Cost::Approx { epsilon, delta } => {
                next.approx_epsilon = next.approx_epsilon.inf_add(&epsilon.get())?;
                next.approx_delta = next.approx_delta.inf_add(&delta.get())?;
            }
            Cost::Free => {}
        }
        Ok(next)
    }

    /// `self` followed by `n` releases of cost `cost` each: every part grows
    /// by `n` times its per-release amount, the product rounded up
    /// (OpenDP's `InfMul`), then added rounding up.
    ///
    /// This is never below the exact total, and never above `n` calls of
    /// [`compose`](Self::compose): those round up once per release, while
    /// the product is the smallest `f64` at or above the exact `n * cost`.
    /// A lease of 100,000 releases costs one multiplication, not 100,000
    /// big-number additions.
    pub fn compose_n(&self, cost: Cost, n: u32) -> Result<Self, PrivacyError> {
        let times = f64::from(n);
        let grow = |part: f64, per: f64| -> Result<f64, PrivacyError> {
            Ok(part.inf_add(&times.inf_mul(&per)?)?)
        };
        let mut next = *self;
        match cost {
            Cost::Pure(e) => {
                next.pure_epsilon = grow(next.pure_epsilon, e.get())?;
                next.pure_as_rho = grow(next.pure_as_rho, pure_to_zcdp(e)?.get())?;
            }
            Cost::Zcdp(r) => next.rho = grow(next.rho, r.get())?,
            Cost::Approx { epsilon, delta } => {
                next.approx_epsilon = grow(next.approx_epsilon, epsilon.get())?;
                next.approx_delta = grow(next.approx_delta, delta.get())?;
            }
            Cost::Free => {}
        }
        Ok(next)
    }

    /// Rebuilds a composition from its stored parts (a ledger row). Every
    /// part must be finite and >= 0.
    pub fn from_parts(
        pure_epsilon: f64,
        pure_as_rho: f64,
        rho: f64,
        approx_epsilon: f64,
        approx_delta: f64,
    ) -> Result<Self, PrivacyError> {
        for (name, v) in [
            ("pure_epsilon", pure_epsilon),
            ("pure_as_rho", pure_as_rho),
            ("rho", rho),
            ("approx_epsilon", approx_epsilon),
            ("approx_delta", approx_delta),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(PrivacyError::InvalidParameter {
                    name,
                    reason: format!("stored composition part must be finite and >= 0, got {v}"),
                });
            }
        }
        Ok(Self {
            pure_epsilon,
            pure_as_rho,
            rho,
            approx_epsilon,
            approx_delta,
        })
    }

    /// Sum of epsilon^2 / 2 over the pure releases (their zCDP view).
    pub fn pure_as_rho(&self) -> f64 {
        self.pure_as_rho
    }

    /// Sum of the pure epsilons.
    pub fn pure_epsilon(&self) -> f64 {
        self.pure_epsilon
    }
    /// Sum of the zCDP rhos (not counting pure mechanisms).
    pub fn rho(&self) -> f64 {
        self.rho
    }
    /// The whole composition as rho-zCDP (pure epsilons as epsilon^2 / 2), or
    /// `None` if it includes an approximate-DP release.
    pub fn as_zcdp(&self) -> Option<f64> {
        if self.approx_epsilon > 0.0 || self.approx_delta > 0.0 {
            return None;
        }
        self.rho.inf_add(&self.pure_as_rho).ok()
    }
    /// Sum of the approximate (epsilon, delta) parts.
    pub fn approx(&self) -> (f64, f64) {
        (self.approx_epsilon, self.approx_delta)
    }

    /// The composition's epsilon at a total `delta` (which must cover the
    /// approximate releases' deltas; the rest goes to the zCDP conversion).
    /// Infinite if `delta` cannot cover them.
    ///
    /// It takes the better of two valid bounds: pure epsilons added linearly
    /// plus the zCDP part converted, or everything converted as zCDP.
    pub fn epsilon_at(&self, delta: f64) -> Result<f64, PrivacyError> {
        let rest = delta.neg_inf_sub(&self.approx_delta)?;
        if rest < 0.0 {
            return Ok(f64::INFINITY);
        }
        let linear = add_up(self.pure_epsilon, zcdp_to_approx_dp(self.rho, rest)?)?;
        let all_zcdp = zcdp_to_approx_dp(self.rho.inf_add(&self.pure_as_rho)?, rest)?;
        add_up(self.approx_epsilon, linear.min(all_zcdp))
    }
}

/// a + b rounded up; infinite (no guarantee) if either is.
fn add_up(a: f64, b: f64) -> Result<f64, PrivacyError> {
    if a.is_infinite() || b.is_infinite() {
        return Ok(f64::INFINITY);
    }
    Ok(a.inf_add(&b)?)
}

/// A privacy budget in (epsilon, delta) that can only be spent while enough
/// remains.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    epsilon: Epsilon,
    delta: Delta,
    spent: Composition,
}

impl Budget {
    /// A fresh budget of (`epsilon`, `delta`). A `delta` of 0 admits only pure
    /// costs.
    pub fn new(epsilon: Epsilon, delta: Delta) -> Self {
        Self {
            epsilon,
            delta,
            spent: Composition::new(),
        }
    }
    /// The budget's epsilon.
    pub fn epsilon(&self) -> Epsilon {
        self.epsilon
    }
    /// The budget's delta.
    pub fn delta(&self) -> Delta {
        self.delta
    }
    /// Everything spent so far.
    pub fn spent(&self) -> &Composition {
        &self.spent
    }
    /// Epsilon spent so far, at the budget's delta.
    pub fn spent_epsilon(&self) -> Result<f64, PrivacyError> {
        self.spent.epsilon_at(self.delta.get())
    }
    /// Epsilon left at the budget's delta (>= 0).
    pub fn remaining_epsilon(&self) -> Result<f64, PrivacyError> {
        Ok((self.epsilon.get() - self.spent_epsilon()?).max(0.0))
    }

    /// The composition after spending `cost`, if the budget covers it.
    pub fn check(&self, cost: Cost) -> Result<Composition, PrivacyError> {
        let next = self.spent.compose(cost)?;
        let next_eps = next.epsilon_at(self.delta.get())?;
        if next_eps <= self.epsilon.get() {
            return Ok(next);
        }
        let now = self.spent_epsilon()?;
        Err(PrivacyError::BudgetExhausted {
            requested: next_eps - now,
            remaining: (self.epsilon.get() - now).max(0.0),
        })
    }

    /// Spends `cost` if the budget covers it; otherwise returns
    /// [`PrivacyError::BudgetExhausted`] and leaves the budget unchanged.
    pub fn try_spend(&mut self, cost: Cost) -> Result<(), PrivacyError> {
        self.spent = self.check(cost)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
