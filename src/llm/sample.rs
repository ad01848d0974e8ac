//! Choosing the next token from a sequence's logits, and its probability for the judge.
//!
//! # Why not llama.cpp's sampler chain as it is
//! The chain kefu wants is llama.cpp's usual one: a repetition penalty over the last 64
//! generated tokens (small models loop), top-k 40, top-p, temperature and a seeded draw,
//! or greedy at temperature 0. Run through `llama_sampler_sample` it copies the whole
//! vocabulary (49k entries for SmolLM2, 262k for Gemma 3) into a candidate array, and the
//! penalty sampler looks every candidate up in a hash map of recent tokens. That runs on
//! the inference thread between two decodes, once per generating sequence, while the
//! decode threads wait: at 8 streams it cost about a tenth of the tokens/s against
//! llama-batched-bench (benches/model.sh), which does not sample at all.
//!
//! [`Sampler::pick`] gets the same result with two tight passes over the logits:
//! 1. the largest logit;
//! 2. the normaliser of the softmax (logits within [`NEGLIGIBLE_LOGIT`] of the largest;
//!    the rest change a probability by less than 0.1 %) and the best `k + r` raw logits,
//!    where `r` is the number of distinct penalised tokens.
//!
//! The penalty only lowers a logit, so every token of the penalised top k is among the
//! raw top `k + r`: penalising those and keeping the best `k` is exact. Greedy is `k = 1`;
//! otherwise the `k` survivors, sorted, go through llama.cpp's own top-p, temperature and
//! distribution samplers, so the draw is llama.cpp's.

use std::collections::VecDeque;

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;

/// Generated tokens the repetition penalty looks back over.
pub const PENALTY_LAST_N: usize = 64;
/// The repetition penalty: a recent token's positive logit is divided by it, a negative
/// one multiplied (llama.cpp's `penalty_repeat`).
pub const PENALTY_REPEAT: f32 = 1.1;
/// Candidates kept before top-p when sampling.
pub const TOP_K: usize = 40;
/// Logits this far below the largest are left out of the softmax normaliser: with a
/// vocabulary of 262k, e^-20 × 262,144 ≈ 0.0005.
pub const NEGLIGIBLE_LOGIT: f32 = 20.0;

/// One request's sampling state.
pub struct Sampler {
    /// The last [`PENALTY_LAST_N`] generated tokens, oldest first, repeats included (the
    /// window slides over generated tokens; the penalty applies once per distinct token).
    recent: VecDeque<LlamaToken>,
    /// top-p, temperature and the seeded draw; `None` is greedy.
    chain: Option<LlamaSampler>,
    /// Reused between calls: the best raw candidates of the current pick.
    best: Vec<(f32, LlamaToken)>,
}

impl Sampler {
    /// Greedy at `temperature` ≤ 0, else top-k 40, top-p, temperature and a draw seeded
    /// with `seed`; the repetition penalty either way.
    pub fn new(temperature: f32, top_p: f32, seed: u32) -> Self {
        let chain = (temperature > 0.0).then(|| {
            LlamaSampler::chain_simple([
                LlamaSampler::top_p(top_p.clamp(0.05, 1.0), 1),
                LlamaSampler::temp(temperature),
                LlamaSampler::dist(seed),
            ])
        });
        Sampler {
            recent: VecDeque::with_capacity(PENALTY_LAST_N + 1),
            chain,
            best: Vec::with_capacity(TOP_K + PENALTY_LAST_N + 1),
        }
    }

    /// The next token from `logits`, and its probability under the unpenalised softmax
    /// at temperature 1 (what the judge weighs). `None` for empty logits.
    pub fn pick(&mut self, logits: &[f32]) -> Option<(LlamaToken, f32)> {
        let max = max_of(logits)?;
        let penalised = self.penalised();
        let k = if self.chain.is_some() { TOP_K } else { 1 };
        let keep = k + penalised.len();
        let floor = max - NEGLIGIBLE_LOGIT;
        self.best.clear();
        // The smallest logit in `best` once it is full: only larger ones get in.
        let mut bar = f32::NEG_INFINITY;
        let mut sum = 0.0f32;
        for (i, &l) in logits.iter().enumerate() {
            if l > floor {
                sum += (l - max).exp();
            }
            if l > bar || self.best.len() < keep {
                self.best.push((l, LlamaToken(i as i32)));
                if self.best.len() >= 2 * keep {
                    // Keep the best `keep`, amortised: a sort every `keep` insertions.
                    self.best.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
                    self.best.truncate(keep);
                    bar = self.best[keep - 1].0;
                }
            }
        }
        for (l, t) in &mut self.best {
            if penalised.contains(t) {
                *l = penalise(*l);
            }
        }
        self.best.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        self.best.truncate(k);
        let token = match &mut self.chain {
            None => self.best.first()?.1,
            Some(chain) => {
                let data = self.best.iter().map(|&(l, t)| LlamaTokenData::new(t, l, 0.0));
                let mut array = LlamaTokenDataArray::from_iter(data, true);
                array.apply_sampler(chain);
                array.selected_token()?
            }
        };
        self.recent.push_back(token);
        if self.recent.len() > PENALTY_LAST_N {
            self.recent.pop_front();
        }
        let chosen = logits.get(usize::try_from(token.0).ok()?).copied()?;
        Some((token, (chosen - max).exp() / sum))
    }

    /// The distinct recent tokens.
    fn penalised(&self) -> Vec<LlamaToken> {
        let mut tokens: Vec<LlamaToken> = Vec::with_capacity(self.recent.len());
        for t in &self.recent {
            if !tokens.contains(t) {
                tokens.push(*t);
            }
        }
        tokens
    }
}

