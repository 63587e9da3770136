// select_sample: per row of logits, sample (or argmax) one token and compute its unmasking score in
// one streaming pass over the vocabulary. Everything that decides a result lives here, shared by the
// CPU (select_sample.cpp) and CUDA (select_sample_cuda.cu) kernels, so both compute the same thing.
//
// Per row, with z = x / T (T > 0) or z = x (T == 0), the excluded token and z == -inf left out:
//   RowState keeps the online softmax triple (m = max z, s = sum e, t = sum e*(z - m), e = exp(z - m)),
//   the top-2 of z, the Gumbel-max sample argmax(z + G) and, for low_confidence at T > 0, the online
//   logsumexp of the untempered x. States of disjoint vocabulary slices merge exactly (merge()), and
//   every argmax breaks ties towards the lowest index, so the result does not depend on how the
//   vocabulary is split across threads; only the float rounding of the sums follows the (fixed) split.
#pragma once

#include <cmath>
#include <cstdint>

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#ifdef __CUDACC__
#define ADJUST_HD __host__ __device__ __forceinline__
#else
#define ADJUST_HD inline
#endif

// The logits dtypes select_sample accepts; the math is fp32 for all of them.
#define ADJUST_DISPATCH_LOGITS(TYPE, NAME, ...)              \
  AT_DISPATCH_SWITCH(TYPE, NAME,                             \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)  \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace adjust {

enum class Score : int { kEntropy, kConfidence, kMargin, kLowConfidence };

// splitmix64's output function: a bijective 64-bit mixer with full avalanche.
ADJUST_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// One random stream per (seed, offset); element i of it is splitmix64's i-th output from that state.
ADJUST_HD uint64_t stream_key(uint64_t seed, uint64_t offset) { return mix64(mix64(seed) + offset); }

// Gumbel(0, 1) noise for counter i (= row * V + token) of a stream. u = (k + 0.5) * 2^-23 from the top
// 23 bits is exact in fp32 and strictly inside (0, 1), so G is finite and G <= -log(-log(1 - 2^-24)) ~ 16.6.
ADJUST_HD float gumbel(uint64_t key, uint64_t i) {
  const uint64_t bits = mix64(key + (i + 1) * 0x9E3779B97F4A7C15ULL);
  const float u = (static_cast<float>(bits >> 41) + 0.5f) * 0x1p-23f;
  return -logf(-logf(u));
}

// An upper bound on gumbel(): a token with z + kGumbelMax below the best key so far cannot win, so its
// noise is not drawn. This is exact (same result as drawing it) and skips most of a peaked vocabulary.
constexpr float kGumbelMax = 17.0f;

struct Opts {
  bool sample;   // T > 0: Gumbel-max sample instead of argmax
  bool raw;      // also track logsumexp of untempered logits (low_confidence at T > 0)
  uint64_t key;  // stream_key(seed, offset)
};

struct RowState {
  float m, s, t;       // max z, sum exp(z - m), sum exp(z - m) * (z - m); s == 0 <=> empty
  float top2;          // second largest z (== m when the max is tied)
  int64_t top1;        // index of the max z
  float key;           // best Gumbel key z + G
  int64_t tok;         // its index
  float z_tok, x_tok;  // tempered and untempered logit at tok
  float mr, sr;        // max x and sum exp(x - mr) of the untempered logits
};

ADJUST_HD RowState empty_state() {
  return {-INFINITY, 0.f, 0.f, -INFINITY, -1, -INFINITY, -1, -INFINITY, -INFINITY, -INFINITY, 0.f};
}

ADJUST_HD void lse_push(float& m, float& s, float x) {
  if (x > m) {
    s = s * expf(m - x) + 1.f;
    m = x;
  } else {
    s += expf(x - m);
  }
}

// Adds token v (untempered logit x, tempered z > -inf, RNG counter i) to the state.
ADJUST_HD void push(RowState& st, float x, float z, int64_t v, uint64_t i, const Opts& o) {
  if (z > st.m) {
    if (st.s > 0.f) {  // rescale the sums to the new max; t is kept relative to m to avoid cancellation
      const float d = st.m - z, r = expf(d);
      st.t = r * (st.t + d * st.s);
      st.s *= r;
    }
    st.s += 1.f;
    st.top2 = st.m;
    st.m = z;
    st.top1 = v;
  } else {
    const float d = z - st.m, e = expf(d);
    st.s += e;
    st.t += e * d;
    st.top2 = fmaxf(st.top2, z);
  }
  if (o.raw) lse_push(st.mr, st.sr, x);
  if (o.sample && z + kGumbelMax >= st.key) {
    const float k = z + gumbel(o.key, i);
    if (k > st.key) {
      st.key = k;
      st.tok = v;
      st.z_tok = z;
      st.x_tok = x;
    }
  }
}

// The state of the union of two disjoint token sets (in any order: ties go to the lowest index).
ADJUST_HD RowState merge(const RowState& a, const RowState& b) {
  if (b.s == 0.f) return a;
  if (a.s == 0.f) return b;
  RowState o;
  o.m = fmaxf(a.m, b.m);
  const float da = a.m - o.m, db = b.m - o.m, ra = expf(da), rb = expf(db);
  o.s = ra * a.s + rb * b.s;
  o.t = ra * (a.t + da * a.s) + rb * (b.t + db * b.s);
  o.top1 = (a.m > b.m || (a.m == b.m && a.top1 < b.top1)) ? a.top1 : b.top1;
  o.top2 = fmaxf(fminf(a.m, b.m), fmaxf(a.top2, b.top2));
  // Field-wise selects, not a reference to a or b: that would push both states to GPU local memory.
  const bool ga = a.key > b.key || (a.key == b.key && a.tok < b.tok);
  o.key = ga ? a.key : b.key;
  o.tok = ga ? a.tok : b.tok;
  o.z_tok = ga ? a.z_tok : b.z_tok;
  o.x_tok = ga ? a.x_tok : b.x_tok;
  o.mr = fmaxf(a.mr, b.mr);
  o.sr = o.mr == -INFINITY ? 0.f : a.sr * expf(a.mr - o.mr) + b.sr * expf(b.mr - o.mr);
  return o;
}

struct Result {
  int64_t token;
  float score;
};

// Token and score of a finished row; a row with no candidate token gives (-1, NaN).
ADJUST_HD Result finalize(const RowState& st, Score score, bool sample) {
  if (st.s == 0.f) return {-1, NAN};
  const int64_t tok = sample ? st.tok : st.top1;
  const float p_tok = expf((sample ? st.z_tok : st.m) - st.m) / st.s;
  switch (score) {
    case Score::kEntropy:  // sum p log p = t / s - log s
      return {tok, st.t / st.s - logf(st.s)};
    case Score::kMargin:  // p(top1) = 1 / s
      return {tok, (1.f - expf(st.top2 - st.m)) / st.s};
    case Score::kLowConfidence:  // at T == 0 the untempered softmax is the tempered one
      return {tok, sample ? expf(st.x_tok - st.mr) / st.sr : p_tok};
    case Score::kConfidence:
    default:
      return {tok, p_tok};
  }
}

// Host-side argument checks shared by the CPU and CUDA entry points (defined in select_sample.cpp).
Score check_select_sample_args(const at::Tensor& logits, double temperature, c10::string_view score,
                               int64_t exclude_token);

}  // namespace adjust
