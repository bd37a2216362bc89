//! Plot axes a reader can read: grid marks that egui_plot labels (the attack's loss curve, the
//! training plots).

use egui_plot::{Axis, GridInput, GridMark};

/// Grid marks on a linear axis at 1, 2 or 5 times a power of ten, the finest egui can label on
/// that `axis` (its own base-10 marks jump from too dense to a single mark on a short plot,
/// which then shows no numbers); `integer`: no step under 1 (an axis of steps). Label them
/// with [`triscope::io::plot::tick_label`]: egui's own formatter takes its decimals from the
/// step and writes 0.5 as 0.
pub fn linear_marks(input: GridInput, axis: Axis, integer: bool) -> Vec<GridMark> {
    let (lo, hi) = input.bounds;
    if !(lo.is_finite() && hi.is_finite() && input.base_step_size > 0.0) || hi <= lo {
        return Vec::new();
    }
    // egui_plot labels a y mark whose step spans 20 points, fully from 30, an x mark from 60
    // and 80 (its `label_spacing`); `base_step_size` spans 8 points. Fully labelled marks
    // where two fit, else fainter ones.
    let (full_points, faint_points) = match axis {
        Axis::X => (80.0, 60.0),
        Axis::Y => (30.0, 20.0),
    };
    let marks_at = |points: f64| {
        let legible = input.base_step_size * points / 8.0;
        let decade = 10f64.powf(legible.log10().floor());
        let mut step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * decade)
            .find(|&s| s >= legible)
            .unwrap_or(10.0 * decade);
        if integer {
            step = step.max(1.0).round();
        }
        // A hair of slack so that a bound on a mark (1.9 = 19 x 0.1) keeps it.
        ((lo / step - 1e-9).ceil() as i64..=(hi / step + 1e-9).floor() as i64)
            .map(|k| GridMark {
                value: k as f64 * step,
                step_size: step,
            })
            .collect::<Vec<_>>()
    };
    let full = marks_at(full_points);
    if full.len() >= 2 {
        full
    } else {
        marks_at(faint_points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linear axis: the finest 1-2-5 step egui can label; whole steps on a step axis.
    #[test]
    fn linear_axes_get_labelled_marks() {
        let marks = |lo: f64, hi: f64, points_per_unit: f64, integer: bool| -> Vec<f64> {
            let axis = if integer { Axis::X } else { Axis::Y };
            linear_marks(
                GridInput {
                    bounds: (lo, hi),
                    base_step_size: 8.0 / points_per_unit,
                },
                axis,
                integer,
            )
            .iter()
            .map(|m| m.value)
            .collect()
        };
        // A loss from 1.2 to 1.9 on a 100-point plot (143 points per unit): 0.2 spans 28.6
        // points, 0.5 spans 71 but fits once, so the fainter 0.2 marks; on 300 points, 0.1.
        let y = marks(1.2, 1.9, 143.0, false);
        assert_eq!(y.len(), 4, "{y:?}");
        assert!(
            (y[0] - 1.2).abs() < 1e-9 && (y[3] - 1.8).abs() < 1e-9,
            "{y:?}"
        );
        let y = marks(1.2, 1.9, 300.0, false);
        assert_eq!(y.len(), 8, "{y:?}");
        // Ten PGD steps on 640 points (64 per step; an x label wants 80): every second step;
        // on 1,000 points every step; 100 steps on 640 points: every 20.
        assert_eq!(marks(1.0, 10.0, 64.0, true), [2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            marks(1.0, 10.0, 100.0, true),
            (1..=10).map(f64::from).collect::<Vec<_>>()
        );
        let x = marks(1.0, 100.0, 6.4, true);
        assert!(
            x.windows(2).all(|w| (w[1] - w[0] - 20.0).abs() < 1e-9),
            "{x:?}"
        );
        // Never a fractional step on a step axis, and nothing for an empty range.
        assert!(
            marks(1.0, 2.0, 1000.0, true)
                .iter()
                .all(|v| v.fract() == 0.0)
        );
        assert!(marks(1.0, 1.0, 100.0, false).is_empty());
    }
}
