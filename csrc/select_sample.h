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
#include <cstring>

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

struct Opts {
  bool sample;      // T > 0: Gumbel-max sample instead of argmax
  bool raw;         // also track logsumexp of untempered logits (low_confidence at T > 0)
  uint64_t seed;    // Philox key
  uint64_t offset;  // Philox counter words 2 and 3
};

// First output word of Philox4x32-10 (Salmon et al. 2011) for a 64-bit key and counters c0..c3:
// bit-equal to Triton's tl.philox and to adjust_kernels._triton_utils.philox_uint32, so the package's
// Triton and C++/CUDA sampling ops share one definition of their noise.
ADJUST_HD uint32_t philox_uint32(uint64_t key, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t pa = 0xD2511F53ULL * c0, pb = 0xCD9E8D57ULL * c2;
    c0 = static_cast<uint32_t>(pb >> 32) ^ c1 ^ k0;
    c1 = static_cast<uint32_t>(pb);
    c2 = static_cast<uint32_t>(pa >> 32) ^ c3 ^ k1;
    c3 = static_cast<uint32_t>(pa);
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// Philox word of the noise of (row, token) in stream (seed, offset): counters (token, row, offset low,
// offset high), key seed (adjust_kernels._triton_utils.gumbel_noise).
ADJUST_HD uint32_t noise_bits(const Opts& o, uint32_t row, uint32_t token) {
  return philox_uint32(o.seed, token, row, static_cast<uint32_t>(o.offset), static_cast<uint32_t>(o.offset >> 32));
}

// Gumbel(0, 1) noise from a Philox word: u = (top 23 bits + 0.5) * 2^-23 is exact in fp32 and strictly
// inside (0, 1), so G = -log(-log u) is finite and G <= -log(-log(1 - 2^-24)) ~ 16.6.
ADJUST_HD float gumbel_from_bits(uint32_t bits) {
  const float u = (static_cast<float>(bits >> 9) + 0.5f) * 0x1p-23f;
  return -logf(-logf(u));
}

// An upper bound on gumbel_from_bits(): a token with z + kGumbelMax below the best key so far cannot
// win, so its noise is not drawn. This is exact (same result as drawing it) and skips most of a peaked vocabulary.
constexpr float kGumbelMax = 17.0f;

// An upper bound on gumbel_from_bits(bits) from integer work only, so that a flat vocabulary (where
// kGumbelMax skips nothing) takes the two logs only for the few tokens that could still win. With
// r = 2^23 - 1 - (bits >> 9), 1 - u = (r + 0.5) 2^-23 and -log u >= 1 - u, so
// G <= -log(1 - u) <= (23 - floor(log2 r)) ln 2 (24 ln 2 at r = 0); the 1e-3 covers fp32 rounding of G.
ADJUST_HD float gumbel_bound(uint32_t bits) {
  const float r = static_cast<float>(0x7FFFFFu - (bits >> 9));  // exact: below 2^23
  // floor(log2 r) is the exponent of r (-127 at r = 0, raised to -1); branch-free, so loops vectorise
#ifdef __CUDA_ARCH__
  const uint32_t word = __float_as_uint(r);
#else
  uint32_t word;
  std::memcpy(&word, &r, sizeof(word));
#endif
  const int top = static_cast<int>(word >> 23) - 127;
  return static_cast<float>(23 - (top > -1 ? top : -1)) * 0.6931472f + 1e-3f;
}

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

// Adds token v's softmax terms (untempered logit x, tempered z > -inf) to the state.
ADJUST_HD void push_softmax(RowState& st, float x, float z, int64_t v, const Opts& o) {
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
}

// Offers token v's Gumbel key z + G (G from the Philox word `bits`) to the sample (T > 0).
ADJUST_HD void push_key(RowState& st, float x, float z, int64_t v, uint32_t bits) {
  if (z + gumbel_bound(bits) < st.key) return;  // cannot win: the logs are not needed
  const float k = z + gumbel_from_bits(bits);
  if (k > st.key) {
    st.key = k;
    st.tok = v;
    st.z_tok = z;
    st.x_tok = x;
  }
}

// Adds token v of row `row` (untempered logit x, tempered z > -inf) to the state.
ADJUST_HD void push(RowState& st, float x, float z, int64_t v, int64_t row, const Opts& o) {
  push_softmax(st, x, z, v, o);
  if (o.sample && z + kGumbelMax >= st.key)
    push_key(st, x, z, v, noise_bits(o, static_cast<uint32_t>(row), static_cast<uint32_t>(v)));
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
