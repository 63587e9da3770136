// CPU kernel of adjust_kernels::select_sample (math in select_sample.h).
//
// Work is split into (row, vocabulary tile) items of a fixed size, run with at::parallel_for (OpenMP
// when built with -fopenmp, serial otherwise); the per-tile states are then merged per row in tile
// order. The split does not depend on the thread count, so results are bit-identical for any
// torch.set_num_threads / OMP_NUM_THREADS.
//
// Within a tile the vocabulary is read in chunks of kLanes tokens, so the per-token work runs in
// vector registers (loops compiled for AVX-512 / AVX2 / baseline x86-64, the best chosen at load
// time): the softmax sums with a branch-free exp (exp_nonpositive), the top-2 and maxima in fixed
// orders. At T > 0, a chunk whose largest z can still win (z + kGumbelMax >= best key) gets its 16
// Philox words at once, and only the tokens whose integer bound gumbel_bound() can still win take the
// two logs; both filters are exact. Tokens are those of the scalar push() loop bit for bit (same z,
// same noise, same order of key updates); the sums, hence the scores, differ from it by fp32 rounding.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "select_sample.h"

namespace adjust {

Score check_select_sample_args(const at::Tensor& logits, double temperature, c10::string_view score,
                               int64_t exclude_token) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "select_sample: logits must be 2-D [N, V], got ", logits.dim(), "-D");
  const auto dtype = logits.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "select_sample: logits must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK_VALUE(logits.is_contiguous(), "select_sample: logits must be contiguous");
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature >= 0,
                    "select_sample: temperature must be finite and >= 0, got ", temperature);
  TORCH_CHECK_VALUE(exclude_token >= -1 && exclude_token < logits.size(1),
                    "select_sample: exclude_token must be -1 or in [0, V), got ", exclude_token);
  if (score == "entropy") return Score::kEntropy;
  if (score == "confidence") return Score::kConfidence;
  if (score == "margin") return Score::kMargin;
  if (score == "low_confidence") return Score::kLowConfidence;
  TORCH_CHECK_VALUE(false, "select_sample: unknown score '", score,
                    "' (expected entropy, confidence, margin or low_confidence)");
}

namespace {

constexpr int64_t kTile = 4096;             // tokens per work item: fits in L1, fixed for determinism
constexpr int64_t kParallelGrain = 32768;   // tokens below which threading costs more than it saves
constexpr int kLanes = 16;                  // tokens per chunk: one AVX-512 register of 32-bit words

// Philox words of tokens token0 .. token0 + kLanes - 1 of one row: philox_uint32 on kLanes counters at
// once. Philox's 32x32 -> 64-bit products map onto vpmuludq (even 32-bit lanes; the odd ones shifted
// down), so an AVX-512 round is a few instructions for all 16 lanes; the scalar chain is the fallback.
void noise_bits_scalar(const Opts& o, uint32_t row, uint32_t token0, uint32_t* out) {
  for (int j = 0; j < kLanes; ++j) out[j] = noise_bits(o, row, token0 + static_cast<uint32_t>(j));
}

#if defined(__x86_64__) && defined(__GNUC__)
// hi and lo 32-bit halves of m * c in every 32-bit lane of c (m: the multiplier in each 64-bit lane).
__attribute__((target("avx512f"))) inline void mul_hi_lo(__m512i c, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(c, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

__attribute__((target("avx2"))) inline void mul_hi_lo(__m256i c, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(c, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

__attribute__((target("avx512f"))) void noise_bits_avx512(const Opts& o, uint32_t row, uint32_t token0,
                                                          uint32_t* out) {
  static_assert(kLanes == 16, "one zmm register of counters");
  __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(token0)),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  __m512i c1 = _mm512_set1_epi32(static_cast<int>(row));
  __m512i c2 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(o.offset)));
  __m512i c3 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(o.offset >> 32)));
  const __m512i ma = _mm512_set1_epi64(0xD2511F53LL), mb = _mm512_set1_epi64(0xCD9E8D57LL);
  uint32_t k0 = static_cast<uint32_t>(o.seed), k1 = static_cast<uint32_t>(o.seed >> 32);
  for (int round = 0; round < 10; ++round) {
    __m512i hi_a, lo_a, hi_b, lo_b;
    mul_hi_lo(c0, ma, hi_a, lo_a);
    mul_hi_lo(c2, mb, hi_b, lo_b);
    c0 = _mm512_xor_si512(_mm512_xor_si512(hi_b, c1), _mm512_set1_epi32(static_cast<int>(k0)));
    c1 = lo_b;
    c2 = _mm512_xor_si512(_mm512_xor_si512(hi_a, c3), _mm512_set1_epi32(static_cast<int>(k1)));
    c3 = lo_a;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  _mm512_storeu_si512(out, c0);
}

// The AVX-512 body at half width, written twice on purpose: GCC vector extensions give one source
// for every ISA, but there GCC multiplies the 64-bit lanes in full (3 vpmuludq each), measured 2.3x
// slower (5.1 vs 2.2 ns per token).
__attribute__((target("avx2"))) void noise_bits_avx2(const Opts& o, uint32_t row, uint32_t token0, uint32_t* out) {
  for (int half = 0; half < kLanes; half += 8) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(token0 + half)),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i c1 = _mm256_set1_epi32(static_cast<int>(row));
    __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(o.offset)));
    __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(o.offset >> 32)));
    const __m256i ma = _mm256_set1_epi64x(0xD2511F53LL), mb = _mm256_set1_epi64x(0xCD9E8D57LL);
    uint32_t k0 = static_cast<uint32_t>(o.seed), k1 = static_cast<uint32_t>(o.seed >> 32);
    for (int round = 0; round < 10; ++round) {
      __m256i hi_a, lo_a, hi_b, lo_b;
      mul_hi_lo(c0, ma, hi_a, lo_a);
      mul_hi_lo(c2, mb, hi_b, lo_b);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      c1 = lo_b;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c3 = lo_a;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + half), c0);
  }
}