/// llama.cpp's repetition penalty on one logit.
fn penalise(logit: f32) -> f32 {
    if logit <= 0.0 {
        logit * PENALTY_REPEAT
    } else {
        logit / PENALTY_REPEAT
    }
}

/// The largest of `values`, in eight lanes so that it vectorises (`f32::max` over one
/// accumulator does not: it must keep NaN semantics in order).
fn max_of(values: &[f32]) -> Option<f32> {
    let first = *values.first()?;
    let mut lanes = [first; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = if v > *lane { v } else { *lane };
        }
    }
    Some(lanes.into_iter().chain(rest.iter().copied()).fold(first, f32::max))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probability of `token` under the full softmax of `logits`.
    fn softmax_of(logits: &[f32], token: usize) -> f32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
        (logits[token] - max).exp() / sum
    }

    /// Logits with a known order, like a vocabulary's: mostly far below the best few.
    fn logits(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 25.0).collect()
    }

    #[test]
    fn greedy_takes_the_largest_and_reports_its_softmax_probability() {
        let mut l = logits(5000);
        l[4321] = 30.0;
        l[17] = 29.0;
        let mut s = Sampler::new(0.0, 0.9, 1);
        let (token, p) = s.pick(&l).unwrap();
        assert_eq!(token, LlamaToken(4321));
        assert!((p - softmax_of(&l, 4321)).abs() < 1e-4, "{p}");
    }

    #[test]
    fn greedy_choices_match_llama_cpp_penalties_then_greedy() {
        // A sequence whose favourites keep coming back, so that the penalty decides often.
        let n = 2000;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut ours = Sampler::new(0.0, 0.9, 1);
        let mut theirs = LlamaSampler::chain_simple([
            LlamaSampler::penalties(n as i32, PENALTY_LAST_N as i32, PENALTY_REPEAT, 0.0, 0.0),
            LlamaSampler::greedy(),
        ]);
        let mut differed_from_plain_argmax = 0;
        for step in 0..300 {
            let logits: Vec<f32> = (0..n)
                .map(|i| if i % 97 == 0 { 8.0 + next() } else { next() * 10.0 - 6.0 })
                .collect();
            let (token, _) = ours.pick(&logits).unwrap();
            let data = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0));
            let mut array = LlamaTokenDataArray::from_iter(data, false);
            array.apply_sampler(&mut theirs);
            let expected = array.selected_token().unwrap();
            theirs.accept(expected);
            assert_eq!(token, expected, "step {step}");
            let argmax = (0..n).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
            differed_from_plain_argmax += usize::from(token.0 as usize != argmax);
        }
        assert!(differed_from_plain_argmax > 10, "the penalty never mattered");
    }

    #[test]
    fn a_repeated_token_is_penalised_like_llama_cpp_does() {
        // 10.5 / 1.1 < 10: once 0 has been generated, 1 wins.
        let l = vec![10.5, 10.0, -3.0, 2.0];
        let mut s = Sampler::new(0.0, 0.9, 1);
        assert_eq!(s.pick(&l).unwrap().0, LlamaToken(0));
        assert_eq!(s.pick(&l).unwrap().0, LlamaToken(1));
        // Both are recent now: 10.5/1.1 = 9.55 > 10/1.1 = 9.09.
        assert_eq!(s.pick(&l).unwrap().0, LlamaToken(0));
        // The probability is the model's, unpenalised.
        let (_, p) = s.pick(&l).unwrap();
        assert!(p > 0.0 && p < 1.0);
    }

    #[test]
    fn the_penalty_window_slides_over_the_last_64_tokens() {
        let mut s = Sampler::new(0.0, 0.9, 1);
        let mut l = vec![0.0f32; 200];
        l[0] = 5.0;
        assert_eq!(s.pick(&l).unwrap().0, LlamaToken(0));
        // 64 other tokens push token 0 out of the window.
        for i in 1..=PENALTY_LAST_N {
            let mut m = vec![0.0f32; 200];
            m[i] = 5.0;
            s.pick(&m).unwrap();
        }
        l[1] = 4.9;
        assert_eq!(s.pick(&l).unwrap().0, LlamaToken(0));
    }

    #[test]
    fn sampling_draws_only_from_the_top_candidates_and_is_seeded() {
        // 40 favourites far above the rest: even penalised they stay the top 40.
        let mut l: Vec<f32> = (0..3000).map(|i| -10.0 - (i % 1000) as f32 / 100.0).collect();
        let top: Vec<usize> = (0..TOP_K).map(|j| (j * 73 + 11) % 3000).collect();
        for (j, &t) in top.iter().enumerate() {
            l[t] = 5.0 + j as f32 * 0.01;
        }
        let draw = |seed| {
            let mut s = Sampler::new(0.8, 0.95, seed);
            (0..20).map(|_| s.pick(&l).unwrap().0.0 as usize).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert!(a.iter().all(|t| top.contains(t)), "{a:?}");
        assert_eq!(a, draw(7), "same seed, same draws");
        assert_ne!(a, draw(8), "another seed, other draws");
    }

    #[test]
    fn the_largest_is_found_in_any_lane_and_in_the_tail() {
        for at in [0, 3, 7, 8, 15, 16, 18] {
            let mut v = vec![-1.0f32; 19];
            v[at] = 2.0;
            assert_eq!(max_of(&v), Some(2.0), "at {at}");
        }
        assert_eq!(max_of(&[]), None);
    }
}
