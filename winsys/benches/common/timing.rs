//! Timing helpers every bench binary shares: medians of repeated rounds,
//! subject and baseline interleaved.

#![allow(dead_code)]

use std::time::Instant;

/// Median seconds per iteration of `f`, over `rounds` rounds of `iters`.
pub fn median_secs(rounds: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[samples.len() / 2]
}

/// Measure `subject` and `baseline` interleaved (so drift hits both alike);
/// returns their median seconds per iteration.
pub fn pair(
    rounds: usize,
    iters: usize,
    mut subject: impl FnMut(),
    mut baseline: impl FnMut(),
) -> (f64, f64) {
    // Warm up both (page faults, caches).
    subject();
    baseline();
    let mut s = Vec::new();
    let mut b = Vec::new();
    for round in 0..rounds {
        // Alternate which goes first, so neither gains from the other's
        // cache or TLB state.
        if round % 2 == 0 {
            b.push(median_secs(1, iters, &mut baseline));
            s.push(median_secs(1, iters, &mut subject));
        } else {
            s.push(median_secs(1, iters, &mut subject));
            b.push(median_secs(1, iters, &mut baseline));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    };
    (med(&mut s), med(&mut b))
}