using NoiseLanes = void (*)(const Opts&, uint32_t, uint32_t, uint32_t*);

// The widest version this CPU runs, chosen once.
NoiseLanes noise_bits_lanes_impl() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return noise_bits_avx512;
  if (__builtin_cpu_supports("avx2")) return noise_bits_avx2;
  return noise_bits_scalar;
}

void noise_bits_lanes(const Opts& o, uint32_t row, uint32_t token0, uint32_t* out) {
  static const NoiseLanes impl = noise_bits_lanes_impl();
  impl(o, row, token0, out);
}
#else
void noise_bits_lanes(const Opts& o, uint32_t row, uint32_t token0, uint32_t* out) {
  noise_bits_scalar(o, row, token0, out);
}
#endif

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define ADJUST_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ADJUST_ISA_CLONES
#endif

// e^d for d <= 0 within a few ulp of expf (0 below -87.3, where e^d is below the smallest normal):
// d = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so n ln2 is exact), a degree-7 Taylor polynomial
// for e^r (error < 1e-8 relative), and 2^n from the exponent bits. Branch-free, so that the chunk
// loop below vectorises; expf calls would not.
inline float exp_nonpositive(float d) {
  d = d < -87.3f ? -87.3f : d;
  const float n = (d * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest (1.5 * 2^23)
  const float r = (d - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// zs = xs / temp (T > 0) or xs; a token whose z is -inf is left out of xs too (its untempered logit
// is not in low_confidence's logsumexp either).
ADJUST_ISA_CLONES void temper(float* xs, float temp, bool sample, float* zs) {
  for (int j = 0; j < kLanes; ++j) {
    zs[j] = sample ? xs[j] / temp : xs[j];
    xs[j] = zs[j] == -INFINITY ? -INFINITY : xs[j];
  }
}

// Bit j set where token j of a chunk could still beat `key` (z + gumbel_bound >= key; the key only
// grows, so testing against its value before the chunk is exact). Left-out tokens (z = -inf) never can.
ADJUST_ISA_CLONES uint32_t could_win(const float* zs, const uint32_t* bits, float key) {
  uint32_t mask = 0;
  for (int j = 0; j < kLanes; ++j)
    mask |= static_cast<uint32_t>(zs[j] > -INFINITY && zs[j] + gumbel_bound(bits[j]) >= key) << j;
  return mask;
}

// e[j] = e^(v[j] - m) and ed[j] = e[j] (v[j] - m) for the kLanes values of a chunk (v[j] <= m), 0 where
// v[j] = -inf (left out). Elementwise only: the sums are taken after, in a fixed order.
ADJUST_ISA_CLONES void exp_terms(const float* v, float m, float* e, float* ed) {
  for (int j = 0; j < kLanes; ++j) {
    const float d = v[j] - m, x = exp_nonpositive(d);
    const bool in = v[j] != -INFINITY;
    e[j] = in ? x : 0.f;
    ed[j] = in ? x * d : 0.f;
  }
}

// Largest and sum of the kLanes values of a chunk, in four interleaved chains (a fixed order, so
// the result does not depend on the ISA; one chain would serialise on the add / max latency).
inline float max_lanes(const float* v) {
  float m[4] = {v[0], v[1], v[2], v[3]};
  for (int j = 4; j < kLanes; ++j) m[j % 4] = v[j] > m[j % 4] ? v[j] : m[j % 4];
  const float a = m[0] > m[1] ? m[0] : m[1], b = m[2] > m[3] ? m[2] : m[3];
  return a > b ? a : b;
}

inline float sum_lanes(const float* v) {
  float s[4] = {v[0], v[1], v[2], v[3]};
  for (int j = 4; j < kLanes; ++j) s[j % 4] += v[j];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Adds the softmax terms of one chunk of tempered logits zs (kLanes values, -inf = left out, tokens
// c .. c + kLanes - 1) whose largest value zmax is finite: the online update of push_softmax(), a
// chunk at a time (rescale once to the new max, then the chunk's sums).
void push_softmax_chunk(RowState& st, const float* zs, float zmax, int64_t c) {
  int j1 = 0;
  while (zs[j1] != zmax) ++j1;  // the first (lowest-index) maximum
  float others[kLanes];
  for (int j = 0; j < kLanes; ++j) others[j] = j == j1 ? -INFINITY : zs[j];
  const float second = max_lanes(others);
  if (zmax > st.m) {
    if (st.s > 0.f) {  // rescale the sums to the new max; t is kept relative to m to avoid cancellation
      const float d = st.m - zmax, r = expf(d);
      st.t = r * (st.t + d * st.s);
      st.s *= r;
    }
    st.top2 = fmaxf(st.m, second);
    st.m = zmax;
    st.top1 = c + j1;
  } else {
    st.top2 = fmaxf(st.top2, zmax);
  }
  float e[kLanes], ed[kLanes];
  exp_terms(zs, st.m, e, ed);
  st.s += sum_lanes(e);
  st.t += sum_lanes(ed);
}

// The same for the logsumexp of the untempered logits xs (low_confidence at T > 0).
void push_lse_chunk(RowState& st, const float* xs) {
  const float xmax = max_lanes(xs);
  if (xmax == -INFINITY) return;
  if (xmax > st.mr) {
    st.sr *= expf(st.mr - xmax);  // 0 * e^-inf: sr starts at 0 and mr at -inf
    st.mr = xmax;
  }
  float e[kLanes], ed[kLanes];
  exp_terms(xs, st.mr, e, ed);
  st.sr += sum_lanes(e);
}

// The state of tokens [v0, v1) of one row, a chunk of kLanes tokens at a time.
template <typename scalar_t>
RowState tile_state(const scalar_t* x_row, int64_t row, int64_t v0, int64_t v1, float temp, int64_t exclude_token,
                    const Opts& o) {
  RowState st = empty_state();
  float xs[kLanes], zs[kLanes];
  uint32_t bits[kLanes];
  for (int64_t c = v0; c < v1; c += kLanes) {
    const int n = static_cast<int>(std::min<int64_t>(kLanes, v1 - c));
    for (int j = 0; j < n; ++j) xs[j] = static_cast<float>(x_row[c + j]);
    for (int j = n; j < kLanes; ++j) xs[j] = -INFINITY;
    if (exclude_token >= c && exclude_token < c + n) xs[exclude_token - c] = -INFINITY;
    temper(xs, temp, o.sample, zs);
    const float zmax = max_lanes(zs);
    if (!(zmax > -INFINITY)) continue;  // nothing to add (NaN logits are refused before the op)
    push_softmax_chunk(st, zs, zmax, c);
    if (o.raw) push_lse_chunk(st, xs);
    if (!o.sample || zmax + kGumbelMax < st.key) continue;
    noise_bits_lanes(o, static_cast<uint32_t>(row), static_cast<uint32_t>(c), bits);
    for (uint32_t could = could_win(zs, bits, st.key); could; could &= could - 1) {
      const int j = __builtin_ctz(could);  // ascending, as push() would visit them
      push_key(st, xs[j], zs[j], c + j, bits[j]);
    }
  }
  return st;
}

std::tuple<at::Tensor, at::Tensor> select_sample_cpu(const at::Tensor& logits, double temperature,
                                                     c10::string_view score, int64_t seed, int64_t offset,
                                                     int64_t exclude_token) {
  const Score kind = check_select_sample_args(logits, temperature, score, exclude_token);
  const int64_t n = logits.size(0), vocab = logits.size(1);
  at::Tensor tokens = at::empty({n}, logits.options().dtype(at::kLong));
  at::Tensor scores = at::empty({n}, logits.options().dtype(at::kFloat));
  const bool sample = temperature > 0;
  const Opts opts{sample, sample && kind == Score::kLowConfidence, static_cast<uint64_t>(seed),
                  static_cast<uint64_t>(offset)};
  const float temp = static_cast<float>(temperature);
  const int64_t tiles = std::max<int64_t>(1, (vocab + kTile - 1) / kTile);
  std::vector<RowState> part(n * tiles);

  ADJUST_DISPATCH_LOGITS(logits.scalar_type(), "select_sample_cpu", [&] {
    const scalar_t* base = logits.const_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, std::min(vocab, kTile)));
    at::parallel_for(0, n * tiles, grain, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row = item / tiles, v0 = (item % tiles) * kTile, v1 = std::min(vocab, v0 + kTile);
        part[item] = tile_state(base + row * vocab, row, v0, v1, temp, exclude_token, opts);
      }
    });
  });

  int64_t* tok_out = tokens.data_ptr<int64_t>();
  float* score_out = scores.data_ptr<float>();
  at::parallel_for(0, n, std::max<int64_t>(1, kParallelGrain / tiles), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      RowState st = part[row * tiles];
      for (int64_t j = 1; j < tiles; ++j) st = merge(st, part[row * tiles + j]);
      const Result res = finalize(st, kind, sample);
      tok_out[row] = res.token;
      score_out[row] = res.score;
    }
  });
  return {tokens, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(adjust_kernels, CPU, m) { m.impl("select_sample", &select_sample_cpu); }

}  // namespace adjust
